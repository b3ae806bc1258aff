"""Builds a federated task from its job file, for ClientApps in other processes."""

from __future__ import annotations

from pathlib import Path

from bench.runner import Runner, Unit


def build_task(spec: dict):
    runner = Runner(spec["config"], Path(spec["run_dir"]), progress=False)
    if spec["kind"] == "pretrain":
        return runner.pretrain_task(spec["method"], spec["seed"])
    if spec["kind"] == "finetune":
        unit = Unit(spec["method"], spec["seed"], spec["mode"], spec["n"], spec["fold"])
        return runner.finetune_task(unit, runner.pretrain(unit.method, unit.seed))
    raise ValueError(f"job file: unknown task kind {spec['kind']!r}")
