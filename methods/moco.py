"""MoCo v2 (Chen et al. 2020, arXiv:2003.04297), trained with FedAvg (FedMoCo).

The query encoder and its projection head are averaged; the momentum encoder,
its head and the queue of negatives stay on the client.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead

from bench.methods._momentum import MomentumMethod
from bench.methods._views_and_losses import float32_loss, two_views
from bench.registry import register_method


@register_method
class MoCo(MomentumMethod):
    name = "moco"
    summary = "MoCo v2: InfoNCE of query vs momentum-encoder key against a local queue (lightly)"
    defaults: ClassVar[dict] = {
        "temperature": 0.2,
        "queue_size": 256,
        "momentum": 0.99,
        "momentum_end": 0.99,
        "hidden_dim": 512,
        "projection_dim": 128,
    }
    sources: ClassVar[dict] = {
        "temperature": "0.2, MoCo v2 (Chen et al. 2020)",
        "queue_size": "choice: 256 keys (8 batches of 32 slices); MoCo's 65536 is ~5% of ImageNet, "
        "a client holds a few hundred (ED/ES) to a few thousand (cine) slices, so a larger queue "
        "would hold stale copies of the same slices",
        "momentum": "choice: 0.99, within MoCo v1's ablation (0.99-0.9999 all work); 0.999 suits "
        "ImageNet-length runs, here clients take a few hundred to a few thousand steps",
        "momentum_end": "0.99 = constant momentum as in MoCo; set above `momentum` for lightly's "
        "cosine schedule over rounds (BYOL-style)",
        "hidden_dim": "choice: 512, MoCo v2's 2-layer MLP (2048 for ResNet-50) scaled to the U-Net "
        "encoder, as simclr",
        "projection_dim": "128, MoCo v2",
    }
    # NTXentLoss keeps its queue in `memory_bank.bank` / `memory_bank.bank_ptr`.
    local_state_prefixes = ("momentum_encoder.", "momentum_projection.", "criterion.memory_bank.")
    shared_doc = "query encoder and its projection head"
    local_doc = (
        "momentum encoder and its head (EMA of the query networks), queue of negatives, "
        "optimiser state"
    )

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        self.projection = MoCoProjectionHead(
            unet.encoder.out_dim, hp["hidden_dim"], hp["projection_dim"]
        )
        # The key encoder and its head: an EMA of the query networks (MoCo).
        self.add_momentum_targets(
            momentum_encoder=unet.encoder, momentum_projection=self.projection
        )
        self.criterion = NTXentLoss(
            temperature=hp["temperature"], memory_bank_size=(hp["queue_size"], hp["projection_dim"])
        )
        # lightly registers the queue as non-persistent buffers; the client's saved state
        # (its state_dict) must carry it from round to round.
        bank = self.criterion.memory_bank
        bank.register_buffer("bank", bank.bank, persistent=True)
        bank.register_buffer("bank_ptr", bank.bank_ptr, persistent=True)

    def training_step(self, batch, generator):
        view_q, view_k = two_views(batch["image"], generator)
        query = self.projection(self.unet.encoder.embed(view_q))
        with torch.no_grad():
            key = self.momentum_projection(self.momentum_encoder.embed(view_k))
        # Keys are compared with the queue, then enqueued (lightly's memory bank).
        return {"loss": float32_loss(self.criterion, query, key)}
