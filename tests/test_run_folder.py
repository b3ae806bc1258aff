"""Run folders: nothing unpickled, bench's marker, the lock, --fresh, client state files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from bench.datasets.errors import DataError
from bench.federated.jobs import task_for
from bench.io import atomic_torch_save, torch_load
from bench.runfolder import LOCK, MARKER, RunFolderLock, check_out_path, clear_for_fresh
from bench.runner import open_run_dir


class _Payload:
    """Unpickling this creates the file named in ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoints_load_without_unpickling_code(tmp_path):
    state = {"w": torch.ones(3), "history": [{"round": 1, "loss": 0.5}], "best": None}
    atomic_torch_save(tmp_path / "ok.pt", state)
    assert torch.equal(torch_load(tmp_path / "ok.pt")["w"], torch.ones(3))


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="evil.pt.*refusing to unpickle"):
        torch_load(tmp_path / "evil.pt")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DataError, match="plain.pt"):
        torch_load(tmp_path / "plain.pt")
    assert not marker.exists()


def test_a_job_file_may_only_name_benchs_factories(tmp_path):
    marker = tmp_path / "ran"
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"factory": "os:system", "cmd": f"touch {marker}"}))
    with pytest.raises(DataError, match="not a function inside the bench package"):
        task_for(job)
    assert not marker.exists()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_into_a_locked_folder_fails_naming_the_pid(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with pytest.raises(DataError, match=f"in use by bench run PID {os.getppid()}"):
        RunFolderLock(tmp_path).acquire()


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    (tmp_path / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    with RunFolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert "stale lock" in capsys.readouterr().err
    assert not (tmp_path / LOCK).exists()


def test_fresh_deletes_only_a_folder_bench_made(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="not a bench run folder"):
        open_run_dir(precious, {"a": 1}, fresh=True)
    with pytest.raises(DataError, match="not a bench run folder"):
        clear_for_fresh(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    run = tmp_path / "run"
    with open_run_dir(run, {"a": 1}, fresh=False):
        (run / "results").mkdir()
    with open_run_dir(run, {"a": 1}, fresh=True):
        assert sorted(p.name for p in run.iterdir()) == [LOCK, MARKER]


def test_an_old_format_run_folder_is_refused_with_how_to_redo_it(tmp_path):
    (tmp_path / "config.yaml").write_text("a: 1\n")
    (tmp_path / "results").mkdir()
    with pytest.raises(DataError, match="older bench.*--out"):
        check_out_path(tmp_path)
