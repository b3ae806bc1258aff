"""FLOP counts: torch's ``FlopCounterMode`` and the hand formulas it must agree with.

Conventions (those of ``torch.utils.flop_counter``): a multiply-add counts 2
FLOPs; only matrix products and convolutions count (bias additions,
normalisation, activations and pooling are not counted); a convolution's
backward costs one forward for the input gradient and one for the weight
gradient, each only when that gradient is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> tuple[int, object]:
    """(FLOPs of everything ``fn`` runs, what ``fn`` returned)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return int(counter.get_total_flops()), result


def flops_by_operator(fn: Callable[[], object]) -> dict[str, int]:
    """FLOPs per aten operator (e.g. ``convolution``, ``convolution_backward``, ``addmm``)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    totals = counter.get_flop_counts().get("Global", {})
    return {
        str(op).split(".")[-1] if "." in str(op) else str(op): int(n) for op, n in totals.items()
    }


def conv2d_flops(
    batch: int,
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int],
    out_hw: tuple[int, int],
    groups: int = 1,
) -> int:
    """Forward FLOPs of a 2D convolution: 2 x output elements x (in_channels / groups) x kernel
    area."""
    return (
        2 * batch * out_channels * math.prod(out_hw) * (in_channels // groups) * math.prod(kernel)
    )


def linear_flops(batch: int, in_features: int, out_features: int) -> int:
    """Forward FLOPs of ``nn.Linear``: 2 x batch x in x out."""
    return 2 * batch * in_features * out_features


def conv_out_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
