"""SimCLR (Chen et al., ICML 2020), trained with FedAvg (FedSimCLR in Wu et al. 2021)."""

from __future__ import annotations

from typing import ClassVar

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from bench.methods._views_and_losses import two_views
from bench.methods.base import PretrainMethod
from bench.registry import register_method


@register_method
class SimCLR(PretrainMethod):
    name = "simclr"
    summary = "SimCLR: NT-Xent between two augmented views of each slice (lightly's loss and head)"
    defaults: ClassVar[dict] = {"temperature": 0.1, "hidden_dim": 512, "projection_dim": 128}
    sources: ClassVar[dict[str, str]] = {
        "temperature": "0.1, Chaitanya et al. 2020 (G^R on ACDC); SimCLR's paper uses 0.1-0.5",
        "hidden_dim": "choice: 512, SimCLR's 2-layer MLP scaled to the small U-Net encoder",
        "projection_dim": "128, SimCLR and Chaitanya et al.",
    }
    shared_doc = "encoder and projection head"
    local_doc = "optimiser state"

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        self.projection = SimCLRProjectionHead(
            unet.encoder.out_dim, hp["hidden_dim"], hp["projection_dim"]
        )
        self.criterion = NTXentLoss(temperature=hp["temperature"])

    def training_step(self, batch, generator):
        images = batch["image"]
        view_a, view_b = two_views(images, generator)
        z_a = self.projection(self.unet.encoder.embed(view_a))
        z_b = self.projection(self.unet.encoder.embed(view_b))
        return {"loss": self.criterion(z_a, z_b)}
