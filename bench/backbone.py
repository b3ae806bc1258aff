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

The encoder and the slice embedding the pretraining heads read are in ``bench.encoder``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets.basic_unet import UpCat
from torch import nn

from bench.encoder import ACTIVATION, DEFAULT_EMBED_GRID, DEFAULT_WIDTHS, Encoder, norm_spec


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
                norm_spec(norm),
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
        embed_grid: int = DEFAULT_EMBED_GRID,
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"model.widths: need at least 2 levels, got {list(widths)}")
        if encoder == "unet":
            self.encoder = Encoder(in_channels, widths, norm, embed_grid)
            self.decoder = Decoder(widths, norm)
        else:
            from bench.timm_encoder import TimmEncoder, timm_name

            name = timm_name(encoder)
            if name is None or in_channels != 1:
                raise ValueError(
                    f"model.encoder={encoder!r}; expected 'unet' or 'timm/<name>' (1 channel)"
                )
            self.encoder = TimmEncoder(name, norm, embed_grid)
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
        # Run folders written before the option existed pooled globally.
        embed_grid=model_cfg.get("embed_grid", 1),
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
