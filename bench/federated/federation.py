"""The operator's federation folder, its SuperLink, and runs submitted to it (``run.engine:
deployment``).

``start_federation`` joins the sites' manifests (partition order), makes the TLS
certificates, starts the SuperLink in the background, registers each site's
public key and writes ``federation.json``. ``run_deployed`` runs one task of a
bench run on the sites: it writes the job (with the split and the federation
manifest, which is all a site needs from the coordinator), submits it with
``flwr run`` and waits. The coordinator holds no image: its tasks are built from
the manifest (``data.manifest``) and its result rows from the sites' metrics.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.datasets.errors import DataError
from bench.datasets.manifest import FederationManifest, read_site_manifest

FEDERATION_FILE = "federation.json"
LINK = "bench"


def _site_files(folder: Path) -> tuple[dict, Path]:
    part = read_site_manifest(Path(folder) / "manifest.json")
    for candidate in (folder / f"{part['site']}.pub", folder / "keys" / f"{part['site']}.pub"):
        if candidate.exists():
            return part, candidate
    raise DataError(folder, f"no public key {part['site']}.pub beside manifest.json")


# The processes of a federation's coordinator, each with its pid file in the folder.
PROCESSES = ("superlink", "superexec", "fleet-gateway")


@dataclass
class Federation:
    """``address``: the Fleet gateway the sites reach (bound on ``bind``); ``control``: the
    SuperLink itself, on 127.0.0.1 (Control API: the operator's side only)."""

    folder: Path
    address: str
    bind: str
    control: str

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def manifest(self) -> FederationManifest:
        return FederationManifest.load(self.manifest_path)

    @property
    def log_path(self) -> Path:
        return self.folder / "superlink.log"

    @property
    def certs(self) -> dict[str, Path]:
        from bench.federated.certificates import SITES_FOLDER, SUPERLINK_FOLDER

        certs = self.folder / "certs"
        return {
            "ca_cert": certs / SITES_FOLDER / "ca.crt",
            "server_cert": certs / SUPERLINK_FOLDER / "server.pem",
            "server_key": certs / SUPERLINK_FOLDER / "server.key",
        }

    @property
    def partition_keys(self) -> Path:
        return self.folder / "partition-keys.json"

    @property
    def env(self) -> dict[str, str]:
        from bench.federated.loopback import flower_env

        return flower_env(self.folder / "flwr-home")

    def run_overrides(self) -> list[str]:
        """``bench run`` options that make a run of this federation."""
        return [
            f"data.manifest={self.manifest_path}",
            "run.engine=deployment",
            f"run.federation={self.folder}",
            f"split.clients={len(self.manifest.sites)}",
        ]

    def flwr(self, *args: str, timeout: float = 300.0) -> str:
        done = subprocess.run(
            ["flwr", *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"flwr {' '.join(args)} failed ({done.returncode}): {done.stdout}")
        return done.stdout

    def _json(self, *args: str) -> dict:
        out = self.flwr(*args, LINK, "--format", "json")
        return json.loads(out[out.index("{") :])

    def status(self) -> str:
        nodes = self._json("supernode", "ls").get("nodes", [])
        runs = self._json("ls").get("runs", [])
        lines = [
            f"SuperLink {self.address}: {sum(n.get('status') == 'online' for n in nodes)} "
            f"of {len(nodes)} sites online"
        ]
        lines += [f"run {r.get('run-id')}: {r.get('status')}" for r in runs]
        return "\n".join(lines)

    def pid(self, name: str = "superlink") -> int | None:
        path = self.folder / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def stop(self) -> None:
        from bench.federated.loopback import stop_process_trees

        running = {name: pid for name in PROCESSES if (pid := self.pid(name)) is not None}
        stop_process_trees(list(running.values()))
        for name in running:
            (self.folder / f"{name}.pid").unlink(missing_ok=True)

    def save(self) -> None:
        record = {"address": self.address, "bind": self.bind, "control": self.control}
        (self.folder / FEDERATION_FILE).write_text(json.dumps(record, indent=1) + "\n")


def open_federation(folder: Path) -> Federation:
    path = Path(folder) / FEDERATION_FILE
    try:
        record = json.loads(path.read_text())
        return Federation(
            Path(folder).resolve(),
            str(record["address"]),
            str(record["bind"]),
            str(record.get("control") or record["address"]),  # older folders: one address
        )
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            path, f"not a federation folder ({type(exc).__name__}); see bench federation start"
        ) from None


def start_federation(
    folder: Path,
    site_folders: list[Path],
    hosts: list[str] | None = None,
    port: int = 0,
    bind: str | None = None,
    timeout: float = 120.0,
) -> Federation:
    """Makes (or reopens) the federation folder, starts its SuperLink and enrolls the sites."""
    from bench.federated.certificates import make_certificates, make_secret
    from bench.federated.claims import write_partition_keys
    from bench.federated.commands import gateway_command, superexec_command, superlink_command
    from bench.federated.deployment import write_app_dir
    from bench.federated.loopback import free_port, port_open, wait_for, write_cli_config

    folder = Path(folder).resolve()
    hosts = hosts or ["127.0.0.1"]
    sites = [_site_files(Path(f)) for f in site_folders]
    manifest = FederationManifest.join([part for part, _ in sites])
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "manifest.json").exists():
        if FederationManifest.load(folder / "manifest.json").hash != manifest.hash:
            raise DataError(
                folder / "manifest.json",
                "the sites' manifests changed since this federation started; "
                "a run's split is made from the manifest: use a new --out",
            )
    else:
        manifest.save(folder / "manifest.json")
    if (folder / FEDERATION_FILE).exists() and not port:
        federation = open_federation(folder)  # restarted: the sites know this address
    else:
        federation = Federation(
            folder,
            f"{hosts[0]}:{port or free_port()}",
            bind or hosts[0],
            f"127.0.0.1:{free_port()}",
        )
    if federation.pid() is not None:
        raise DataError(folder, "its SuperLink is running; bench federation stop first")
    if not federation.certs["ca_cert"].exists():
        make_certificates(folder / "certs", list(dict.fromkeys([*hosts, "127.0.0.1", "localhost"])))
    secret = federation.certs["server_key"].parent / "superexec.secret"
    if not secret.exists():
        make_secret(secret)
    write_cli_config(folder / "flwr-home", LINK, federation.control, federation.certs["ca_cert"])
    write_app_dir(folder / "app")
    write_partition_keys(federation.partition_keys, {k: key for k, (_, key) in enumerate(sites)})
    federation.save()
    _, _, fleet_port = federation.address.rpartition(":")
    commands = {
        "superlink": superlink_command(federation.certs, federation.control, secret),
        "superexec": superexec_command(federation.control, federation.certs["ca_cert"], secret),
        "fleet-gateway": gateway_command(
            f"{federation.bind}:{fleet_port}", federation.control, federation.certs
        ),
    }
    processes = {}
    for name, command in commands.items():
        with (folder / f"{name}.log").open("ab") as log:
            processes[name] = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=federation.env,
                cwd=folder,
                start_new_session=True,
            )
        (folder / f"{name}.pid").write_text(str(processes[name].pid))
        if name == "superlink":
            wait_for(
                lambda: "Uvicorn running on" in federation.log_path.read_text(errors="replace"),
                timeout,
                "the SuperLink to start",
                processes[name],
                lambda: federation.log_path.read_text(errors="replace")[-2000:],
            )
    host = "127.0.0.1" if federation.bind in ("0.0.0.0", "::") else federation.bind
    wait_for(
        lambda: port_open(host, int(fleet_port)),
        timeout,
        "the Fleet gateway to start",
        processes["fleet-gateway"],
        lambda: (folder / "fleet-gateway.log").read_text(errors="replace")[-2000:],
    )
    for _, public_key in sites:
        federation.flwr("supernode", "register", str(public_key), LINK)
    return federation


