"""The shared pretraining sampler's partitions on volumes of real ACDC depths (6-21 slices)."""

import numpy as np
import pytest
import torch

from bench.sampling import SliceStack, partition_of


@pytest.mark.parametrize("depth", range(4, 22))
def test_partitions_are_ordered_contiguous_and_balanced(depth):
    parts = [partition_of(z, depth, 4) for z in range(depth)]
    assert parts == sorted(parts)
    assert set(parts) == {0, 1, 2, 3}
    sizes = np.bincount(parts)
    assert sizes.max() - sizes.min() <= 1


def test_every_slice_of_a_batch_comes_from_its_partition():
    volumes = [np.full((depth, 4, 4), depth, dtype=np.float32) for depth in (6, 9, 21)]
    for volume in volumes:
        volume += np.arange(volume.shape[0])[:, None, None] / 100
    stack = SliceStack(volumes, 4)
    batch = stack.sample(3, torch.Generator().manual_seed(0))
    for image, part, position in zip(
        batch["image"], batch["partition"], batch["position"], strict=True
    ):
        depth = int(image[0, 0, 0])
        z = round((float(image[0, 0, 0]) - depth) * 100)
        assert partition_of(z, depth, 4) == int(part)
        assert position == pytest.approx((z + 0.5) / depth)


def test_a_volume_thinner_than_the_partitions_reuses_its_nearest_slices():
    stack = SliceStack([np.zeros((2, 4, 4), dtype=np.float32)], 4)
    assert [part.tolist() for part in stack.index[0]] == [[0], [0], [1], [1]]
