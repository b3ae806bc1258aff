"""Packed records: what a bench message carries instead of one Flower Array per tensor."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from bench.federated.serialization import (
    PACKED_KEY,
    pack_arrays,
    packed,
    plain,
    record_bytes,
    record_to_arrays,
    record_to_state,
    state_to_message_record,
    state_to_record,
)


def mixed_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d
        "empty": np.zeros((0, 5), dtype=np.float32),
        "odd": rng.standard_normal(3).astype(np.float16),  # 6 bytes: next array unaligned
        "doubles": rng.standard_normal((2, 2)).astype(np.float64),
        "transposed": np.arange(6, dtype=np.int32).reshape(2, 3).T,  # not C-contiguous
    }


def test_a_packed_record_is_one_array_and_gives_back_every_array_bit_for_bit():
    arrays = mixed_arrays()
    record = pack_arrays(arrays)
    assert list(record) == [PACKED_KEY]
    back = record_to_arrays(record)
    assert list(back) == list(arrays)  # order kept
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        assert back[key].tobytes() == np.asarray(value, order="C").tobytes()
        assert back[key].flags.writeable
    assert record_bytes(record) == sum(v.nbytes for v in arrays.values())
    assert record_bytes(record) == record_bytes(
        ArrayRecord({k: Array(v) for k, v in arrays.items()})
    )


def test_a_packed_state_reads_back_as_the_plain_one_and_averages_the_same():
    state = {key: torch.from_numpy(value) for key, value in mixed_arrays().items() if value.size}
    through_message = record_to_state(state_to_message_record(state))
    directly = record_to_state(state_to_record(state))
    assert list(through_message) == list(directly)
    for key in state:
        assert torch.equal(through_message[key], directly[key])
        assert through_message[key].dtype == directly[key].dtype
    # FedAvg reads the plain form of a reply: the same Arrays as the client's plain record.
    unpacked = plain(state_to_message_record(state))
    reference = state_to_record(state)
    assert {k: a.numpy().tobytes() for k, a in unpacked.items()} == {
        k: a.numpy().tobytes() for k, a in reference.items()
    }
    assert plain(reference) is reference and packed(pack_arrays({})) is not None
    assert list(packed(reference)) == [PACKED_KEY]


def test_a_packed_record_with_bytes_beyond_its_header_is_refused():
    record = pack_arrays({"a": np.ones(3, dtype=np.float32)})
    blob = record[PACKED_KEY].numpy()
    longer = ArrayRecord({PACKED_KEY: Array(np.concatenate([blob, np.zeros(4, np.uint8)]))})
    with pytest.raises(ValueError, match="beyond its header"):
        record_to_arrays(longer)