# ------------------------------------------------------------------ run.engine: deployment


def deployment_spec(task) -> dict:
    """The task's job plus what the sites need from the coordinator: split and manifest."""
    from bench.datasets.splits import Split

    spec = dict(task.spec())
    config = spec["config"]
    split = Split.load(Path(spec["run_dir"]) / "split.json")
    manifest = FederationManifest.load(Path(config["data"]["manifest"]))
    spec["federation"] = {"split": split.to_dict(), "manifest": manifest.to_dict()}
    return spec


def check_same_start(task) -> None:
    """Sites fine-tune from the server's initial model: every client must start the same."""
    import torch

    parts = getattr(task, "init_parts", None) or []
    for client, own in enumerate(parts[1:], 1):
        same = own.keys() == parts[0].keys() and all(
            own[p].keys() == parts[0][p].keys()
            and all(torch.equal(own[p][k], parts[0][p][k]) for k in own[p])
            for p in own
        )
        if not same:
            raise DataError(
                Path(task.work_dir),
                f"client {client} starts fine-tuning from other pretrained parts than client 0; "
                "run.engine=deployment needs pretraining that FedAvg aggregates",
            )


def run_deployed(task, run_cfg: dict) -> dict:
    """Trains ``task`` on the federation's sites; returns the final server state."""
    from bench.federated.checkpoint import load_final
    from bench.federated.jobs import write_job

    work_dir = Path(task.work_dir)
    if not (work_dir / "server" / "final.pt").exists():
        if not run_cfg.get("federation"):
            raise DataError(Path("."), "run.engine=deployment needs run.federation (a folder)")
        federation = open_federation(Path(run_cfg["federation"]))
        check_same_start(task)
        spec = deployment_spec(task)
        job = write_job(work_dir / "job.json", spec)
        run_config = work_dir / "run-config.toml"
        # A JSON string is a valid TOML basic string (json.dumps escapes alike).
        spec_text = json.dumps(spec, default=str)
        run_config.write_text(
            f"job = {json.dumps(str(job))}\njob-spec = {json.dumps(spec_text)}\n"
            f"partition-keys = {json.dumps(str(federation.partition_keys))}\n"
        )
        out = federation.flwr(
            "run", str(federation.folder / "app"), LINK, "--run-config", str(run_config),
            "--format", "json",
        )  # fmt: skip
        run_id = int(json.loads(out[out.index("{") :])["run-id"])

        wait_run(federation, run_id, work_dir / "server" / "final.pt", run_cfg, task.num_rounds)
    return load_final(work_dir)


def wait_run(federation: Federation, run_id: int, final: Path, run_cfg: dict, rounds: int) -> None:
    """Waits for the ServerApp's ``final.pt`` (a cheap check), asking the SuperLink now and then
    whether the run ended without it (the ``flwr`` CLI costs seconds of CPU per call)."""
    import time

    deadline = time.monotonic() + float(run_cfg["flower"]["round_timeout"]) * (rounds + 2)
    asked = time.monotonic()
    while time.monotonic() < deadline:
        if final.exists():
            return
        if time.monotonic() - asked > 20:
            asked = time.monotonic()
            try:
                runs = federation._json("ls", "--run-id", str(run_id)).get("runs", [])
            except (RuntimeError, subprocess.TimeoutExpired):
                runs = []
            status = runs[0]["status"] if runs else ""
            if status.startswith("finished") and not final.exists():
                time.sleep(2)  # the file may land just after the status
                if final.exists():
                    return
                log = federation.flwr("log", str(run_id), LINK, "--show", timeout=120)
                raise RuntimeError(f"run {run_id} ended {status}:\n{log[-3000:]}")
        time.sleep(1)
    raise TimeoutError(f"run {run_id} did not finish in time (run.flower.round_timeout)")
