"""Conversions between tensors/arrays and Flower records.

Two forms of ``ArrayRecord``:

- **plain**: one ``Array`` per tensor, the form Flower's FedAvg averages key by key
  (the server's global model, its checkpoints);
- **packed**: every array of the record in one ``uint8`` ``Array`` (``PACKED_KEY``):
  an 8-byte little-endian header length, a JSON header ``[[name, dtype, shape], ...]``
  in the arrays' order, then each array's bytes (C order). Every record a bench
  message carries is packed: Flower sends each ``Array`` (and each 5 MiB chunk of
  it) as a separate request at every hop (ServerApp -> SuperLink -> SuperNode ->
  ClientApp and back), so a 68-tensor model costs some 140 requests a hop plain and
  3 packed. Packing copies the bytes as they are: nothing is rounded or cast.

``record_to_state`` and ``record_to_arrays`` read either form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

PACKED_KEY = "bench-packed-arrays"
_LENGTH_BYTES = 8


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """A packed record of ``arrays`` (any dtypes and shapes, their order kept)."""
    contiguous = {key: np.asarray(value, order="C") for key, value in arrays.items()}
    header = json.dumps(
        [[key, value.dtype.str, list(value.shape)] for key, value in contiguous.items()]
    ).encode()
    blob = b"".join(
        [len(header).to_bytes(_LENGTH_BYTES, "little"), header]
        + [value.tobytes() for value in contiguous.values()]
    )
    return ArrayRecord({PACKED_KEY: Array(np.frombuffer(blob, dtype=np.uint8))})


def is_packed(record: ArrayRecord) -> bool:
    return list(record.keys()) == [PACKED_KEY]


def _packed_layout(record: ArrayRecord) -> tuple[bytes, list, int]:
    """(the packed bytes, the header's entries, where the first array starts)."""
    blob = record[PACKED_KEY].numpy().tobytes()
    length = int.from_bytes(blob[:_LENGTH_BYTES], "little")
    entries = json.loads(blob[_LENGTH_BYTES : _LENGTH_BYTES + length])
    return blob, entries, _LENGTH_BYTES + length


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The arrays of a packed or plain record, in its order (writable copies when packed)."""
    if not is_packed(record):
        return {key: array.numpy() for key, array in record.items()}
    blob, entries, offset = _packed_layout(record)
    arrays = {}
    for key, dtype, shape in entries:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        flat = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
        arrays[key] = flat.reshape(tuple(shape)).copy()
        offset += count * dtype.itemsize
    if offset != len(blob):
        raise ValueError(f"packed record: {len(blob) - offset} bytes beyond its header's arrays")
    return arrays


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Arrays as a message carries them (packed)."""
    return pack_arrays(arrays)


def state_to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A plain record: the form FedAvg averages."""
    return ArrayRecord({key: Array(value.detach().cpu().numpy()) for key, value in state.items()})


def state_to_message_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Tensors as a message carries them (packed)."""
    return pack_arrays({key: value.detach().cpu().numpy() for key, value in state.items()})


def packed(record: ArrayRecord) -> ArrayRecord:
    """A plain or packed record as a message carries it (packed)."""
    return record if is_packed(record) else pack_arrays(record_to_arrays(record))


def plain(record: ArrayRecord) -> ArrayRecord:
    """A packed or plain record in the form FedAvg averages (plain)."""
    if not is_packed(record):
        return record
    return ArrayRecord({key: Array(value) for key, value in record_to_arrays(record).items()})


def record_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Tensors from a packed or plain record."""
    if is_packed(record):
        return {key: torch.from_numpy(value) for key, value in record_to_arrays(record).items()}
    return {key: torch.from_numpy(np.array(array.numpy())) for key, array in record.items()}


def record_bytes(record: ArrayRecord) -> int:
    """Bytes of the record's arrays (a packed record's header not counted)."""
    if not is_packed(record):
        return sum(array.numpy().nbytes for array in record.values())
    blob, _, offset = _packed_layout(record)
    return len(blob) - offset
