"""Each method's pretraining step at the tiny preset's size (widths 8-64, 64 px, 16 slices).

The step is the whole of ``PretrainTask.train_round``'s inner loop body:
``training_step`` (augmentation, networks, loss), ``zero_grad``, ``backward``,
``optimizer.step`` and ``after_optimizer_step``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.backbone import build_unet
from bench.profile.steps import synthetic_volumes
from bench.registry import available_methods
from bench.sampling import SliceStack

TRAINED = [name for name, cls in available_methods().items() if cls.needs_pretraining]


@pytest.mark.parametrize("name", TRAINED)
def test_pretrain_step(benchmark, tiny_config, name):
    cfg = tiny_config["pretrain"]
    method = available_methods()[name](
        build_unet(tiny_config["model"], out_channels=1),
        cfg["methods"].get(name, {}),
        num_clients=2,
        client_id=0,
    )
    optimizer = torch.optim.Adam(method.optimizer_parameters(), lr=cfg["lr"])
    size = tiny_config["data"]["preprocess"]["size"]
    stack = SliceStack(synthetic_volumes(10, 8, size, seed=0), cfg["partitions"])
    draws = torch.Generator().manual_seed(0)
    batches = itertools.cycle([stack.sample(cfg["volumes_per_batch"], draws, 0) for _ in range(8)])
    method.begin_round(0, cfg["rounds"])
    method.train()

    def step():
        loss = method.training_step(next(batches), draws)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()
        return loss

    benchmark.extra_info["slices_per_step"] = cfg["volumes_per_batch"] * cfg["partitions"]
    loss = benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    assert torch.isfinite(loss)
