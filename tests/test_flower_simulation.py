"""run.engine=flower: the same apps under Flower's simulation runtime (Ray) give the in-process
results.

Every test here shares one run folder, so Ray and its two workers start once
(tens of seconds on 2 cores) and are reused by the later tests.
"""

from __future__ import annotations

import pytest
import torch

from bench.federated import simulation
from bench.federated.checkpoint import load_final
from bench.federated.engine import run_task
from bench.federated.strategy import BenchFedAvg, ClientFailure
from bench.io import torch_load
from bench.synthetic_tasks import build_synthetic_task, synthetic_spec

pytestmark = pytest.mark.slow

CLIENTS = 3


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, one_thread):
    # one_thread: as the workers (run.threads=1 in the synthetic config)
    root = tmp_path_factory.mktemp("flower-sim")
    yield root
    simulation.shutdown_ray()


class ServerKilled(Exception):
    pass


def _run(root, folder, method, engine, *, faults=None, min_clients=0):
    spec = synthetic_spec(
        root / "work" / "pretrain" / folder,
        method,
        clients=CLIENTS,
        config={"run": {"engine": engine, "min_clients": min_clients, "flower": {"workers": 2}}},
        faults=faults,
    )
    task = build_synthetic_task(spec)
    return task, run_task(task, spec["config"]["run"])


def _client_states(task) -> list[dict]:
    return [
        torch_load(task.client_state_path(c, task.num_rounds - 1)) for c in range(task.num_clients)
    ]


def _assert_same(a: dict, b: dict, where: str = "") -> None:
    assert a.keys() == b.keys(), where
    for key, value in a.items():
        if isinstance(value, dict):
            _assert_same(value, b[key], f"{where}.{key}")
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), f"{where}.{key} differs"
        else:
            assert value == b[key], f"{where}.{key} differs"


def test_ray_temp_dir_is_short_enough_for_sockets(tmp_path):
    long_run = tmp_path / ("x" * 80)
    folder = simulation.ray_temp_dir(
        {"flower": {"ray_tmpdir": None}}, long_run / "work" / "pretrain" / "m"
    )
    assert len(str(folder)) <= simulation.MAX_RAY_TMPDIR
    with pytest.raises(ValueError, match="AF_UNIX"):
        simulation.ray_temp_dir({"flower": {"ray_tmpdir": str(long_run)}}, long_run)


@pytest.mark.parametrize("method", ["simclr", "fcl", "byol"])
def test_simulation_matches_in_process_bitwise(run_root, method):
    reference_task, reference = _run(run_root, f"{method}-inprocess", method, "inprocess")
    task, final = _run(run_root, f"{method}-flower", method, "flower")
    assert final["rounds"] == reference["rounds"] == 3
    _assert_same(final["state"], reference["state"], "final")
    for c, (a, b) in enumerate(
        zip(_client_states(task), _client_states(reference_task), strict=True)
    ):
        _assert_same(a["method"], b["method"], f"client {c}")
    assert final["failures"] == reference["failures"] == []


def test_client_raising_is_recorded_and_the_round_goes_on(run_root):
    faults = [{"client": 1, "round": 1, "action": "raise"}]
    _, reference = _run(
        run_root, "raise-inprocess", "simclr", "inprocess", faults=faults, min_clients=2
    )
    _, final = _run(run_root, "raise-flower", "simclr", "flower", faults=faults, min_clients=2)
    for result in (reference, final):
        assert [(f["round"], f["partition"], f["stage"]) for f in result["failures"]] == [
            (2, 1, "train")
        ]
        assert "injected fault: client 1 raises" in result["failures"][0]["summary"]
    _assert_same(final["state"], reference["state"], "final")
    _, clean = _run(run_root, "clean-inprocess", "simclr", "inprocess")
    assert any(not torch.equal(final["state"][k], clean["state"][k]) for k in clean["state"])


def test_killed_worker_is_recorded_replaced_and_matches_a_raising_client(run_root):
    _, reference = _run(
        run_root,
        "kill-inprocess",
        "simclr",
        "inprocess",
        faults=[{"client": 1, "round": 1, "action": "raise"}],
        min_clients=2,
    )
    _, final = _run(
        run_root,
        "kill-flower",
        "simclr",
        "flower",
        faults=[{"client": 1, "round": 1, "action": "exit"}],
        min_clients=2,
    )
    # Only round 2 lost client 1: the dead worker was replaced for round 3.
    assert [(f["round"], f["partition"]) for f in final["failures"]] == [(2, 1)]
    _assert_same(final["state"], reference["state"], "final")


def test_too_few_replies_stop_with_a_clear_message_and_a_restart_resumes(run_root):
    """All clients required: the fault stops the run in round 2; the restarted server
    resumes from round 1's checkpoint, replays round 2 and ends as a run without faults."""
    faults = [{"client": 1, "round": 1, "action": "raise"}]
    with pytest.raises(ClientFailure, match=r"round 2: only 2 of 3 clients replied \(minimum 3"):
        _run(run_root, "restart", "simclr", "flower", faults=faults)
    task, final = _run(
        run_root, "restart", "simclr", "flower", faults=faults
    )  # the fault fires once
    assert [(f["round"], f["partition"]) for f in final["failures"]] == [(2, 1)]
    _, clean = _run(run_root, "clean-inprocess", "simclr", "inprocess")
    _assert_same(final["state"], clean["state"], "final")
    assert load_final(task.work_dir)["rounds"] == 3


def test_server_killed_after_clients_trained_resumes_and_matches(run_root, monkeypatch):
    """The server dies in round 3 after every client saved its state for it; the restart replays
    round 3."""
    original = BenchFedAvg.aggregate_train

    def crash_in_round_3(self, server_round, replies):
        if self.round_offset + server_round == 3:
            raise ServerKilled("server killed")
        return original(self, server_round, replies)

    monkeypatch.setattr(BenchFedAvg, "aggregate_train", crash_in_round_3)
    with pytest.raises(ServerKilled):
        _run(run_root, "server-crash", "fcl", "inprocess")
    monkeypatch.setattr(BenchFedAvg, "aggregate_train", original)
    # The restarted server runs under Flower's runtime: the checkpoint does not care.
    task, final = _run(run_root, "server-crash", "fcl", "flower")
    reference_task, reference = _run(run_root, "fcl-inprocess", "fcl", "inprocess")
    _assert_same(final["state"], reference["state"], "final")
    for c, (a, b) in enumerate(
        zip(_client_states(task), _client_states(reference_task), strict=True)
    ):
        _assert_same(a["method"], b["method"], f"client {c}")
