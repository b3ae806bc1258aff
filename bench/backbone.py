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

The slice embedding that every pretraining head reads (``Encoder.embed``) is
the bottleneck map average-pooled to a ``embed_grid`` x ``embed_grid`` grid and
flattened, not the global average: instance normalisation fixes each channel's
spatial mean and variance for every slice, so a global average keeps only
higher-order statistics and is nearly the same vector for every slice (mean
pairwise cosine 0.998 at initialisation on real ACDC and on the phantoms);
heads without batch norm then start, and stay, at the uniform loss
(docs/PROTOCOL.md, "Why the partition-aware losses did not learn").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

DEFAULT_WIDTHS = (16, 32, 64, 128, 128, 128)
# The default U-Net's bottleneck at 192 px is 6 x 6: there the embedding is the flattened map,
# as g1's input in Chaitanya et al. 2020.
DEFAULT_EMBED_GRID = 6
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


def pool_embedding(bottleneck: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C * grid * grid): average-pooled to a grid (an identity at h = w =
    grid), flattened channel-major."""
    return F.adaptive_avg_pool2d(bottleneck, grid).flatten(1)


class Encoder(nn.Module):
    """Returns the feature map of every level, finest first, bottleneck last."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        norm: str,
        embed_grid: int = DEFAULT_EMBED_GRID,
    ):
        super().__init__()
        if embed_grid < 1:
            raise ValueError(f"model.embed_grid: {embed_grid} must be at least 1")
        self.widths = tuple(widths)
        self.embed_grid = embed_grid
        self.stem = TwoConv(2, in_channels, widths[0], ACTIVATION, _norm(norm), True)
        self.downs = nn.ModuleList(
            Down(2, widths[i], widths[i + 1], ACTIVATION, _norm(norm), True)
            for i in range(len(widths) - 1)
        )

    @property
    def out_dim(self) -> int:
        """Size of ``embed``'s vectors: bottleneck channels x grid cells."""
        return self.widths[-1] * self.embed_grid**2

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
        """The bottleneck map average-pooled to ``embed_grid`` x ``embed_grid`` and flattened,
        shape (B, out_dim); ``embed_grid`` 1 is the global average (see the module's note)."""
        return pool_embedding(self.forward(x)[-1], self.embed_grid)


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
