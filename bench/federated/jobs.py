"""Job files: how a ClientApp or ServerApp in any process finds its task.

The runner writes a job file (JSON) describing the task and naming the
function that builds it; ``task_for(path, run_id)`` builds the task from it once
per run in a process and keeps it for the run's next messages (a site's
long-running ClientApp worker builds it, and checks its data, once per run, not
per message). A built task is kept under the run id, the job file's path and
the hash of its bytes: another run, or the same file rewritten with another
config, builds afresh. The in-process engine registers the task object it
already holds, so nothing is built twice.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

from bench.io import atomic_write_text

_TASKS: dict[str, object] = {}
# Tasks built from job files in this process (Flower's workers), oldest first. A
# worker kept across a benchmark's tasks holds only the last few, not every task's data.
_BUILT: list[str] = []
BUILT_TASKS_KEPT = 2


def write_job(path: Path, spec: dict) -> Path:
    atomic_write_text(path, json.dumps(spec, indent=2, sort_keys=True, default=str))
    return path


def register_task(path: Path, task) -> None:
    _TASKS[str(Path(path).resolve())] = task


def forget_task(path: Path) -> None:
    """Drops the task registered or built for ``path`` (when its run is over)."""
    key = str(Path(path).resolve())
    _TASKS.pop(key, None)
    if key in _BUILT:
        _BUILT.remove(key)


class JobFileError(ValueError):
    pass


def build_from_spec(spec: dict):
    """The task a job file describes, built by the function its ``factory`` names.

    ``factory`` is "module:function" inside ``bench`` (the runner's jobs name
    ``bench.task_factory:build_task``), so the engine never imports the layers above
    it. A job file names code to run, so it may name only bench's own.
    """
    factory = spec.get("factory")
    if not factory:
        raise JobFileError("no 'factory' (\"module:function\" inside bench that builds the task)")
    module, _, name = str(factory).partition(":")
    if not (module == "bench" or module.startswith("bench.")) or not name.isidentifier():
        raise JobFileError(
            f"factory {factory!r} is not a function inside the bench package; "
            "a job file may only name bench's own task factories"
        )
    return getattr(importlib.import_module(module), name)(spec)


def read_job(path: Path) -> dict:
    from bench.io import read_json_object

    return read_json_object(path, "job file")


def task_for(path: str | Path, run_id: int | None = None):
    """The task of job file ``path``: the one registered for it in this process, else the one
    built from it for run ``run_id`` (built at the run's first message)."""
    key = str(Path(path).resolve())
    if key in _TASKS:  # registered by the engine running in this process
        return _TASKS[key]
    try:
        digest = hashlib.sha256(Path(key).read_bytes()).hexdigest()
    except OSError:
        digest = "unreadable"  # read_job names the problem
    return task_for_spec(f"{key}\n{run_id}\n{digest}", lambda: read_job(Path(key)), where=key)


def task_for_spec(key: str, make_spec, where: str | None = None):
    """The task registered or built under ``key`` in this process; else built from the spec
    ``make_spec()`` returns (a job file's, or a site's view of the run's job)."""
    from bench.datasets.errors import DataError

    if key not in _TASKS:
        try:
            _TASKS[key] = build_from_spec(make_spec())
        except JobFileError as exc:
            raise DataError(where or "job", str(exc)) from None
        _BUILT.append(key)
        while len(_BUILT) > BUILT_TASKS_KEPT:
            _TASKS.pop(_BUILT.pop(0), None)
    return _TASKS[key]
