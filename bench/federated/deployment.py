"""Flower's deployment runtime: the app folder, certificates and keys, and the commands to run.

One host runs ``flower-superlink`` (and the ServerApp it launches); each site
runs one ``flower-supernode`` with its own ``partition-id`` and job file. See
docs/DEPLOYMENT.md. ``python -m bench.federated.deployment --help`` writes the
app folder, the TLS certificates and the SuperNode keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_PYPROJECT = """# The Flower app: bench's ClientApp and ServerApp, for `flwr run` against a SuperLink.
# The app holds no code: every host (SuperLink and each site's SuperNode) must have the
# bench-fedssl package installed, and runs with runtime dependency installation off.
# See docs/DEPLOYMENT.md.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "bench-fedssl-app"
version = "0.1.0"
description = "bench: federated self-supervised pretraining and fine-tuning (ClientApp and ServerApp)"
license = "Apache-2.0"
dependencies = ["flwr==1.41.0"]

[tool.flwr.app]
publisher = "bench"

[tool.flwr.app.components]
serverapp = "bench.federated.apps:server_app"
clientapp = "bench.federated.apps:client_app"

[tool.flwr.app.config]
# The job file (JSON) the runner wrote: task kind, config, run folder. A site may
# point at its own copy with its SuperNode's node config `job`.
job = ""
"""


def write_app_dir(folder: Path) -> Path:
    """A Flower app folder (only ``pyproject.toml``: the apps come from the installed bench)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "pyproject.toml"
    if not target.exists() or target.read_text() != APP_PYPROJECT:
        target.write_text(APP_PYPROJECT)
    return folder


# -- TLS certificates and SuperNode keys -------------------------------------
def make_certificates(folder: Path, hosts: list[str], days: int = 365) -> dict[str, Path]:
    """A CA and a server certificate for the SuperLink, valid for ``hosts`` (names or IPs).

    Writes ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key`` under ``folder``.
    Uses the ``cryptography`` package (a Flower dependency), else the openssl CLI.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "ca_cert": folder / "ca.crt",
        "ca_key": folder / "ca.key",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server.key",
    }
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _certificates_openssl(paths, hosts, days)
    else:
        _certificates_cryptography(paths, hosts, days)
    for key in ("ca_key", "server_key"):
        paths[key].chmod(0o600)
    return paths


def _certificates_cryptography(paths: dict[str, Path], hosts: list[str], days: int) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def key_pem(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths["ca_key"].write_bytes(key_pem(ca_key))
    paths["ca_cert"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["server_key"].write_bytes(key_pem(server_key))
    paths["server_cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))


def _certificates_openssl(paths: dict[str, Path], hosts: list[str], days: int) -> None:
    import ipaddress
    import subprocess
    import tempfile

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    san = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            san.append(f"IP:{host}")
        except ValueError:
            san.append(f"DNS:{host}")
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        str(days),
        "-subj",
        "/CN=bench federation CA",
        "-keyout",
        str(paths["ca_key"]),
        "-out",
        str(paths["ca_cert"]),
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "server.csr", Path(tmp) / "server.ext"
        ext.write_text(
            f"subjectAltName={','.join(san)}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        )
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={hosts[0]}",
            "-keyout",
            str(paths["server_key"]),
            "-out",
            str(csr),
        )
        run(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(paths["ca_cert"]),
            "-CAkey",
            str(paths["ca_key"]),
            "-CAcreateserial",
            "-days",
            str(days),
            "-extfile",
            str(ext),
            "-out",
            str(paths["server_cert"]),
        )


def make_supernode_key(folder: Path, name: str) -> tuple[Path, Path]:
    """An EC (NIST P-384) key pair in OpenSSH format for SuperNode authentication.

    The private key stays at the site (``flower-supernode --auth-supernode-private-key``);
    the public key is registered with the SuperLink (``flwr supernode register``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / name, folder / f"{name}.pub"
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        import subprocess

        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ecdsa",
                "-b",
                "384",
                "-N",
                "",
                "-C",
                name,
                "-f",
                str(private),
            ],
            check=True,
        )
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            + f" {name}\n".encode()
        )
    private.chmod(0o600)
    return private, public


# -- running a federation's processes (loopback tests, local trials) ---------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower's commands: their own FLWR_HOME, no runtime dependency installation."""
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env.setdefault(
        "FLWR_TELEMETRY_ENABLED", "0"
    )  # local trials and tests report nothing to flower.ai
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def write_cli_config(flwr_home: Path, name: str, address: str, root_certificates: Path) -> Path:
    """The Flower CLI's connection to a SuperLink (``$FLWR_HOME/config.toml``)."""
    flwr_home = Path(flwr_home)
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
        f'address = "{address}"\nroot-certificates = "{Path(root_certificates).resolve()}"\n'
    )
    return path


def node_config(partition: int, num_partitions: int, job: Path | None = None) -> str:
    """``--node-config`` of a site's SuperNode: its partition, and optionally its own job file."""
    text = f"partition-id={partition} num-partitions={num_partitions}"
    return text + (f' job="{Path(job).resolve()}"' if job is not None else "")


