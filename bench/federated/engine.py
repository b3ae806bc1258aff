"""Runs a task's ClientApp and ServerApp in this process (the embedded default)."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from bench.config import as_section
from bench.config_schema import RunConfig
from bench.federated.apps import client_app, server_app
from bench.federated.checkpoint import load_final
from bench.federated.grid import InProcessGrid
from bench.federated.jobs import forget_task, register_task, write_job


def run_task(task, run_cfg: dict) -> dict:
    """Trains ``task`` on the configured engine and returns its final server state."""
    run_cfg = as_section(RunConfig, run_cfg)
    if run_cfg.engine == "inprocess":
        return run_in_process(task)
    if run_cfg.engine == "flower":
        from bench.federated.simulation import run_simulation  # imported late: it loads Ray

        return run_simulation(task, run_cfg)
    if run_cfg.engine == "deployment":
        from bench.federated.federation import run_deployed

        return run_deployed(task, run_cfg)
    raise ValueError(f"run.engine={run_cfg.engine!r}; expected inprocess, flower or deployment")


def run_in_process(task) -> dict:
    """Trains ``task`` for all its rounds (resuming from its last round) and returns the final
    state."""
    work_dir = Path(task.work_dir)
    final = work_dir / "server" / "final.pt"
    if not final.exists():
        job_path = write_job(work_dir / "job.json", task.spec())
        register_task(job_path, task)
        run_config: dict[str, bool | float | int | str] = {"job": str(job_path)}
        grid = InProcessGrid(client_app, task.num_clients, run_config)
        context = Context(
            run_id=1,
            node_id=SUPERLINK_NODE_ID,
            node_config={},
            state=RecordDict(),
            run_config=run_config,
        )
        try:
            server_app(grid, context)
        finally:
            forget_task(job_path)
    return load_final(work_dir)
