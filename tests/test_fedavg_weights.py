"""FedAvg weighted by examples: the slices each client trains on (McMahan et al. 2017)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.config import load_config
from bench.federated.engine import run_in_process
from bench.pretrain import PretrainTask


def _task(tmp_path, weights: str) -> PretrainTask:
    config = load_config(
        "tiny",
        [
            "model.widths=[4, 8]",
            "pretrain.rounds=1",
            "pretrain.local_steps=1",
            "pretrain.volumes_per_batch=2",
            f"pretrain.fedavg_weights={weights}",
        ],
    )
    rng = np.random.default_rng(0)

    def volume(depth: int) -> np.ndarray:
        return rng.random((depth, 16, 16), dtype=np.float32)

    client_volumes = [[volume(4)], [volume(6), volume(8), volume(6)]]  # 4 and 20 slices
    return PretrainTask(
        config=config,
        method="simclr",
        seed=0,
        work_dir=tmp_path / weights,
        client_volumes=client_volumes,
        spec={"kind": "test"},
    )


@pytest.mark.parametrize("weights", ["examples", "uniform"])
def test_aggregate_is_the_mean_weighted_by_each_clients_slices(tmp_path, weights):
    task = _task(tmp_path, weights)
    expected_weights = [4, 20] if weights == "examples" else [1, 1]
    assert [task.fedavg_weight(c) for c in range(2)] == expected_weights
    final = run_in_process(task)
    states = [task.load_client_state(c, 0)["method"] for c in range(2)]
    w = torch.tensor(expected_weights, dtype=torch.float64)
    for key, value in final["state"].items():
        mean = sum(w[c] * states[c][key].double() for c in range(2)) / w.sum()
        torch.testing.assert_close(value.double(), mean, rtol=1e-5, atol=1e-6)