class LocalFederation:
    """A SuperLink and SuperNodes as local processes, with TLS and SuperNode authentication.

    For loopback tests and trials on one machine; docs/DEPLOYMENT.md shows the
    same commands for real sites. Every process started here is stopped by
    ``close()`` (with its children), also when used as a context manager.
    """

    def __init__(self, folder: Path, *, host: str = "127.0.0.1"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.flwr_home = self.folder / "flwr-home"
        self.env = flower_env(self.flwr_home)
        self.certs = make_certificates(self.folder / "certs", [host, "localhost"])
        self.port = free_port()
        self.address = f"{host}:{self.port}"
        self.link_name = "bench"
        write_cli_config(self.flwr_home, self.link_name, self.address, self.certs["ca_cert"])
        self.processes: dict[str, subprocess.Popen] = {}

    # -- processes ------------------------------------------------------
    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = self.folder / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.folder
            )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.folder / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_superlink(self, timeout: float = 120.0, database: Path | None = None) -> None:
        """Starts the SuperLink; its state is in memory unless ``database`` (SQLite) is given."""
        self._start(
            "superlink",
            [
                "flower-superlink",
                "--ssl-certfile",
                str(self.certs["server_cert"]),
                "--ssl-keyfile",
                str(self.certs["server_key"]),
                "--ssl-ca-certfile",
                str(self.certs["ca_cert"]),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host",
                self.host,
                "--port",
                str(self.port),
                *(["--database", str(database)] if database else []),
            ],
        )
        wait_for(
            lambda: "Uvicorn running on" in self.log("superlink"),
            timeout,
            "the SuperLink to start",
            self.processes["superlink"],
            lambda: self.log("superlink"),
        )

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        """Runs the ``flwr`` CLI against this SuperLink; returns its stdout."""
        done = subprocess.run(
            ["flwr", *args],
            check=False,
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"flwr {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def register(self, public_key: Path) -> int:
        out = self.flwr(
            "supernode", "register", str(public_key), self.link_name, "--format", "json"
        )
        return int(json.loads(out[out.index("{") :])["node-id"])

    def start_supernode(
        self, name: str, private_key: Path | None, config: str, *, retries: int | None = None
    ) -> subprocess.Popen:
        command = [
            "flower-supernode",
            "--superlink",
            self.address,
            "--root-certificates",
            str(self.certs["ca_cert"]),
            "--node-config",
            config,
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ]
        if private_key is not None:
            command += ["--auth-supernode-private-key", str(private_key)]
        if retries is not None:
            command += ["--max-retries", str(retries), "--max-wait-time", "15"]
        return self._start(name, command)

    def start_sites(self, sites: int, keys_dir: Path, timeout: float = 180.0) -> None:
        """Registers a key pair per site and starts its SuperNode (partition ``i`` of ``sites``);
        returns when all are online."""
        for site in range(sites):
            private, public = make_supernode_key(keys_dir, f"site{site}")
            self.register(public)
            self.start_supernode(f"site{site}", private, node_config(site, sites))
        wait_for(
            lambda: self.supernodes_online() == sites,
            timeout,
            "the SuperNodes to connect",
            describe=lambda: self.log("site0")[-2000:],
        )

    def supernodes_online(self) -> int:
        out = self.flwr("supernode", "ls", self.link_name, "--format", "json")
        nodes = json.loads(out[out.index("{") :]).get("nodes", [])
        return sum(1 for node in nodes if node.get("status") == "online")

    def submit(self, app_dir: Path, job: Path) -> int:
        """Starts a run of the bench app on ``job``; returns its run id."""
        out = self.flwr(
            "run",
            str(app_dir),
            self.link_name,
            "--run-config",
            f'job="{Path(job).resolve()}"',
            "--format",
            "json",
        )
        return int(json.loads(out[out.index("{") :])["run-id"])

    def run_status(self, run_id: int) -> str:
        out = self.flwr("ls", self.link_name, "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out[out.index("{") :]).get("runs", [])
        return runs[0]["status"] if runs else "unknown"

    def wait_run(self, run_id: int, timeout: float) -> str:
        """Waits for a run to finish; returns its final status (e.g. ``finished:completed``)."""
        status = wait_for(
            lambda: (s := self.run_status(run_id)).startswith("finished") and s,
            timeout,
            f"run {run_id} to finish",
            None,
            lambda: self.log("superlink")[-3000:],
            poll=3.0,
        )
        return status

    def stop(self, name: str, grace: float = 10.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_process_tree(process.pid, grace)

    def close(self) -> None:
        for name in list(self.processes)[::-1]:
            self.stop(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for(predicate, timeout: float, what: str, process=None, describe=None, poll: float = 0.5):
    """Polls ``predicate`` until it returns a true value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"gave up waiting for {what}: the process exited ({process.returncode})\n"
                + (describe() if describe else "")
            )
        time.sleep(poll)
    raise TimeoutError(
        f"gave up waiting for {what} after {timeout:g} s\n" + (describe() if describe else "")
    )


def stop_process_tree(pid: int, grace: float = 10.0) -> None:
    """Stops a process and every process it started (SIGTERM, then SIGKILL after ``grace`` s)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    tree = [root, *root.children(recursive=True)]
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


# -- command line ----------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.federated.deployment",
        description="Files for running bench on Flower's deployment runtime (see docs/DEPLOYMENT.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    certs = commands.add_parser("certificates", help="a CA and the SuperLink's TLS certificate")
    certs.add_argument(
        "--out", required=True, type=Path, help="folder for ca.crt, ca.key, server.pem, server.key"
    )
    certs.add_argument(
        "--host",
        action="append",
        required=True,
        help="a name or IP address the SuperNodes use to reach the SuperLink (repeatable)",
    )
    certs.add_argument("--days", type=int, default=365)
    key = commands.add_parser("supernode-key", help="a site's SuperNode authentication key pair")
    key.add_argument("--out", required=True, type=Path)
    key.add_argument("--name", required=True, help="file name, e.g. the site's name")
    app = commands.add_parser("app", help="the Flower app folder for `flwr run`")
    app.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "certificates":
        for label, path in make_certificates(args.out, args.host, args.days).items():
            print(f"{label:12s} {path}")
    elif args.command == "supernode-key":
        private, public = make_supernode_key(args.out, args.name)
        print(f"private key (stays at the site) {private}\npublic key (register it)       {public}")
    else:
        print(write_app_dir(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
