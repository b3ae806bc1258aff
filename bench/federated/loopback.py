"""A SuperLink and SuperNodes as local processes (loopback tests and trials on one machine)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.federated.certificates import make_certificates, make_supernode_key


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower's commands: their own FLWR_HOME, no runtime dependency install."""
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


def split_folder_into_sites(full: Path, root: Path, sites: int) -> list[Path]:
    """Copies each patient of an ACDC-layout folder into one of ``sites`` folders (round robin
    by patient id): disjoint site folders for trials and tests of a federation."""
    import shutil

    folders = [Path(root) / f"data-site{k}" for k in range(sites)]
    patients = sorted(Path(full).glob("database/*/patient*"), key=lambda p: p.name)
    for index, patient in enumerate(patients):
        target = folders[index % sites] / "database" / patient.parent.name / patient.name
        shutil.copytree(patient, target)
    return folders
