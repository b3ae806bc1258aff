"""Client failures, round minimums, timeouts and resuming, on the in-process engine (fast)."""

from __future__ import annotations

import importlib
import json
import tomllib

import pytest
import torch
from flwr.app import Context, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from bench.config import ConfigError, load_config
from bench.datasets.errors import DataError
from bench.federated import apps
from bench.federated.deployment import write_app_dir
from bench.federated.engine import run_task
from bench.federated.grid import InProcessGrid
from bench.federated.strategy import ClientFailure, summarize
from bench.synthetic_tasks import build_synthetic_task, synthetic_spec

CLIENTS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _task(tmp_path, name, *, method="simclr", faults=None, min_clients=0, rounds=3):
    spec = synthetic_spec(
        tmp_path / name,
        method,
        clients=CLIENTS,
        config={"pretrain": {"rounds": rounds}, "run": {"min_clients": min_clients}},
        faults=faults,
    )
    return build_synthetic_task(spec)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_app_folder_names_the_installed_apps(tmp_path):
    """The shipped app's pyproject.toml (package data) points at bench's ClientApp and ServerApp."""
    app = tomllib.loads((write_app_dir(tmp_path / "app") / "pyproject.toml").read_text())
    components = app["tool"]["flwr"]["app"]["components"]
    for kind, target in (("serverapp", ServerApp), ("clientapp", ClientApp)):
        module, name = components[kind].split(":")
        assert isinstance(getattr(importlib.import_module(module), name), target)


def test_min_clients_and_timeout_options_are_validated():
    assert load_config("tiny")["run"]["min_clients"] == 0
    with pytest.raises(ConfigError, match="run.min_clients"):
        load_config("tiny", ["run.min_clients=-1"])
    with pytest.raises(ConfigError, match="round_timeout"):
        load_config("tiny", ["run.flower.round_timeout=0"])


def test_summaries_take_the_message_out_of_runtime_wrapping():
    ray_reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:"
        "<'\x1b[36mray::ClientAppActor.run()"
        "\x1b[39m (pid=1)\n  File x\nRuntimeError: boom\n\nException ClientAppException occurred. "
        "Message: boom at client 1'>"
    )
    assert summarize(ray_reason) == "boom at client 1"
    assert (
        summarize("ValueError: bad\nTraceback (most recent call last):\n  File y\nValueError: bad")
        == "ValueError: bad"
    )
    assert summarize("ClientApp stopped responding.") == "ClientApp stopped responding."


def test_raising_client_is_recorded_and_the_others_are_averaged(tmp_path):
    task = _task(
        tmp_path, "raise", faults=[{"client": 1, "round": 1, "action": "raise"}], min_clients=2
    )
    final = run_task(task, task.config["run"])
    assert [(f["round"], f["stage"], f["partition"]) for f in final["failures"]] == [
        (2, "train", 1)
    ]
    assert "injected fault" in final["failures"][0]["summary"]
    history = {entry["round"]: sorted(entry["train"]) for entry in final["history"]}
    assert history == {1: [0, 1, 2], 2: [0, 2], 3: [0, 1, 2]}
    # Client 1 missed round 2 and went on in round 3 from its round-1 state.
    assert not task.client_state_path(1, 1).exists()
    assert task.client_state_path(1, 2).exists()


def test_too_few_replies_stop_and_a_restart_resumes_to_the_uninterrupted_result(tmp_path):
    faults = [{"client": 2, "round": 1, "action": "raise"}]
    task = _task(tmp_path, "stop", faults=faults)
    with pytest.raises(
        ClientFailure,
        match=r"round 2: only 2 of 3 clients replied \(minimum 3.*client 2: .*injected",
    ):
        run_task(task, task.config["run"])
    assert (task.work_dir / "server" / "latest.txt").read_text() == "1"
    final = run_task(
        _task(tmp_path, "stop", faults=faults), task.config["run"]
    )  # a new process, say
    assert [(f["round"], f["partition"]) for f in final["failures"]] == [(2, 2)]
    clean_task = _task(tmp_path, "clean")
    clean = run_task(clean_task, clean_task.config["run"])
    assert _same(final["state"], clean["state"])


def test_missing_reply_counts_as_a_timeout_failure(tmp_path, monkeypatch):
    """A reply that never comes (a grid that drops client 0's round-2 reply) is a failure, not a
    hang."""
    task = _task(tmp_path, "timeout", min_clients=2, rounds=2)
    original = InProcessGrid._deliver

    def deliver(self, message):
        reply = original(self, message)
        partition = self.contexts[message.metadata.dst_node_id].node_config["partition-id"]
        if (
            message.metadata.message_type == MessageType.TRAIN
            and partition == 0
            and message.content["config"]["round-index"] == 1
        ):
            return None
        return reply

    def push(self, messages):
        ids = []
        for message in messages:
            reply = self._deliver(message)
            if reply is not None:
                ids.append(str(len(self._replies)))
                self._replies[ids[-1]] = reply
        return ids

    monkeypatch.setattr(InProcessGrid, "_deliver", deliver)
    monkeypatch.setattr(InProcessGrid, "push_messages", push)
    final = run_task(task, task.config["run"])
    assert [(f["round"], f["partition"]) for f in final["failures"]] == [(2, 0)]
    assert final["failures"][0]["summary"] == "no reply within the round timeout (3600 s)"


def test_client_state_files_keep_what_a_replay_needs(tmp_path):
    task = _task(tmp_path, "files")
    for round_index in range(4):
        task.save_client_state(0, round_index, {"round": round_index})
    assert task._saved_rounds(0) == [2, 3]
    assert task.load_client_state(0, 3)["round"] == 3  # this round's own file
    # A missing file for a round the client completed is an error naming the file...
    with pytest.raises(DataError, match="round0004.pt"):
        task.load_client_state(0, 4)
    # ...but round 4, recorded as failed (nothing saved), goes on from round 3's state.
    failures = [{"round": 5, "stage": "train", "partition": 0}, {"round": 3, "partition": 1}]
    (task.work_dir / "server").mkdir(parents=True, exist_ok=True)
    (task.work_dir / "server" / "failures.json").write_text(json.dumps(failures))
    assert task.load_client_state(0, 4)["round"] == 3
    task.save_client_state(0, 5, {"round": 5})
    assert task._saved_rounds(0) == [3, 5]  # round 5 started from 3: kept for a replay of round 5
    # a client that failed before completing any round starts afresh
    assert task.load_client_state(1, 2) is None


def test_sites_may_name_their_own_job_file(tmp_path):
    task = _task(tmp_path, "site")
    context = Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": 0, "job": "/site/job.json"},
        state=RecordDict(),
        run_config={"job": "/run/job.json"},
    )
    assert apps._job(context) == "/site/job.json"
    context.node_config.pop("job")
    assert apps._job(context) == "/run/job.json"
    assert apps.fault_settings(task) == (CLIENTS, 3600.0)
    task.config["run"]["min_clients"] = 2
    assert apps.fault_settings(task) == (2, 3600.0)
