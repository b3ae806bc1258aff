"""Runs a task's ClientApp and ServerApp under Flower's simulation runtime (Ray).

``run.engine=flower``: the same ``client_app`` and ``server_app`` as the
in-process engine, with one virtual SuperNode per client (node config
``partition-id``/``num-partitions``) and ``run.flower.workers`` Ray worker
processes, each with ``cpus_per_client`` CPUs and ``gpus_per_client`` GPUs.
Workers are reused across clients; a client's state lives on disk (see
``bench.federated.task``), so which worker runs which client does not matter.

The ServerApp runs in this process (a thread), the ClientApps in the workers,
which rebuild the task from the job file (``run_config["job"]``).

Ray is started once per process and reused by later tasks (a benchmark runs
many); its temporary files go to ``run.flower.ray_tmpdir``, else to
``<run folder>/ray``, or, where that path is too long for Ray's AF_UNIX
sockets (107 bytes on Linux), to a short folder under the system temp dir.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from flwr.app import Context, RecordDict

from bench.config import as_section
from bench.config_schema import RunConfig
from bench.federated.apps import client_app, server_app
from bench.federated.checkpoint import load_final
from bench.federated.deployment import write_app_dir
from bench.federated.jobs import forget_task, register_task, write_job

# Ray puts sockets at <temp dir>/session_<date>_<time>_<pid>/sockets/plasma_store:
# about 66 bytes after the temp dir, and the limit is 107.
MAX_RAY_TMPDIR = 36

_ray_settings: dict | None = None


def ray_temp_dir(run_cfg: dict, work_dir: Path) -> Path:
    """Where Ray writes its session folder (logs, sockets, spilled objects)."""
    configured = as_section(RunConfig, run_cfg).flower.get("ray_tmpdir")
    if configured:
        folder = Path(configured).expanduser().resolve()
        if len(str(folder)) > MAX_RAY_TMPDIR:
            raise ValueError(
                f"run.flower.ray_tmpdir={folder} is {len(str(folder))} characters; Ray's sockets "
                f"need a path of at most {MAX_RAY_TMPDIR} (the AF_UNIX limit is 107 bytes)"
            )
        return folder
    run_dir = _run_dir(work_dir)
    folder = (run_dir / "ray").resolve()
    if len(str(folder)) <= MAX_RAY_TMPDIR:
        return folder
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]
    short = Path(tempfile.gettempdir()) / f"bench-ray-{digest}"
    if len(str(short)) > MAX_RAY_TMPDIR:
        short = Path("/tmp") / f"br-{digest}"
    return short


def _run_dir(work_dir: Path) -> Path:
    """The run folder holding ``work/``, or the work folder itself."""
    work_dir = Path(work_dir).resolve()
    for parent in work_dir.parents:
        if parent.name == "work":
            return parent.parent
    return work_dir


def ray_settings(run_cfg: dict, work_dir: Path) -> dict:
    flower = as_section(RunConfig, run_cfg).flower
    workers, cpus, gpus = (
        int(flower.workers),
        float(flower.cpus_per_client),
        float(flower.gpus_per_client),
    )
    init_args = {
        "num_cpus": math.ceil(workers * cpus),
        "_temp_dir": str(ray_temp_dir(run_cfg, work_dir)),
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if gpus == 0:
        init_args["num_gpus"] = 0  # else Ray counts the machine's GPUs
    return {
        "client_resources": {"num_cpus": cpus, "num_gpus": gpus},
        "init_args": init_args,
    }


def _ensure_ray(init_args: dict) -> None:
    """Starts Ray with ``init_args``, or keeps the running instance if it was started alike."""
    global _ray_settings
    import ray

    if ray.is_initialized():
        if _ray_settings == init_args:
            return
        shutdown_ray()
    Path(init_args["_temp_dir"]).mkdir(parents=True, exist_ok=True)
    os.environ["RAY_TMPDIR"] = init_args["_temp_dir"]
    ray.init(**init_args)
    _ray_settings = dict(init_args)


def shutdown_ray() -> None:
    """Stops Ray and its workers (they are kept between tasks otherwise)."""
    global _ray_settings, _kept_pool
    import ray

    _kept_pool = None
    if ray.is_initialized():
        ray.shutdown()
    _ray_settings = None


atexit.register(shutdown_ray)


_kept_pool = None  # the worker pool of the last run, with its resources


@contextmanager
def _bench_backend():
    """Flower's Ray backend with two changes, while a simulation runs.

    - Its worker pool outlives a run, so later tasks in this process skip
      starting workers and importing torch again (a benchmark runs many tasks).
    - Flower 1.41 puts a dead worker back into the pool, so every later client
      sent to it fails too; here a fresh worker takes its place.
    """
    from flwr.server.superlink.fleet.vce.backend import raybackend
    from ray.exceptions import RayActorError

    original = raybackend.RayBackend

    class BenchRayBackend(original):
        def build(self, app_fn):
            global _kept_pool
            key = tuple(sorted(self.client_resources.items()))
            if _kept_pool is not None and _kept_pool[0] == key:
                self.pool, self.app_fn = _kept_pool[1], app_fn
                _kept_pool = None
                return
            super().build(app_fn)

        def process_message(self, message, context):
            try:
                return super().process_message(message, context)
            except RayActorError as error:
                dead = getattr(error, "actor_id", None)
                for actor in list(self.pool.pool):
                    if dead is not None and actor._actor_id.hex() == dead:
                        self.pool.pool.remove(actor)
                        self.pool.pool.append(self.pool.create_actor_fn())
                raise

        def terminate(self):
            global _kept_pool
            pool = self.pool
            if pool is not None and not pool._future_to_actor and len(pool.pool) == pool.num_actors:
                _kept_pool = (tuple(sorted(self.client_resources.items())), pool)
                return
            super().terminate()  # a worker is still busy (a late client): start afresh next time

    raybackend.RayBackend = BenchRayBackend
    try:
        yield
    finally:
        raybackend.RayBackend = original


@contextmanager
def _forgotten(job_path: Path):
    try:
        yield
    finally:
        forget_task(job_path)


def run_simulation(task, run_cfg: dict) -> dict:
    """Trains ``task`` under Flower's simulation runtime and returns its final server state."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supercore.telemetry import EventType

    work_dir = Path(task.work_dir)
    final = work_dir / "server" / "final.pt"
    if final.exists():
        return load_final(work_dir)
    job_path = write_job(work_dir / "job.json", task.spec())
    register_task(job_path, task)  # the ServerApp runs here and uses this object
    run_config = {"job": str(job_path.resolve())}

    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    backend_config = ray_settings(run_cfg, work_dir)
    _ensure_ray(backend_config["init_args"])

    run = Run.create_empty(run_id=int.from_bytes(os.urandom(7), "little"))
    run.override_config = dict(run_config)
    run.primary_task_id = int.from_bytes(os.urandom(7), "little")
    run.federation_id = NOOP_FEDERATION_ID
    # Messages built in this process take their run id from here (as run_simulation does).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = (
        run.run_id,
        SUPERLINK_NODE_ID,
        1,
    )
    server_context = Context(
        run_id=run.run_id,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config),
    )
    with _bench_backend(), _forgotten(job_path):
        _run_simulation(
            num_supernodes=task.num_clients,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_name="ray",
            backend_config=backend_config,
            server_app_context=server_context,
            app_dir=str(write_app_dir(work_dir / "flower_app")),
            is_app=True,
            run=run,
        )
    if not final.exists():
        raise RuntimeError(
            f"{work_dir}: the Flower simulation ended without finishing the task (see the log "
            "above)"
        )
    return load_final(work_dir)
