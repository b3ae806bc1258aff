"""BYOL (Grill et al., NeurIPS 2020), trained with FedAvg (FedBYOL).

The online network (encoder, projector, predictor) is averaged; by default the
target network (an EMA of the online encoder and projector) stays on the
client, as in FedU / FedEMA (Zhuang et al. 2021, 2022).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from bench.methods._momentum import MomentumMethod
from bench.methods._views_and_losses import float32_loss, two_views
from bench.methods.base import is_counter
from bench.registry import register_method


@register_method
class BYOL(MomentumMethod):
    name = "byol"
    summary = "BYOL: online predictor regresses an EMA target network's projection (lightly)"
    defaults: ClassVar[dict] = {
        "momentum": 0.99,
        "momentum_end": 1.0,
        "hidden_dim": 512,
        "projection_dim": 128,
        "share_target": False,
    }
    sources: ClassVar[dict] = {
        "momentum": "choice: 0.99 start of the cosine EMA schedule (BYOL: 0.996 for 1000 ImageNet "
        "epochs; runs here are a few hundred to a few thousand steps, lightly's short-run value)",
        "momentum_end": "1.0, BYOL's cosine schedule to 1 "
        "(lightly.utils.scheduler.cosine_schedule, "
        "stepped per round)",
        "hidden_dim": "choice: 512, BYOL's MLP (4096 for ResNet-50) scaled to the U-Net encoder",
        "projection_dim": "choice: 128, BYOL uses 256; 128 as the other heads here",
        "share_target": "False: target network stays on the client, as FedU/FedEMA (Zhuang et al. "
        "ICCV 2021, ICLR 2022) who share the online network; True also averages the target",
    }
    local_state_prefixes = ("target_encoder.", "target_projection.")
    shared_doc = "online encoder, projector and predictor (and the target network if share_target)"
    local_doc = (
        "target encoder and projector (EMA of the online ones), BatchNorm step counters, "
        "optimiser state"
    )

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        dim = hp["projection_dim"]
        self.projection = BYOLProjectionHead(unet.encoder.out_dim, hp["hidden_dim"], dim)
        self.prediction = BYOLPredictionHead(dim, hp["hidden_dim"], dim)
        # The target network: an EMA of the online encoder and projector (BYOL).
        self.add_momentum_targets(target_encoder=unet.encoder, target_projection=self.projection)
        self.criterion = NegativeCosineSimilarity()

    def is_shared(self, key):
        if is_counter(key):
            return False
        return self.hparams["share_target"] or super().is_shared(key)

    def online(self, images):
        return self.prediction(self.projection(self.unet.encoder.embed(images)))

    @torch.no_grad()
    def target(self, images):
        return self.target_projection(self.target_encoder.embed(images))

    def training_step(self, batch, generator):
        view_a, view_b = two_views(batch["image"], generator)
        p_a, p_b = self.online(view_a), self.online(view_b)
        z_a, z_b = self.target(view_a), self.target(view_b)
        # Symmetrised loss (BYOL): each view's prediction regresses the other's target.
        loss = 0.5 * (
            float32_loss(self.criterion, p_a, z_b) + float32_loss(self.criterion, p_b, z_a)
        )
        return {"loss": loss}
