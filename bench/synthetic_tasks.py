"""Small synthetic federated tasks and fault injection, for tests and smoke runs of the engines.

``synthetic_spec(...)`` describes a pretraining task on random volumes as a job
spec; ``build_synthetic_task(spec)`` (the spec's ``factory``) builds it in any
process: the in-process engine, a Ray worker or a SuperNode's ClientApp. The
volumes come from the spec's seed, so every process builds the same data.

``faults`` in the spec make chosen clients misbehave in chosen rounds
(``round`` is the 0-based round index the task sees):

- ``{"client": 1, "round": 1, "action": "raise"}``: the ClientApp raises;
- ``"exit"``: the process running the client dies (``os._exit``), as if killed;
- ``"sleep"`` with ``"seconds"``: the client answers late (round timeouts).

A fault fires once: it leaves a marker file under ``<work_dir>/faults``, so a
replayed round (after a server restart) runs normally.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.config import as_config, load_config, merge

FACTORY = "bench.synthetic_tasks:build_synthetic_task"

TINY_OVERRIDES = {
    "data": {"preprocess": {"size": 32}},
    "model": {"widths": [4, 8, 16]},
    "pretrain": {"rounds": 3, "local_steps": 2, "volumes_per_batch": 2, "partitions": 4},
    "run": {"threads": 1, "seeds": [0]},
}


def synthetic_spec(
    work_dir: Path,
    method: str = "simclr",
    *,
    clients: int = 2,
    volumes_per_client: int = 3,
    depth: int = 8,
    seed: int = 0,
    config: dict | None = None,
    faults: list[dict] | None = None,
) -> dict:
    """A job spec for a tiny pretraining task (config: the tiny preset, made smaller)."""
    base = merge(load_config("tiny"), TINY_OVERRIDES)
    return {
        "factory": FACTORY,
        "kind": "pretrain",
        "method": method,
        "seed": seed,
        "work_dir": str(work_dir),
        "config": merge(base, config or {}),
        "data": {
            "clients": clients,
            "volumes_per_client": volumes_per_client,
            "depth": depth,
            "seed": seed,
        },
        "faults": faults or [],
    }


def synthetic_volumes(data: dict, size: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(data["seed"])
    return [
        [
            rng.random((data["depth"], size, size), dtype=np.float32)
            for _ in range(data["volumes_per_client"])
        ]
        for _ in range(data["clients"])
    ]


def build_synthetic_task(spec: dict):
    from bench.pretrain import PretrainTask

    config = as_config(spec["config"])
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    task = PretrainTask(
        config=config,
        method=spec["method"],
        seed=spec["seed"],
        work_dir=Path(spec["work_dir"]),
        client_volumes=synthetic_volumes(spec["data"], config.data.preprocess.size),
        spec=spec,
    )
    return FaultyTask(task, spec["faults"]) if spec.get("faults") else task


class FaultyTask:
    """Wraps a task: the chosen clients fail in the chosen rounds, once each."""

    def __init__(self, task, faults: list[dict]):
        self._task = task
        self._faults = faults

    def __getattr__(self, name):
        return getattr(self._task, name)

    def _fire(self, client: int, round_index: int) -> None:
        for fault in self._faults:
            if fault["client"] != client or fault["round"] != round_index:
                continue
            marker = (
                Path(self._task.work_dir)
                / "faults"
                / f"client{client}-round{round_index}-{fault['action']}"
            )
            if marker.exists():
                continue
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("fired\n")
            if fault["action"] == "raise":
                raise RuntimeError(f"injected fault: client {client} raises in round {round_index}")
            elif fault["action"] == "exit":
                os._exit(17)
            elif fault["action"] == "sleep":
                time.sleep(float(fault["seconds"]))
            else:
                raise ValueError(f"unknown fault action {fault['action']!r}")

    def train_round(self, client: int, round_index: int, shared: dict, payloads: dict):
        self._fire(client, round_index)
        return self._task.train_round(client, round_index, shared, payloads)
