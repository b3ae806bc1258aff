"""Rotation prediction (Gidaris et al., ICLR 2018), trained with FedAvg (FedRotation in Wu et al.
2021)."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from bench.augment import random_rotation90, random_view
from bench.methods.base import PretrainMethod
from bench.registry import register_method


@register_method
class FedRotation(PretrainMethod):
    name = "fedrotation"
    summary = (
        "Rotation prediction: classify each slice's rotation (0/90/180/270 deg) from its embedding"
    )
    defaults: ClassVar[dict] = {"hidden_dim": 256, "augment": True}
    sources: ClassVar[dict] = {
        "hidden_dim": "choice: 256-unit MLP classifier on the pooled bottleneck (0: linear); "
        "Gidaris et al. classify with further conv layers, a non-linear head keeps the "
        "transferred encoder less pretext-specific",
        "augment": "choice: True, crop/flip/intensity view (small rotations only, up to 15 deg) "
        "before the 90-degree turn, so the task cannot be solved from border artefacts alone",
    }
    shared_doc = "encoder and rotation classifier"
    local_doc = "optimiser state"

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hidden, dim = self.hparams["hidden_dim"], unet.encoder.out_dim
        if hidden:
            self.classifier = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 4))
        else:
            self.classifier = nn.Linear(dim, 4)
        self.criterion = nn.CrossEntropyLoss()

    def rotated(self, images, generator):
        """The rotated inputs and their labels k (rotation by k * 90 degrees)."""
        if self.hparams["augment"]:
            images, _ = random_view(images, generator)
        return random_rotation90(images, generator)

    def training_step(self, batch, generator):
        images, labels = self.rotated(batch["image"], generator)
        logits = self.classifier(self.unet.encoder.embed(images))
        loss = self.criterion(logits.float(), labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}
