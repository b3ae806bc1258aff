"""The command lines of a deployment's processes, as docs/DEPLOYMENT.md sets them up.

One place for the flags that make a federation safe (SuperLink on 127.0.0.1 behind the
Fleet gateway, SuperNode authentication, SuperExec shared secrets, process isolation
with bench's long-running ClientApp worker), used by ``LocalFederation`` and by
whatever starts a real federation. Every function returns an argv list.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.federated.supernode import DEFAULT_POLL


def _tls(certs: dict[str, Path]) -> list[str]:
    return [
        "--ssl-certfile",
        str(certs["server_cert"]),
        "--ssl-keyfile",
        str(certs["server_key"]),
        "--ssl-ca-certfile",
        str(certs["ca_cert"]),
    ]


def superlink_command(
    certs: dict[str, Path], control_address: str, secret: Path, database: Path | None = None
) -> list[str]:
    """``flower-superlink`` on ``control_address`` (keep it 127.0.0.1:PORT: its one port also
    serves the unauthenticated Control API); ServerApps come from a SuperExec holding ``secret``.
    ``certs``: ``make_certificates``' paths."""
    host, _, port = control_address.rpartition(":")
    return [
        "flower-superlink",
        *_tls(certs),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(secret),
        "--host",
        host,
        "--port",
        port,
        *(["--database", str(database)] if database is not None else []),
    ]


def superexec_command(control_address: str, ca_cert: Path, secret: Path) -> list[str]:
    """The coordinator's ``flower-superexec``: starts each run's ServerApp."""
    return [
        "flower-superexec",
        "--runtime-api-address",
        control_address,
        "--root-certificates",
        str(ca_cert),
        "--superexec-auth-secret-file",
        str(secret),
    ]


def gateway_command(listen: str, control_address: str, certs: dict[str, Path]) -> list[str]:
    """The Fleet gateway on ``listen`` (the address the sites reach)."""
    return [
        sys.executable,
        "-m",
        "bench.federated.fleet_gateway",
        "--listen",
        listen,
        "--superlink",
        control_address,
        *_tls(certs),
    ]


def supernode_command(
    fleet_address: str,
    ca_cert: Path,
    node_config: str,
    runtime_port: int,
    secret: Path,
    private_key: Path | None,
    poll: float | None = DEFAULT_POLL,
) -> list[str]:
    """A site's SuperNode in process isolation (its ClientApps come from ``worker_command``).

    ``poll``: seconds between an idle SuperNode's requests (``bench.federated.supernode``,
    which reads it from ``BENCH_SUPERNODE_POLL``: set that in the environment); None runs
    Flower's own ``flower-supernode`` (3 s).
    """
    program = (
        ["flower-supernode"]
        if poll is None
        else [sys.executable, "-m", "bench.federated.supernode"]
    )
    command = [
        *program,
        "--superlink",
        fleet_address,
        "--root-certificates",
        str(ca_cert),
        "--node-config",
        node_config,
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(secret),
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
    ]
    if private_key is not None:
        command += ["--auth-supernode-private-key", str(private_key)]
    return command


def worker_command(runtime_port: int, secret: Path) -> list[str]:
    """The site's long-running ClientApp worker, for the SuperNode on ``runtime_port``."""
    return [
        sys.executable,
        "-m",
        "bench.federated.clientapp_worker",
        "--runtime-api-address",
        f"127.0.0.1:{runtime_port}",
        "--superexec-auth-secret-file",
        str(secret),
    ]
