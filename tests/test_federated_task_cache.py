"""A site's long-running ClientApp worker builds a run's task once, and never reuses it for
another run or a changed job."""

import json

import pytest
from flwr.app import Context, RecordDict

from bench.federated import jobs
from bench.federated.jobs import task_for, write_job
from bench.federated.site import site_task


@pytest.fixture
def builds(monkeypatch):
    """The specs tasks were built from (each build returns a new object)."""
    built: list[dict] = []
    monkeypatch.setattr(jobs, "_TASKS", {})
    monkeypatch.setattr(jobs, "_BUILT", [])
    monkeypatch.setattr(jobs, "build_from_spec", lambda spec: built.append(spec) or object())
    return built


def test_a_job_files_task_is_built_once_per_run_and_again_for_a_changed_job(tmp_path, builds):
    job = write_job(tmp_path / "job.json", {"factory": "bench.x:y", "config": {"lr": 1}})
    first = task_for(job, run_id=11)
    assert task_for(job, run_id=11) is first  # the run's next message
    assert len(builds) == 1

    write_job(job, {"factory": "bench.x:y", "config": {"lr": 2}})  # same path, new config
    changed = task_for(job, run_id=11)
    assert changed is not first and builds[-1]["config"] == {"lr": 2}
    assert task_for(job, run_id=12) is not changed  # another run builds (and checks) afresh
    assert len(builds) == 3


def test_a_registered_task_is_used_as_it_is(tmp_path, builds):
    job = write_job(tmp_path / "job.json", {"factory": "bench.x:y"})
    task = object()
    jobs.register_task(job, task)
    assert task_for(job, run_id=1) is task and task_for(job, run_id=2) is task
    assert builds == []


def test_a_sites_task_is_built_once_per_run_and_job(tmp_path, builds):
    (tmp_path / "site.toml").write_text(
        f'name = "a"\ndata = "{tmp_path / "data"}"\nwork = "{tmp_path / "work"}"\n'
    )
    spec = {
        "factory": "bench.x:y",
        "run_dir": "/coordinator/run",
        "federation": {"split": {}, "manifest": {}},
    }

    def context(run_id: int, job: dict) -> Context:
        node = {"site": str(tmp_path / "site.toml"), "partition-id": 0}
        return Context(run_id, 5, node, RecordDict(), {"job-spec": json.dumps(job)})

    first = site_task(context(1, spec))
    assert site_task(context(1, spec)) is first
    assert builds[0]["site"]["data"] == str(tmp_path / "data")
    assert site_task(context(2, spec)) is not first
    assert site_task(context(1, {**spec, "config": {"lr": 2}})) is not first
    assert len(builds) == 3
