"""A SuperLink and SuperNodes as local processes (loopback tests and trials on one machine)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.federated.certificates import (
    make_certificates,
    make_secret,
    make_supernode_key,
    private_folder,
)
from bench.federated.claims import write_partition_keys
from bench.federated.commands import (
    gateway_command,
    superexec_command,
    superlink_command,
    supernode_command,
    worker_command,
)
from bench.federated.supernode import POLL_ENV


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower's commands: their own FLWR_HOME, no runtime dependency install,
    and the app processes (``flwr-serverapp``, ``flwr-clientapp``) run by this Python, so they
    import the same bench as the caller."""
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env.setdefault(
        "FLWR_TELEMETRY_ENABLED", "0"
    )  # local trials and tests report nothing to flower.ai
    folders = [str(app_commands(Path(flwr_home) / "bin")), str(Path(sys.executable).parent)]
    # Flower's other commands beside its flower-superlink, for a virtual environment that
    # links only some of them.
    link = shutil.which("flower-superlink", path=folders[1]) or shutil.which("flower-superlink")
    if link:
        folders.append(str(Path(os.path.realpath(link)).parent))
    env["PATH"] = os.pathsep.join([*dict.fromkeys(folders), env.get("PATH", "")])
    return env


APP_COMMANDS = ("flwr-serverapp", "flwr-clientapp")


def app_commands(folder: Path) -> Path:
    """``folder`` holding Flower's app commands as scripts that run this Python."""
    from importlib.metadata import entry_points

    folder.mkdir(parents=True, exist_ok=True)
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    for name in APP_COMMANDS:
        module, _, function = scripts[name].partition(":")
        script = folder / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
        script.chmod(0o755)
    return folder


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


def node_config(
    partition: int,
    num_partitions: int,
    job: Path | None = None,
    private_key: Path | None = None,
) -> str:
    """``--node-config`` of a site's SuperNode: its partition, optionally its own job file and
    the private key that signs its partition claims."""
    text = f"partition-id={partition} num-partitions={num_partitions}"
    if job is not None:
        text += f' job="{Path(job).resolve()}"'
    if private_key is not None:
        text += f' private-key="{Path(private_key).resolve()}"'
    return text


