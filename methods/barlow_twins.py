"""Barlow Twins (Zbontar et al., ICML 2021), trained with FedAvg."""

from __future__ import annotations

from typing import ClassVar

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from bench.methods._views_and_losses import float32_loss, two_views
from bench.methods.base import PretrainMethod
from bench.registry import register_method


@register_method
class BarlowTwins(PretrainMethod):
    name = "barlow_twins"
    summary = (
        "Barlow Twins: cross-correlation of two views' projections driven to identity (lightly)"
    )
    defaults: ClassVar[dict] = {"lambda_param": 5e-3, "hidden_dim": 512, "projection_dim": 512}
    sources: ClassVar[dict] = {
        "lambda_param": "5e-3, Barlow Twins paper (and lightly's default)",
        "hidden_dim": "choice: 512, the paper's 3-layer 8192-wide projector scaled to the U-Net "
        "encoder (4x its 128-d output)",
        "projection_dim": "choice: 512, as hidden_dim (the paper keeps projector widths equal)",
    }
    shared_doc = "encoder and projector (BatchNorm running statistics included)"
    local_doc = "BatchNorm step counters, optimiser state"

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        self.projection = BarlowTwinsProjectionHead(
            unet.encoder.out_dim, hp["hidden_dim"], hp["projection_dim"]
        )
        self.criterion = BarlowTwinsLoss(lambda_param=hp["lambda_param"])

    def training_step(self, batch, generator):
        view_a, view_b = two_views(batch["image"], generator)
        z_a = self.projection(self.unet.encoder.embed(view_a))
        z_b = self.projection(self.unet.encoder.embed(view_b))
        return {"loss": float32_loss(self.criterion, z_a, z_b)}
