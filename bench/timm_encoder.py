"""U-Net encoders from timm (``model.encoder: timm/<name>``, e.g. ``timm/resnet18``).

The timm model is built with ``features_only=True``, one input channel and no
downloaded weights (``pretrained=False``: pretraining is what the benchmark does).
Its feature maps (strides 2 or 4 up to 32) become the U-Net's skips; the strides
below timm's first one are filled with the input image itself, average-pooled, so
the decoder (MONAI's ``UpCat`` blocks, as the default U-Net's) ends at the input's
resolution without adding parameters to the encoder.

Normalisation under FedAvg (docs/DESIGN.md): batch norm's running statistics are
per-client data statistics, which FedAvg would average into statistics of no
client. By default (``model.norm: instance``) every BatchNorm of the timm model
is swapped for per-sample instance normalisation (``GroupNorm(C, C)``, the
default U-Net's normalisation, same affine parameters); ``model.norm: group``
swaps it for ``GroupNorm(8, C)``; ``model.norm: batch`` keeps timm's BatchNorm
(its running statistics are then averaged like every other state entry).
LayerNorm (ConvNeXt) has no statistics and is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.encoder import DEFAULT_EMBED_GRID, Encoder

PREFIX = "timm/"
# Architectures the tests cover; any timm model with features_only support may work.
TESTED = ("resnet18", "resnet34", "efficientnet_b0", "convnext_atto")


def timm_name(spec: str) -> str | None:
    """``"timm/resnet18"`` -> ``"resnet18"``; None for the default U-Net encoder."""
    return spec[len(PREFIX) :] if spec.startswith(PREFIX) else None


class TimmEncoder(Encoder):
    """A timm feature extractor as a U-Net encoder: ``forward(x)`` returns the skips finest
    first (the input at the strides timm skips, then timm's feature maps), the bottleneck
    last; ``embed``, ``out_dim`` and ``widths`` as the default ``Encoder``."""

    def __init__(self, name: str, norm: str, embed_grid: int = DEFAULT_EMBED_GRID):
        nn.Module.__init__(self)
        self.embed_grid = embed_grid
        import timm

        if not timm.is_model(name):
            raise ValueError(f"model.encoder: timm has no model {name!r}")
        self.name = name
        self.features = timm.create_model(name, features_only=True, in_chans=1, pretrained=False)
        reductions = list(self.features.feature_info.reduction())
        channels = list(self.features.feature_info.channels())
        if any(b != 2 * a for a, b in zip(reductions, reductions[1:], strict=False)):
            raise ValueError(
                f"model.encoder: timm/{name} has strides {reductions}; a U-Net decoder needs "
                "each feature map at half the previous one's resolution"
            )
        # Input-image skips at strides 1, 2, ... below timm's first feature map.
        self.image_strides = []
        stride = 1
        while stride < reductions[0]:
            self.image_strides.append(stride)
            stride *= 2
        self.widths = (1,) * len(self.image_strides) + tuple(channels)
        self.reduction = reductions[-1]
        if norm != "batch":
            swap_batch_norm(self.features, norm)

    @property
    def downsampling(self) -> int:
        return self.reduction

    @property
    def image_levels(self) -> int:
        """How many of the first feature maps are the (pooled) input image."""
        return len(self.image_strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = [x if s == 1 else F.avg_pool2d(x, s) for s in self.image_strides]
        return skips + list(self.features(x))


def swap_batch_norm(module: nn.Module, norm: str) -> int:
    """Replaces every BatchNorm2d (timm's BatchNormAct2d too, keeping its activation) by a
    GroupNorm: ``GroupNorm(C, C)`` for ``instance``, ``GroupNorm(8, C)`` for ``group``.
    Returns the number replaced."""
    from timm.layers import GroupNormAct

    replaced = 0
    for child_name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
            groups = channels if norm == "instance" else 8
            if channels % groups:
                raise ValueError(
                    f"model.norm=group: {channels} channels in {child_name} do not split into 8"
                )
            if hasattr(child, "act"):  # timm's BatchNormAct2d: normalisation, drop, activation
                swapped = GroupNormAct(channels, num_groups=groups, eps=child.eps)
                swapped.act, swapped.drop = child.act, child.drop
            else:
                swapped = nn.GroupNorm(groups, channels, eps=child.eps)
            setattr(module, child_name, swapped)
            replaced += 1
        else:
            replaced += swap_batch_norm(child, norm)
    return replaced
