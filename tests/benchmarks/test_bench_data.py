"""Data hot paths: preprocessing one synthetic volume, SliceStack sampling, the fine-tuning
sampler."""

from __future__ import annotations

import pytest
import torch

from bench.datasets.nifti import LABEL_VALUES, load_pair
from bench.datasets.preprocess import PreprocessSettings, preprocess_frame
from bench.datasets.synthetic import write_synthetic
from bench.profile.steps import synthetic_volumes
from bench.sampling import SliceStack


@pytest.fixture(scope="module")
def acdc_frame(tmp_path_factory):
    """One synthetic ACDC patient at the real sizes (a few hundred px, 6-21 slices): its ED
    frame."""
    from bench.datasets.acdc import read_acdc

    root = write_synthetic(
        tmp_path_factory.mktemp("acdc"), "acdc", n_train=1, n_test=0, seed=0, real_sizes=True
    )
    frame = next(f for f in read_acdc(root)[0].frames if f.phase == "ED")
    return frame


def test_load_nifti_pair(benchmark, acdc_frame):
    image, label, _spacing = benchmark(
        load_pair, acdc_frame.image_path, acdc_frame.label_path, LABEL_VALUES["acdc"]
    )
    assert image.shape == label.shape


@pytest.mark.parametrize(("spacing_mm", "size"), [(1.367, 192), (2.5, 64)], ids=["default", "tiny"])
def test_preprocess_frame(benchmark, acdc_frame, spacing_mm, size):
    image, label, spacing = load_pair(
        acdc_frame.image_path, acdc_frame.label_path, LABEL_VALUES["acdc"]
    )
    settings = PreprocessSettings(spacing_mm=spacing_mm, size=size)
    out = benchmark(preprocess_frame, image, label, spacing, settings)
    assert out[0].shape[1:] == (size, size)


@pytest.mark.parametrize(
    ("size", "volumes_per_batch"), [(192, 8), (64, 4)], ids=["default", "tiny"]
)
def test_slicestack_sample(benchmark, size, volumes_per_batch):
    stack = SliceStack(synthetic_volumes(20, 10, size, seed=0), partitions=4)
    draws = torch.Generator().manual_seed(0)
    batch = benchmark(stack.sample, volumes_per_batch, draws, 0)
    assert batch["image"].shape == (volumes_per_batch * 4, 1, size, size)


def test_slicestack_build(benchmark):
    volumes = synthetic_volumes(20, 10, 192, seed=0)
    stack = benchmark(SliceStack, volumes, 4)
    assert stack.num_volumes == 20


@pytest.mark.parametrize("size", [192, 64], ids=["default", "tiny"])
def test_finetune_sampler(benchmark, size):
    from bench.finetune import LabeledSlices

    slices = LabeledSlices(synthetic_volumes(4, 10, size, seed=0, labels=True))
    draws = torch.Generator().manual_seed(0)
    images, labels = benchmark(slices.sample, 8, draws)
    assert images.shape == (8, 1, size, size) and labels.dtype == torch.long