class LocalFederation:
    """A SuperLink and SuperNodes as local processes, set up as docs/DEPLOYMENT.md says.

    - The SuperLink (Fleet, Control and Runtime APIs on one HTTPS port) listens on
      127.0.0.1 only; the ``flwr`` CLI reaches it there (``control_address``).
    - The sites reach the Fleet API through ``bench.federated.fleet_gateway`` on
      ``fleet_host`` (``address``), which forwards Fleet calls and nothing else.
    - TLS, SuperNode authentication (registered keys only), ServerApps started by a
      SuperExec holding a shared secret (``--isolation process``), and at each site a
      long-running ClientApp worker (``bench.federated.clientapp_worker``, shared secret)
      instead of a process per message.

    For loopback tests and trials on one machine. Every process started here is
    stopped by ``close()`` (with its children), also when used as a context manager.
    """

    def __init__(
        self, folder: Path, *, fleet_host: str = "127.0.0.1", supernode_poll: float | None = 0.25
    ):
        """``supernode_poll``: seconds between an idle SuperNode's requests for messages
        (``bench.federated.supernode``); None runs Flower's ``flower-supernode`` (3 s)."""
        self.folder = Path(folder)
        self.supernode_poll = supernode_poll
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fleet_host = fleet_host
        self.flwr_home = self.folder / "flwr-home"
        self.env = flower_env(self.flwr_home)
        hosts = list(dict.fromkeys([fleet_host, "127.0.0.1", "localhost"]))
        self.certs = make_certificates(self.folder / "certs", hosts)
        self.control_address = f"127.0.0.1:{free_port()}"
        self.fleet_port = free_port()
        self.address = f"{fleet_host}:{self.fleet_port}"
        self.link_name = "bench"
        write_cli_config(
            self.flwr_home, self.link_name, self.control_address, self.certs["ca_cert"]
        )
        self.processes: dict[str, subprocess.Popen] = {}
        self.partition_keys = self.folder / "partition-keys.json"

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

    def secret(self, name: str) -> Path:
        """A SuperExec shared secret file (created once, mode 0600)."""
        path = private_folder(self.folder / "secrets") / name
        return path if path.exists() else make_secret(path)

    def start_superlink(self, timeout: float = 120.0, database: Path | None = None) -> None:
        """Starts the SuperLink (state in memory unless ``database``, SQLite), its SuperExec
        and the Fleet gateway."""
        secret = self.secret("superlink")
        if database is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        self._start(
            "superlink", superlink_command(self.certs, self.control_address, secret, database)
        )
        wait_for(
            lambda: "Uvicorn running on" in self.log("superlink"),
            timeout,
            "the SuperLink to start",
            self.processes["superlink"],
            lambda: self.log("superlink"),
        )
        self._start(
            "superexec", superexec_command(self.control_address, self.certs["ca_cert"], secret)
        )
        self._start(
            "fleet-gateway", gateway_command(self.address, self.control_address, self.certs)
        )
        wait_for(
            lambda: port_open(self.fleet_host, self.fleet_port),
            timeout,
            "the Fleet gateway to start",
            self.processes["fleet-gateway"],
            lambda: self.log("fleet-gateway"),
        )

    def log(self, name: str) -> str:
        path = self.folder / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def flwr(self, *args: str, timeout: float = 300.0) -> str:
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
        self,
        name: str,
        private_key: Path | None,
        config: str,
        *,
        retries: int | None = None,
        worker: bool = True,
    ) -> subprocess.Popen:
        """Starts a site's SuperNode (``--isolation process``) and, with ``worker``, its
        long-running ClientApp worker; returns the SuperNode's process."""
        runtime_port = free_port()
        secret = self.secret(name)
        command = supernode_command(
            self.address,
            self.certs["ca_cert"],
            config,
            runtime_port,
            secret,
            private_key,
            self.supernode_poll,
        )
        if self.supernode_poll is not None:
            self.env[POLL_ENV] = str(self.supernode_poll)
        if retries is not None:
            command += ["--max-retries", str(retries), "--max-wait-time", "15"]
        supernode = self._start(name, command)
        if worker:
            self._start(f"{name}-clientapp", worker_command(runtime_port, secret))
        return supernode

    def start_sites(self, sites: int, keys_dir: Path, timeout: float = 180.0) -> None:
        """Registers a key pair per site and starts its SuperNode (partition ``i`` of ``sites``);
        returns when all are online. Writes the operator's partition keys (site i holds i)."""
        public_keys = {}
        for site in range(sites):
            private, public_keys[site] = make_supernode_key(keys_dir, f"site{site}")
            self.register(public_keys[site])
            self.start_supernode(
                f"site{site}", private, node_config(site, sites, private_key=private)
            )
        write_partition_keys(self.partition_keys, public_keys)
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

    def submit(self, app_dir: Path, job: Path, partition_keys: Path | None = None) -> int:
        """Starts a run of the bench app on ``job``; returns its run id.

        The run checks the sites' partition claims against ``partition_keys``
        (default: the file ``start_sites`` wrote)."""
        keys = Path(partition_keys or self.partition_keys).resolve()
        out = self.flwr(
            "run",
            str(app_dir),
            self.link_name,
            "--run-config",
            f'job="{Path(job).resolve()}" partition-keys="{keys}"',
            "--format",
            "json",
        )
        answer = json.loads(out[out.index("{") :])
        if "run-id" not in answer:
            raise RuntimeError(f"flwr run did not start a run: {answer}")
        return int(answer["run-id"])

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
            stop_process_trees([process.pid], grace)

    def close(self) -> None:
        """Stops every process at once: one grace period for all, not one after another."""
        pids = [process.pid for process in self.processes.values()]
        self.processes.clear()
        stop_process_trees(pids)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


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


def stop_process_trees(pids: list[int], grace: float = 10.0) -> None:
    """Stops processes and every process they started (SIGTERM, then SIGKILL after ``grace`` s)."""
    import psutil

    tree = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            tree += [root, *root.children(recursive=True)]
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


class NamespaceUnavailable(OSError):
    """Network namespaces cannot be made here (no privileges, no ``ip`` command)."""


@contextlib.contextmanager
def network_namespace():
    """A network namespace joined to this host by a veth pair (root and iproute2 needed).

    Yields ``(run_in, host_ip, namespace_ip)``: ``run_in(command)`` is the command
    run inside the namespace, which reaches this host only at ``host_ip`` (not its
    127.0.0.1). Raises ``NamespaceUnavailable`` when it cannot be created.
    """
    tag = os.getpid() % 100_000
    name, outer, inner = f"bench{tag}", f"vb{tag}a", f"vb{tag}b"
    subnet = f"10.213.{tag % 250}"
    host_ip, namespace_ip = f"{subnet}.1", f"{subnet}.2"

    def ip(*args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NamespaceUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")

    try:
        ip("netns", "add", name)
    except FileNotFoundError:
        raise NamespaceUnavailable("the ip command (iproute2) is not installed") from None
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", name)
        ip("addr", "add", f"{host_ip}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{namespace_ip}/30", "dev", inner)
        ip("netns", "exec", name, "ip", "link", "set", inner, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield (lambda command: ["ip", "netns", "exec", name, *command]), host_ip, namespace_ip
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
