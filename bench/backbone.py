"""2D U-Net whose encoder and decoder are separate modules.

Built from MONAI's U-Net blocks (``TwoConv``, ``Down``, ``UpCat``) so that
pretraining methods can train the encoder alone (most methods) or the encoder
and decoder (GCL's local loss, PGL's dense term) and fine-tuning can load
either part into the segmentation network.

Defaults: widths 16, 32, 64, 128, 128, 128 at 192 x 192 are the U-Net of
Chaitanya et al. (NeurIPS 2020) used for ACDC; instance normalisation because
batch statistics do not average meaningfully across clients under FedAvg
(Zeng et al., MICCAI 2021 also use instance norm); LeakyReLU(0.1) as MONAI's
BasicUNet. Instance normalisation runs by default as the identical
``GroupNorm(C, C)`` (``model.norm_kernel: group``), whose CPU kernel is faster
than ``InstanceNorm2d``'s (docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

DEFAULT_WIDTHS = (16, 32, 64, 128, 128, 128)
ACTIVATION = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
NORMS = {
    "instance": ("instance", {"affine": True}),
    "batch": ("batch", {}),
    "group": ("group", {"num_groups": 8}),
}


def _norm(name: str):
    if name not in NORMS:
        raise ValueError(
            f"model.norm: unknown normalisation {name!r}; expected one of {sorted(NORMS)}"
        )
    return NORMS[name]


class Encoder(nn.Module):
    """Returns the feature map of every level, finest first, bottleneck last."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str):
        super().__init__()
        self.widths = tuple(widths)
        self.stem = TwoConv(2, in_channels, widths[0], ACTIVATION, _norm(norm), True)
        self.downs = nn.ModuleList(
            Down(2, widths[i], widths[i + 1], ACTIVATION, _norm(norm), True)
            for i in range(len(widths) - 1)
        )

    @property
    def out_dim(self) -> int:
        return self.widths[-1]

    @property
    def downsampling(self) -> int:
        """Factor by which the input side must be divisible."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled bottleneck features, shape (B, widths[-1])."""
        return self.forward(x)[-1].mean(dim=(2, 3))


class Decoder(nn.Module):
    """Upsamples from the bottleneck to a ``widths[0]``-channel map at input size.

    ``widths``: the output channels of each level (the last: the bottleneck's);
    ``skip_widths``: the encoder's feature maps' channels, when they differ (timm encoders).
    """

    def __init__(self, widths: Sequence[int], norm: str, skip_widths: Sequence[int] | None = None):
        super().__init__()
        self.widths = tuple(widths)
        skips = tuple(skip_widths or widths)
        self.ups = nn.ModuleList(
            UpCat(
                2,
                widths[i],
                skips[i - 1],
                widths[i - 1],
                ACTIVATION,
                _norm(norm),
                True,
                halves=True,
            )
            for i in range(len(widths) - 1, 0, -1)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=False):
            x = up(x, skip)
        return x


class UNet2D(nn.Module):
    """Encoder + decoder + 1x1 segmentation head."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        norm: str = "instance",
        encoder: str = "unet",
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"model.widths: need at least 2 levels, got {list(widths)}")
        if encoder == "unet":
            self.encoder = Encoder(in_channels, widths, norm)
            self.decoder = Decoder(widths, norm)
        else:
            from bench.timm_encoder import TimmEncoder, timm_name

            name = timm_name(encoder)
            if name is None or in_channels != 1:
                raise ValueError(
                    f"model.encoder={encoder!r}; expected 'unet' or 'timm/<name>' (1 channel)"
                )
            self.encoder = TimmEncoder(name, norm)
            # Each decoder level has its skip's channels; the input-image levels widths[0].
            skips = self.encoder.widths
            levels = [
                widths[0] if i < self.encoder.image_levels else c for i, c in enumerate(skips)
            ]
            self.decoder = Decoder((widths[0], *levels[1:]), norm, skip_widths=skips)
        self.head = nn.Conv2d(self.decoder.widths[0], out_channels, kernel_size=1)

    @property
    def downsampling(self) -> int:
        """Factor by which the input side must be divisible."""
        return self.encoder.downsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))


def build_unet(model_cfg: dict, out_channels: int) -> UNet2D:
    model = UNet2D(
        in_channels=1,
        out_channels=out_channels,
        widths=tuple(model_cfg["widths"]),
        norm=model_cfg["norm"],
        encoder=model_cfg.get("encoder", "unet"),
    )
    if model_cfg.get("norm_kernel", "native") == "group":
        instance_to_group_norm(model)
    return model


def instance_to_group_norm(module: nn.Module) -> int:
    """Replaces every affine ``InstanceNorm2d`` without running stats by ``GroupNorm(C, C)``.

    The two compute the same function (per-sample, per-channel statistics,
    per-channel affine) and have the same parameters (``weight``, ``bias``),
    so state dicts load either way. Returns the number of modules replaced.
    """
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.InstanceNorm2d) and child.affine and not child.track_running_stats:
            group = nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=True)
            with torch.no_grad():
                group.weight.copy_(child.weight)
                group.bias.copy_(child.bias)
            group.to(device=child.weight.device, dtype=child.weight.dtype)
            setattr(module, name, group)
            replaced += 1
        else:
            replaced += instance_to_group_norm(child)
    return replaced
