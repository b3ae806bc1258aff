"""Keys, certificates and partition claims of a deployment (fast: no Flower processes)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from bench.federated import certificates
from bench.federated.apps import client_app, map_nodes_to_partitions
from bench.federated.certificates import make_certificates, make_secret, make_supernode_key
from bench.federated.claims import (
    ClaimChecker,
    PartitionKeysError,
    read_partition_keys,
    sign_claim,
    verify_claim,
    write_partition_keys,
)
from bench.federated.grid import InProcessGrid


@pytest.fixture
def umask_zero():
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def modes_at_first_byte(monkeypatch):
    """The mode of every private file at the moment its first byte is written."""
    seen = {}
    real_fdopen = os.fdopen

    def spying_fdopen(descriptor, *args, **kwargs):
        seen[os.readlink(f"/proc/self/fd/{descriptor}")] = stat.S_IMODE(
            os.fstat(descriptor).st_mode
        )
        return real_fdopen(descriptor, *args, **kwargs)

    monkeypatch.setattr(certificates.os, "fdopen", spying_fdopen)
    return seen


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_are_0600_from_the_first_byte_whatever_the_umask(
    tmp_path, umask_zero, modes_at_first_byte
):
    paths = make_certificates(tmp_path / "certs", ["127.0.0.1"])
    private, _ = make_supernode_key(tmp_path / "keys", "site0")
    secret = make_secret(tmp_path / "secret")
    for key in (paths["ca_key"], paths["server_key"], private, secret):
        assert modes_at_first_byte[str(key.resolve())] == 0o600, key
        assert _mode(key) == 0o600, key
    # An existing key is never overwritten.
    with pytest.raises(FileExistsError):
        make_supernode_key(tmp_path / "keys", "site0")
    with pytest.raises(FileExistsError):
        make_certificates(tmp_path / "certs", ["127.0.0.1"])


def test_the_ca_key_is_kept_apart_from_what_sites_receive(tmp_path):
    paths = make_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
    for_sites = paths["ca_cert"].parent
    assert sorted(p.name for p in for_sites.iterdir()) == ["ca.crt"]
    assert paths["ca_key"].parent != for_sites and paths["server_key"].parent != for_sites
    for folder in (paths["ca_key"].parent, paths["server_key"].parent):
        assert _mode(folder) == 0o700
    assert paths["ca_key"].parent != paths["server_key"].parent  # the CA key can go offline


def _keys(tmp_path, *names):
    return [make_supernode_key(tmp_path / "keys", name) for name in names]


def test_a_claim_verifies_only_for_its_key_run_node_partition_and_nonce(tmp_path):
    (site0, site0_pub), (site1, _) = _keys(tmp_path, "site0", "site1")
    public = site0_pub.read_text()
    nonce = os.urandom(32)
    signature = sign_claim(site0, 7, 1234, 0, nonce)
    assert verify_claim(public, signature, 7, 1234, 0, nonce)
    assert not verify_claim(public, sign_claim(site1, 7, 1234, 0, nonce), 7, 1234, 0, nonce)
    assert not verify_claim(public, signature, 8, 1234, 0, nonce)  # another run
    assert not verify_claim(public, signature, 7, 999, 0, nonce)  # another node
    assert not verify_claim(public, signature, 7, 1234, 1, nonce)  # another partition
    assert not verify_claim(public, signature, 7, 1234, 0, os.urandom(32))  # another nonce
    assert not verify_claim(public, "00" * 10, 7, 1234, 0, nonce)


def test_the_checker_refuses_unknown_unsigned_forged_and_duplicate_claims(tmp_path):
    (site0, pub0), (site1, pub1), (rogue, _) = _keys(tmp_path, "site0", "site1", "rogue")
    keys = read_partition_keys(write_partition_keys(tmp_path / "pk.json", {0: pub0, 1: pub1}))
    nonce = os.urandom(32)
    checker = ClaimChecker(keys, run_id=3, nonce=nonce)
    assert checker.check(11, 0, sign_claim(site0, 3, 11, 0, nonce)) is None
    assert "not in the partition keys" in checker.check(12, 5, sign_claim(rogue, 3, 12, 5, nonce))
    assert "no signature" in checker.check(13, 1, None)
    assert "does not verify" in checker.check(14, 1, sign_claim(rogue, 3, 14, 1, nonce))
    # the real site's signature made for another node cannot be replayed
    assert "does not verify" in checker.check(15, 1, sign_claim(site1, 3, 99, 1, nonce))
    assert "duplicate claim" in checker.check(16, 0, sign_claim(site0, 3, 16, 0, nonce))
    assert checker.check(17, 1, sign_claim(site1, 3, 17, 1, nonce)) is None
    assert checker.accepted == {11: 0, 17: 1}
    assert [r["node_id"] for r in checker.refused] == [12, 13, 14, 15, 16]


def test_partition_keys_files_are_checked(tmp_path):
    (_, pub0), (_, pub1) = _keys(tmp_path, "a", "b")
    path = write_partition_keys(tmp_path / "pk.json", {1: pub1, 0: pub0})
    data = json.loads(path.read_text())
    assert data["format"] == "bench-partition-keys" and list(data["partitions"]) == ["0", "1"]
    with pytest.raises(PartitionKeysError, match="same key"):
        write_partition_keys(tmp_path / "same.json", {0: pub0, 1: pub0})
    with pytest.raises(PartitionKeysError, match="partition 1: not an OpenSSH public key"):
        write_partition_keys(tmp_path / "bad.json", {0: pub0, 1: "ssh-rsa nonsense"})
    (tmp_path / "other.json").write_text('{"partitions": {}}')
    with pytest.raises(PartitionKeysError, match="other.json: not a bench-partition-keys file"):
        read_partition_keys(tmp_path / "other.json")


def test_the_server_maps_only_proven_claims(tmp_path):
    """The ServerApp's query round with real Flower messages: a node claiming another site's
    partition with its own key is refused, the true holders are mapped."""
    (site0, pub0), (site1, pub1), (rogue, _) = _keys(tmp_path, "site0", "site1", "rogue")
    keys = read_partition_keys(write_partition_keys(tmp_path / "pk.json", {0: pub0, 1: pub1}))
    grid = InProcessGrid(client_app, 3, {"job": str(tmp_path / "job.json")})
    nodes = sorted(grid.contexts)
    for node, (partition, key) in zip(nodes, [(1, rogue), (0, site0), (1, site1)], strict=True):
        grid.contexts[node].node_config.update({"partition-id": partition, "private-key": str(key)})
    checker = ClaimChecker(keys, run_id=grid.run.run_id, nonce=os.urandom(32))
    assert map_nodes_to_partitions(grid, 2, claims=checker) == {nodes[1]: 0, nodes[2]: 1}
    assert [(r["node_id"], r["partition"]) for r in checker.refused] == [(nodes[0], 1)]
    # Without keys (one machine) a duplicate partition id stops the run, as before.
    grid.contexts[nodes[0]].node_config["partition-id"] = 0
    with pytest.raises(RuntimeError, match="one node for each partition"):
        map_nodes_to_partitions(grid, 2)


def _fab(files: dict[str, bytes]) -> bytes:
    from flwr.cli.build import build_fab_from_files

    return build_fab_from_files(files)[0]


def test_sites_run_only_bench_s_app_without_code():
    from bench.federated.clientapp_worker import AppNotPinned, check_pinned_fab
    from bench.federated.deployment import app_pyproject

    pyproject = app_pyproject().encode()
    check_pinned_fab(_fab({"pyproject.toml": pyproject}))
    with pytest.raises(AppNotPinned, match="carries files"):
        check_pinned_fab(_fab({"pyproject.toml": pyproject, "evil.py": b"import os\n"}))
    other = pyproject.replace(b"bench.federated.apps:client_app", b"evil:client_app")
    with pytest.raises(AppNotPinned, match="names"):
        check_pinned_fab(_fab({"pyproject.toml": other}))
    with pytest.raises(AppNotPinned, match="unreadable"):
        check_pinned_fab(b"not a zip")


def test_the_gateway_forwards_fleet_calls_only():
    from bench.federated.fleet_gateway import is_forwarded

    assert is_forwarded("POST", "/v1/fleet/pull-messages")
    for method, path in [
        ("POST", "/v1/control/list-nodes"),
        ("POST", "/v1/control/create-node-cli"),
        ("POST", "/v1/runtime/acquire-task"),
        ("GET", "/v1/fleet/pull-messages"),
        ("POST", "/v1/fleet/../control/list-nodes"),
        ("POST", "/v1/fleet/pull-messages/../../control/list-nodes"),
        ("GET", "/docs"),
    ]:
        assert not is_forwarded(method, path), path


def test_the_supernode_wrapper_caps_the_waits_of_flower_s_loop(monkeypatch):
    import inspect

    from flwr.supernode import start_client_internal

    from bench.federated import supernode

    # The pinned Flower's loop sleeps 3 s when idle: the wrapper's reason to exist.
    assert "time.sleep(3)" in inspect.getsource(start_client_internal)
    slept = []
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    monkeypatch.setattr(start_client_internal, "time", start_client_internal.time)
    supernode.shorten_supernode_polls(0.25)
    start_client_internal.time.sleep(3)  # the idle poll: a request to the SuperLink
    start_client_internal.time.sleep(0.5)  # a look at its own state for a reply
    start_client_internal.time.sleep(0.01)
    assert slept == [0.25, supernode.LOCAL_WAIT, 0.01]
    assert start_client_internal.time.monotonic is supernode.time.monotonic


def test_a_deployment_run_without_partition_keys_is_refused(tmp_path):
    from flwr.app import Context, RecordDict

    from bench.federated.apps import claim_checker

    def context(run_config):
        return Context(
            run_id=4, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
        )

    with pytest.raises(PartitionKeysError, match="names no partition keys"):
        claim_checker(context({"job": "j.json", "partition-keys": ""}), deployed=True)
    assert claim_checker(context({"job": "j.json"}), deployed=False) is None  # one machine
    (_, pub0), (_, pub1) = _keys(tmp_path, "s0", "s1")
    keys = write_partition_keys(tmp_path / "pk.json", {0: pub0, 1: pub1})
    checker = claim_checker(context({"job": "j.json", "partition-keys": str(keys)}), True)
    assert checker.run_id == 4 and sorted(checker.partition_keys) == [0, 1]


def test_the_pull_back_off_starts_short_and_an_object_pushed_late_still_arrives(monkeypatch):
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

    from bench.federated.flower_waits import INITIAL_BACKOFF, shorten_pull_backoff

    functions = (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree)
    for function in functions:  # restored after the test
        monkeypatch.setitem(function.__kwdefaults__, "initial_backoff", 1)
    shorten_pull_backoff()
    assert [f.__kwdefaults__["initial_backoff"] for f in functions] == [INITIAL_BACKOFF] * 2
    tries = []

    def pull(object_id):  # the sender is still pushing at the first ask
        tries.append(object_id)
        if len(tries) == 1:
            raise ObjectUnavailableError(object_id)
        return b"content"

    assert inflatable_utils.pull_objects(["a"], pull) == {"a": b"content"}
    assert tries == ["a", "a"]
