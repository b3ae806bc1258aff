"""SwAV (Caron et al., NeurIPS 2020), trained with FedAvg (FedSwAV, a baseline of Wu et al.
2021)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

from bench.methods._views_and_losses import float32_loss, two_views
from bench.methods.base import PretrainMethod
from bench.registry import register_method


@register_method
class SwAV(PretrainMethod):
    name = "swav"
    summary = "SwAV: swapped prediction of Sinkhorn prototype codes between two views (lightly)"
    defaults: ClassVar[dict] = {
        "n_prototypes": 64,
        "temperature": 0.1,
        "sinkhorn_iterations": 3,
        "sinkhorn_epsilon": 0.05,
        "hidden_dim": 512,
        "projection_dim": 128,
    }
    sources: ClassVar[dict] = {
        "n_prototypes": "choice: 64; SwAV uses 3000 for ImageNet's 1000 classes; a client's "
        "slices hold a few anatomical modes and batches are 32 slices, so few prototypes",
        "temperature": "0.1, SwAV paper",
        "sinkhorn_iterations": "3, SwAV paper",
        "sinkhorn_epsilon": "0.05, SwAV paper",
        "hidden_dim": "choice: 512, SwAV's 2048-wide MLP scaled to the U-Net encoder",
        "projection_dim": "128, SwAV paper",
    }
    shared_doc = (
        "encoder, projection head and prototypes (all clients start from the same prototypes)"
    )
    local_doc = "BatchNorm step counters, optimiser state"

    # Two 2D views, no multi-crop, no feature queue and no prototype freezing in the
    # first steps: the paper's additions for ImageNet-scale runs.

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        self.projection = SwaVProjectionHead(
            unet.encoder.out_dim, hp["hidden_dim"], hp["projection_dim"]
        )
        self.prototypes = SwaVPrototypes(hp["projection_dim"], hp["n_prototypes"])
        self.criterion = SwaVLoss(
            temperature=hp["temperature"],
            sinkhorn_iterations=hp["sinkhorn_iterations"],
            sinkhorn_epsilon=hp["sinkhorn_epsilon"],
        )

    def scores(self, images):
        """Similarities of the L2-normalised projections to the prototypes."""
        z = F.normalize(self.projection(self.unet.encoder.embed(images)), dim=1)
        return self.prototypes(z)

    def training_step(self, batch, generator):
        # Prototypes live on the unit sphere (SwAV); FedAvg's averages are pulled back here.
        with torch.no_grad():
            self.prototypes.normalize()
        view_a, view_b = two_views(batch["image"], generator)
        scores = [self.scores(view_a), self.scores(view_b)]
        # lightly's SwaVLoss returns shape (1,); the contract wants a scalar.
        return {"loss": float32_loss(self.criterion, scores, []).reshape(())}
