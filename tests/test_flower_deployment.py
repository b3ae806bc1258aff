"""Flower's deployment runtime on loopback: a real SuperLink and SuperNode processes.

Set up as docs/DEPLOYMENT.md says: TLS, registered SuperNode keys only, the
SuperLink on 127.0.0.1 with the sites reaching only its Fleet API through the
gateway, partition claims signed by the sites' keys, long-running ClientApp
workers. One federation serves every test: where this host can make a network
namespace, the gateway listens on a veth address and a stranger in the namespace
holding only ``ca.crt`` tries to enroll, list the nodes and submit a run; an
enrolled rogue SuperNode claims site 0's partition in both runs. Both runs are
submitted at once (they share the SuperNodes). Last, site 1 is restarted in the
middle of a third run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.federated.certificates import make_supernode_key
from bench.federated.deployment import write_app_dir
from bench.federated.engine import run_task
from bench.federated.jobs import write_job
from bench.federated.loopback import (
    LocalFederation,
    NamespaceUnavailable,
    network_namespace,
    node_config,
    wait_for,
    write_cli_config,
)
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
def namespace():
    """(run_in, host_ip, None) of a namespace joined by a veth pair, or (None, 127.0.0.1, why)."""
    with contextlib.ExitStack() as stack:
        try:
            run_in, host_ip, _ = stack.enter_context(network_namespace())
        except NamespaceUnavailable as error:
            yield None, "127.0.0.1", f"no network namespace here ({error})"
            return
        yield run_in, host_ip, None


@pytest.fixture(scope="module")
def federation(tmp_path_factory, namespace):
    root = tmp_path_factory.mktemp("flower-dep")
    with LocalFederation(root / "federation", fleet_host=namespace[1]) as fed:
        # SQLite state, as a long-running SuperLink keeps it; both runs are in flight at once.
        fed.start_superlink(database=root / "state" / "superlink.db")
        fed.start_sites(SITES, root / "keys")
        # An enrolled node (its key registered) that claims site 0's partition with its own key.
        rogue, rogue_public = make_supernode_key(root / "keys", "rogue")
        fed.register(rogue_public)
        fed.start_supernode("rogue", rogue, node_config(0, SITES, private_key=rogue))
        wait_for(lambda: fed.supernodes_online() == SITES + 1, 180, "the rogue node to connect")
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
    unregistered = fed.start_supernode(
        "stranger", stranger, node_config(0, SITES), retries=1, worker=False
    )
    anonymous = fed.start_supernode(
        "anonymous", None, node_config(1, SITES), retries=1, worker=False
    )
    for name, process in (("stranger", unregistered), ("anonymous", anonymous)):
        assert process.wait(timeout=180) != 0, fed.log(name)
        assert "could not establish a connection to the SuperLink" in fed.log(name)
    assert fed.supernodes_online() == SITES + 1  # the sites and the enrolled rogue


PROBE = """
import ssl, httpx
try:
    tls = ssl.create_default_context(cafile={ca!r})
    print(httpx.post({url!r}, content=b"", verify=tls, timeout=20).status_code)
except httpx.TransportError:
    print(0)
