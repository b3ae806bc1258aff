"""Flower's deployment runtime on loopback: a real SuperLink and SuperNode processes.

TLS and SuperNode authentication are on, as docs/DEPLOYMENT.md sets them up.
Both runs are submitted at once (they share the SuperNodes), so the slow part,
one ClientApp process per message importing torch, overlaps.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from bench.federated.certificates import make_supernode_key
from bench.federated.deployment import write_app_dir
from bench.federated.engine import run_task
from bench.federated.jobs import write_job
from bench.federated.loopback import LocalFederation, node_config
from bench.io import torch_load
from bench.synthetic_tasks import build_synthetic_task, synthetic_spec

HAS_SUPERLINK = (
    bool(shutil.which("flower-superlink"))
    or (Path(sys.executable).parent / "flower-superlink").exists()
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_SUPERLINK, reason="flower-superlink is not installed"),
]

SITES = 2
RUN_TIMEOUT = 900  # seconds; a run takes about a minute on 2 idle cores


def _spec(root, name, method, **kwargs):
    return synthetic_spec(root / "work" / "pretrain" / name, method, clients=SITES, **kwargs)


CLEAN = {"method": "fcl", "config": {"pretrain": {"rounds": 2}}}
KILLED = {
    "method": "simclr",
    "config": {
        "pretrain": {"rounds": 2},
        "run": {"min_clients": 1, "flower": {"round_timeout": 300}},
    },
}


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower-dep")
    with LocalFederation(root / "federation") as fed:
        fed.start_superlink()
        fed.start_sites(SITES, root / "keys")
        app = write_app_dir(root / "app")
        jobs = {
            "clean": _spec(root, "clean", CLEAN["method"], config=CLEAN["config"]),
            "killed": _spec(
                root,
                "killed",
                KILLED["method"],
                config=KILLED["config"],
                faults=[{"client": 1, "round": 1, "action": "exit"}],
            ),
        }
        runs = {}
        for name, spec in jobs.items():
            job = write_job(root / "work" / "pretrain" / name / "job.json", spec)
            runs[name] = (fed.submit(app, job), spec)
        yield fed, root, runs
    # (LocalFederation.close stopped every process it started, and their children)


def _in_process(root, name, method, **kwargs):
    spec = _spec(root / "reference", name, method, **kwargs)
    torch.set_num_threads(spec["config"]["run"]["threads"])
    task = build_synthetic_task(spec)
    return task, run_task(task, spec["config"]["run"])


def _finished(fed, run_id, spec):
    status = fed.wait_run(run_id, RUN_TIMEOUT)
    assert status == "finished:completed", fed.log("superlink")[-4000:]
    return torch_load(f"{spec['work_dir']}/server/final.pt")


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_supernodes_without_valid_credentials_are_refused(federation):
    fed, root, _ = federation
    stranger, _ = make_supernode_key(root / "keys", "stranger")  # never registered
    unregistered = fed.start_supernode("stranger", stranger, node_config(0, SITES), retries=1)
    anonymous = fed.start_supernode("anonymous", None, node_config(1, SITES), retries=1)
    for name, process in (("stranger", unregistered), ("anonymous", anonymous)):
        assert process.wait(timeout=180) != 0, fed.log(name)
        assert "could not establish a connection to the SuperLink" in fed.log(name)
    assert fed.supernodes_online() == SITES


def test_deployment_matches_in_process_bitwise(federation):
    fed, root, runs = federation
    run_id, spec = runs["clean"]
    final = _finished(fed, run_id, spec)
    reference_task, reference = _in_process(root, "clean", CLEAN["method"], config=CLEAN["config"])
    assert final["failures"] == []
    assert _same_state(final["state"], reference["state"])
    for client in range(SITES):
        mine = torch_load(reference_task.client_state_path(client, 1))["method"]
        theirs = torch_load(f"{spec['work_dir']}/clients/client{client:03d}/round0001.pt")["method"]
        assert _same_state(theirs, mine), f"client {client}"


def test_clientapp_killed_mid_round_is_recorded_and_the_run_goes_on(federation):
    fed, root, runs = federation
    run_id, spec = runs["killed"]
    final = _finished(fed, run_id, spec)
    assert [(f["round"], f["partition"]) for f in final["failures"]] == [(2, 1)]
    # A killed client is a client that failed: the same result as one that raised.
    _, reference = _in_process(
        root,
        "killed",
        KILLED["method"],
        config=KILLED["config"],
        faults=[{"client": 1, "round": 1, "action": "raise"}],
    )
    assert _same_state(final["state"], reference["state"])
