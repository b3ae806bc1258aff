"""The federated engine: FedAvg arithmetic, payload forwarding, determinism, resume."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.federated import apps
from bench.federated.engine import run_in_process
from bench.federated.strategy import ClientFailure
from bench.federated.task import FederatedTask, RoundResult


class ToyTask(FederatedTask):
    """Client c adds (c + 1) * (round + 1) to each weight; payloads record what each client saw."""

    def __init__(self, work_dir: Path, clients=3, rounds=3, aggregate=True, fail=None):
        self.work_dir, self.num_clients, self.num_rounds = Path(work_dir), clients, rounds
        self.aggregate, self.validates = aggregate, False
        self.fail = fail  # (client, round) that raises
        self.seen_payloads = {}

    def spec(self):
        return {"kind": "toy"}

    def initial_state(self):
        return {"w": torch.zeros(4)}

    def train_round(self, client, round_index, shared, payloads):
        if self.fail == (client, round_index):
            raise RuntimeError("injected failure")
        saved = self.load_client_state(client, round_index - 1)
        weights = shared["w"] if self.aggregate or saved is None else saved["w"]
        weights = weights + (client + 1) * (round_index + 1)
        self.save_client_state(client, round_index, {"w": weights})
        self.seen_payloads[(client, round_index)] = {
            k: v["from"].tolist() for k, v in payloads.items()
        }
        return RoundResult(
            {"w": weights},
            num_examples=client + 1,
            metrics={"loss_first": 0.0, "loss_last": 0.0, "loss_mean": 0.0},
            payload={"from": np.array([client, round_index], dtype=np.int64)},
        )


def expected_fedavg(clients, rounds):
    w = 0.0
    sizes = np.arange(1, clients + 1)
    for r in range(rounds):
        w = float(np.sum(sizes * (w + sizes * (r + 1))) / sizes.sum())
    return w


def test_fedavg_is_the_weighted_mean_of_client_updates(tmp_path):
    final = run_in_process(ToyTask(tmp_path))
    assert torch.allclose(final["state"]["w"], torch.full((4,), expected_fedavg(3, 3)))


def test_payloads_reach_every_other_client_and_never_the_sender(tmp_path):
    task = ToyTask(tmp_path)
    run_in_process(task)
    assert task.seen_payloads[(0, 0)] == {}
    for client in range(3):
        got = task.seen_payloads[(client, 2)]
        assert sorted(got) == [c for c in range(3) if c != client]
        assert all(value == [sender, 1] for sender, value in got.items())


def test_local_setting_keeps_each_clients_own_weights(tmp_path):
    task = ToyTask(tmp_path, aggregate=False)
    run_in_process(task)
    for client in range(3):
        assert torch.equal(
            task.load_client_state(client, 2)["w"], torch.full((4,), (client + 1) * 6.0)
        )


def test_a_failing_client_stops_the_run_with_a_clear_message(tmp_path):
    with pytest.raises(ClientFailure, match="client 1: RuntimeError: injected failure"):
        run_in_process(ToyTask(tmp_path, fail=(1, 1)))


def test_restarted_server_resumes_from_its_last_round(tmp_path, monkeypatch):
    uninterrupted = run_in_process(ToyTask(tmp_path / "a", rounds=4))
    task = ToyTask(tmp_path / "b", rounds=4)
    # The server dies after saving round 2: the client fails in round 2 (index 2).
    task.fail = (0, 2)
    with pytest.raises(ClientFailure):
        run_in_process(task)
    assert (tmp_path / "b" / "server" / "latest.txt").read_text() == "2"
    task.fail = None
    resumed = run_in_process(task)
    assert torch.equal(resumed["state"]["w"], uninterrupted["state"]["w"])
    assert [h["round"] for h in resumed["history"]] == [1, 2, 3, 4]


def test_apps_are_flower_objects():
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    assert isinstance(apps.client_app, ClientApp) and isinstance(apps.server_app, ServerApp)


class ReportingToyTask(ToyTask):
    """After the last round each client reports its own weights and what it was sent."""

    def client_outcome(self, client, summary, shared):
        if self.fail == (client, "finish"):
            raise RuntimeError("injected failure at the end")
        own = self.load_client_state(client, summary["rounds"] - 1)["w"]
        sent = None if shared is None else shared["w"].tolist()
        return {"w": own}, {"summary": summary, "sent": sent}


def test_the_closing_exchange_brings_each_clients_report_to_the_server(tmp_path):
    final = run_in_process(ReportingToyTask(tmp_path / "local", aggregate=False))
    assert [c["info"]["summary"] for c in final["clients"]] == [
        {"rounds": 3, "stopped": False, "best_round": None}
    ] * 3
    for client, outcome in enumerate(final["clients"]):
        assert outcome["info"]["sent"] is None  # each client keeps its own model
        assert torch.equal(outcome["arrays"]["w"], torch.full((4,), (client + 1) * 6.0))
    shared = run_in_process(ReportingToyTask(tmp_path / "fedavg"))
    assert [c["info"]["sent"] for c in shared["clients"]] == [shared["state"]["w"].tolist()] * 3


def test_a_client_failing_in_the_closing_exchange_fails_the_task(tmp_path):
    task = ReportingToyTask(tmp_path, fail=(1, "finish"))
    with pytest.raises(ClientFailure, match="finishing: client 1: .*injected failure at the end"):
        run_in_process(task)
    # The rounds are in the checkpoint: running it again repeats only the closing exchange.
    task.fail = (0, 0)  # would fail the task if any round were trained again
    final = run_in_process(task)
    assert final["rounds"] == 3 and len(final["clients"]) == 3
