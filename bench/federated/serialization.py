"""Conversions between tensors/arrays and Flower records."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord


def state_to_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({key: Array(value.detach().cpu().numpy()) for key, value in state.items()})


def record_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.array(array.numpy())) for key, array in record.items()}


def arrays_to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in arrays.items()})


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in record.items()}


def record_bytes(record: ArrayRecord) -> int:
    return sum(array.numpy().nbytes for array in record.values())