"""


def _https(run_in, ca_cert, url: str) -> int:
    """The HTTP status of a POST to ``url`` (0: no connection), made where ``run_in`` runs."""
    code = PROBE.format(url=url, ca=str(ca_cert))
    done = subprocess.run(
        run_in([sys.executable, "-c", code]), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_the_control_api_is_not_served_on_the_fleet_address(federation):
    fed, root, _ = federation
    fleet, control = f"https://{fed.address}", f"https://{fed.control_address}"
    same_host = lambda command: command  # noqa: E731
    assert _https(same_host, fed.certs["ca_cert"], f"{fleet}/v1/control/list-nodes") == 404
    assert _https(same_host, fed.certs["ca_cert"], f"{fleet}/v1/runtime/acquire-task") == 404
    # the Fleet API answers there (refusing an unsigned call), the Control API on 127.0.0.1
    assert _https(same_host, fed.certs["ca_cert"], f"{fleet}/v1/fleet/get-run") not in (0, 404)
    assert _https(same_host, fed.certs["ca_cert"], f"{control}/v1/control/list-nodes") != 404
    # the flwr CLI pointed at the Fleet address gets nothing
    home = root / "cli-at-fleet"
    write_cli_config(home, "fleet", fed.address, fed.certs["ca_cert"])
    env = {**fed.env, "FLWR_HOME": str(home)}
    done = subprocess.run(
        ["flwr", "supernode", "ls", "fleet"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0, done.stdout


def test_a_stranger_with_only_the_ca_certificate_cannot_enroll_list_or_submit(
    federation, namespace
):
    run_in, host_ip, reason = namespace
    if run_in is None:
        pytest.skip(reason)
    fed, root, runs = federation
    ca = root / "stranger" / "ca.crt"  # all the stranger holds, besides its own key
    ca.parent.mkdir()
    ca.write_bytes(fed.certs["ca_cert"].read_bytes())
    _, public = make_supernode_key(root / "stranger", "rogue-site")
    fleet = f"https://{fed.address}"
    # It can reach the Fleet API from its namespace (premise), and nothing else.
    assert _https(run_in, ca, f"{fleet}/v1/fleet/get-run") not in (0, 404)
    assert _https(run_in, ca, f"{fleet}/v1/control/list-nodes") == 404
    control_port = fed.control_address.rsplit(":", 1)[1]
    assert _https(run_in, ca, f"https://{host_ip}:{control_port}/v1/control/list-nodes") == 0
    nodes_before = fed.flwr("supernode", "ls", fed.link_name, "--format", "json")
    runs_before = fed.flwr("ls", fed.link_name, "--format", "json")
    # The flwr CLI pointed at the address it can reach (the SuperLink's own port it cannot).
    home = root / "stranger" / "flwr-home"
    write_cli_config(home, "link", fed.address, ca)
    env = {**fed.env, "FLWR_HOME": str(home)}
    for command in (
        ["flwr", "supernode", "register", str(public), "link"],
        ["flwr", "supernode", "ls", "link"],
        ["flwr", "run", str(root / "app"), "link", "--run-config", 'job="/nonexistent"'],
    ):
        done = subprocess.run(run_in(command), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0, f"{command}: {done.stdout}"
    assert _node_ids(fed.flwr("supernode", "ls", fed.link_name, "--format", "json")) == (
        _node_ids(nodes_before)
    )
    assert len(json.loads(_json(fed.flwr("ls", fed.link_name, "--format", "json")))["runs"]) == (
        len(json.loads(_json(runs_before))["runs"])
    )


def _json(out: str) -> str:
    return out[out.index("{") :]


def _node_ids(out: str) -> list[str]:
    return sorted(node["node-id"] for node in json.loads(_json(out))["nodes"])


def test_an_enrolled_node_claiming_another_sites_partition_is_refused(federation):
    fed, _, runs = federation
    for run_id, spec in runs.values():
        fed.wait_run(run_id, RUN_TIMEOUT)
        claims = json.loads(Path(spec["work_dir"], "server", "claims.json").read_text())
        assert sorted(c["partition"] for c in claims["accepted"]) == list(range(SITES))
        assert [(r["partition"], "does not verify" in r["reason"]) for r in claims["refused"]] == [
            (0, True)
        ], claims


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


def _replies_sent(log: str, run_id: int) -> int:
    """Replies a SuperNode's log says it sent for ``run_id`` (its lines name the run first)."""
    current, sent = None, 0
    for line in log.splitlines():
        if "[RUN " in line:
            current = int(line.split("[RUN ", 1)[1].split(",")[0].split("]")[0])
        elif "Sent successfully" in line and current == run_id:
            sent += 1
    return sent


def test_a_site_restarted_mid_run_rejoins_and_the_result_is_unchanged(federation):
    """Site 1's SuperNode and worker are stopped and started again (same key) between two of
    its messages, while site 0 is still training: the round's next message waits for it at
    the SuperLink, the site comes back as the same node and the run ends as in one process."""
    fed, root, runs = federation
    for run_id, spec in runs.values():  # the fixture's runs use this site too: let them end
        _finished(fed, run_id, spec)
    config = {"pretrain": {"rounds": 3}}
    slow_site0 = [{"client": 0, "round": 1, "action": "sleep", "seconds": 30}]
    spec = _spec(root, "restart", "fcl", config=config, faults=slow_site0)
    job = write_job(root / "work" / "pretrain" / "restart" / "job.json", spec)
    run_id = fed.submit(write_app_dir(root / "app-restart"), job)
    # Site 1 has replied for round index 1 (query, round 0, round 1) and site 0 sleeps in it.
    wait_for(
        lambda: _replies_sent(fed.log("site1"), run_id) >= 3,
        RUN_TIMEOUT,
        "site 1's round-2 reply",
        describe=lambda: fed.log("site1")[-3000:],
    )
    fed.stop("site1-clientapp")
    fed.stop("site1")
    private = root / "keys" / "site1"
    fed.start_supernode("site1", private, node_config(1, SITES, private_key=private))
    assert not Path(spec["work_dir"], "server", "final.pt").exists()  # mid-run

    final = _finished(fed, run_id, spec)
    ids = [
        line.rsplit(" ", 1)[1] for line in fed.log("site1").splitlines() if "SuperNode ID:" in line
    ]
    assert len(ids) == 2 and ids[0] == ids[1]  # the same node: registered by its key
    assert final["failures"] == []
    _, reference = _in_process(root, "restart", "fcl", config=config)
    assert _same_state(final["state"], reference["state"])
