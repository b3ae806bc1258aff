"""VICReg (Bardes et al., ICLR 2022), trained with FedAvg."""

from __future__ import annotations

from typing import ClassVar

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from bench.methods._views_and_losses import float32_loss, two_views
from bench.methods.base import PretrainMethod
from bench.registry import register_method


@register_method
class VICReg(PretrainMethod):
    name = "vicreg"
    summary = "VICReg: invariance + variance + covariance terms on two views' projections (lightly)"
    defaults: ClassVar[dict] = {
        "lambda_param": 25.0,
        "mu_param": 25.0,
        "nu_param": 1.0,
        "hidden_dim": 512,
        "projection_dim": 512,
    }
    sources: ClassVar[dict] = {
        "lambda_param": "25, VICReg paper (invariance weight)",
        "mu_param": "25, VICReg paper (variance weight)",
        "nu_param": "1, VICReg paper (covariance weight)",
        "hidden_dim": "choice: 512, the paper's 3-layer 8192-wide expander scaled to the U-Net "
        "encoder (4x its 128-d output)",
        "projection_dim": "choice: 512, as hidden_dim (the paper keeps expander widths equal)",
    }
    shared_doc = "encoder and expander (BatchNorm running statistics included)"
    local_doc = "BatchNorm step counters, optimiser state"

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        self.projection = VICRegProjectionHead(
            unet.encoder.out_dim, hp["hidden_dim"], hp["projection_dim"], num_layers=3
        )
        self.criterion = VICRegLoss(
            lambda_param=hp["lambda_param"], mu_param=hp["mu_param"], nu_param=hp["nu_param"]
        )

    def training_step(self, batch, generator):
        view_a, view_b = two_views(batch["image"], generator)
        z_a = self.projection(self.unet.encoder.embed(view_a))
        z_b = self.projection(self.unet.encoder.embed(view_b))
        return {"loss": float32_loss(self.criterion, z_a, z_b)}
