"""Small helpers shared by the lightly-based methods (MoCo, BYOL, Barlow Twins, VICReg, SwAV).

Not a method: modules whose name starts with ``_`` are not imported by the registry.
"""

from __future__ import annotations

import copy

import torch
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from bench.augment import random_view

# BatchNorm's step counter (int64): kept on the client so that every shared tensor
# is floating point and FedAvg averages only what averaging means something for.
BN_COUNTER = "num_batches_tracked"


def is_counter(key: str) -> bool:
    return key.endswith(BN_COUNTER)


def two_views(
    images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of each slice (crop, rotation, flip, intensity)."""
    return random_view(images, generator)[0], random_view(images, generator)[0]


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` for a momentum (EMA) network."""
    copied = copy.deepcopy(module)
    deactivate_requires_grad(copied)
    return copied


def sync_momentum(online: nn.Module, momentum: nn.Module) -> None:
    """Sets the momentum network to the online network's weights (BYOL/MoCo initialisation)."""
    with torch.no_grad():
        for target, source in zip(momentum.parameters(), online.parameters(), strict=True):
            target.copy_(source)


def momentum_for_round(start: float, end: float, round_index: int, num_rounds: int) -> float:
    """EMA coefficient for a round: lightly's cosine schedule from ``start`` towards ``end``.

    The schedule runs over rounds (the method does not know the number of local
    steps) and never reaches ``end`` itself, so the last round still updates.
    Equal ``start`` and ``end`` give a constant coefficient.
    """
    if start == end:
        return float(start)
    return float(cosine_schedule(round_index, num_rounds + 1, start, end))


def _as_float(value):
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_as_float(v) for v in value)
    return value


def _device_of(value) -> torch.device:
    if isinstance(value, torch.Tensor):
        return value.device
    return _device_of(value[0])


def float32_loss(criterion: nn.Module, *inputs) -> torch.Tensor:
    """``criterion(*inputs)`` in float32 with autocast off (bf16 runs on GPU)."""
    device = _device_of(inputs[0])
    with torch.autocast(device_type=device.type, enabled=False):
        return criterion(*_as_float(inputs))
