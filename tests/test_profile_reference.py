"""`bench profile --study reference`: each reference loop computes bench's loss on equal inputs."""

from __future__ import annotations

import pytest
import torch

import bench.methods._views_and_losses as heads
from bench.augment import random_view
from bench.config import load_config
from bench.profile.studies.reference import (
    REFERENCE_METHODS,
    build_sides,
    pre_augmented_batches,
    reference_study,
)

SMALL = [
    "model.widths=[4,8,8,8,8,8]",
    "data.preprocess.size=32",
    "pretrain.volumes_per_batch=2",
]


@pytest.fixture(scope="module")
def config():
    return load_config("tiny", SMALL)


@pytest.mark.parametrize("name", REFERENCE_METHODS)
def test_reference_loop_computes_the_same_loss_as_bench_step(config, name):
    """Three steps from identical weights and inputs: the same loss each step, so the
    optimiser, the momentum update and the banks also did the same thing in between."""
    data = pre_augmented_batches(config, 2, 3)
    bench, reference, method, loop = build_sides(name, config, num_clients=3)
    for step, (views, batch) in enumerate(data):
        bench_loss = bench.step(views, batch, torch.Generator().manual_seed(step))
        reference_loss = reference.step(views, batch, torch.Generator().manual_seed(step))
        torch.testing.assert_close(bench_loss, reference_loss, rtol=1e-6, atol=1e-6)
    # The methods drew their views from the replay only while the step ran.
    assert heads.random_view is random_view


@pytest.mark.slow
def test_study_reports_each_method_with_its_ratio(config):
    report = reference_study(config, ("simclr", "fcl"), repeats=2, warmup=0, log=lambda _: None)
    assert [row["method"] for row in report["rows"]] == ["simclr", "fcl"]
    for row in report["rows"]:
        assert row["bench_s"] > 0 and row["reference_s"] > 0
        assert row["ratio"] == pytest.approx(row["reference_s"] / row["bench_s"])
        assert row["first_loss_bench"] == pytest.approx(row["first_loss_reference"], rel=1e-6)
    assert "| simclr |" in report["summary"]
