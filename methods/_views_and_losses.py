"""Helpers of the methods' training steps: two augmented views, a float32 loss.

Not a method: modules whose name starts with ``_`` are not imported by the registry.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.augment import random_view


def two_views(
    images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of each slice (crop, rotation, flip, intensity)."""
    return random_view(images, generator)[0], random_view(images, generator)[0]


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
