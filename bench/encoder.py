"""The U-Net encoder (MONAI's ``TwoConv`` and ``Down`` blocks) and its slice embedding.

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
from monai.networks.nets.basic_unet import Down, TwoConv
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


def norm_spec(name: str):
    """MONAI's (name, arguments) for a normalisation layer named in model.norm."""
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
        self.stem = TwoConv(2, in_channels, widths[0], ACTIVATION, norm_spec(norm), True)
        self.downs = nn.ModuleList(
            Down(2, widths[i], widths[i + 1], ACTIVATION, norm_spec(norm), True)
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
        return self.embedding(self.forward(x))

    def embedding(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``embed`` from the feature maps ``forward`` returned (for methods that also decode)."""
        return pool_embedding(features[-1], self.embed_grid)
