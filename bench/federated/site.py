"""A federation's site: its config file, and its ClientApp's tasks built from its own data.

``bench site init`` writes ``<site folder>/site.toml`` (the site's name, data
folder and work folder), its SuperNode key pair and its manifest part
(``manifest.json``: patient ids, groups, content hashes; never an image). The
site's SuperNode names the file in its node config (``site="/.../site.toml"``).
A run's job reaches the sites in the run config (``job-spec``: the job, the
split and the federation manifest as JSON text, written by the deployment
engine), so a site needs no file from the coordinator: its ClientApp builds the
task from the job and its own folder, after checking the folder against its
part of the manifest.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.datasets.errors import DataError

SITE_FILE = "site.toml"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class SiteConfig:
    name: str
    data: Path  # the site's data folder: its own patients only
    work: Path  # client states and the site's run folders
    folder: Path  # where site.toml, the keys and manifest.json are

    @property
    def private_key(self) -> Path:
        return self.folder / "keys" / self.name

    @property
    def public_key(self) -> Path:
        return self.folder / "keys" / f"{self.name}.pub"

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST_FILE

    def to_toml(self) -> str:
        return (
            "# A bench federation site (docs/DEPLOYMENT.md); written by `bench site init`.\n"
            f"name = {json.dumps(self.name)}\n"
            f"data = {json.dumps(str(self.data))}\n"
            f"work = {json.dumps(str(self.work))}\n"
        )


def read_site_config(path: Path) -> SiteConfig:
    path = Path(path)
    if path.is_dir():
        path = path / SITE_FILE
    try:
        raw = tomllib.loads(path.read_text())
        return SiteConfig(
            name=str(raw["name"]),
            data=Path(raw["data"]),
            work=Path(raw["work"]),
            folder=path.parent,
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise DataError(
            path, f"unreadable site config ({type(exc).__name__}); expected name, data, work"
        ) from None


def site_run_dir(site: SiteConfig, spec: dict) -> Path:
    """The site's folder for one run of the coordinator's: the same for every restart of it."""
    key = hashlib.sha256(str(spec["run_dir"]).encode()).hexdigest()[:16]
    return site.work / "runs" / key


def spec_at_site(spec: dict, site: SiteConfig, partition: int) -> dict:
    """The run's job as this site builds it: its data folder, partition and run folder."""
    federation = spec.get("federation")
    if not federation:
        raise DataError(site.folder, "the run's job carries no split and manifest for the sites")
    return {
        **spec,
        "site": {
            "name": site.name,
            "partition": partition,
            "data": str(site.data),
            "run_dir": str(site_run_dir(site, spec)),
            "split": federation["split"],
            "manifest": federation["manifest"],
        },
    }


def site_task(context):
    """The task of the run ``context`` belongs to, as this site's ClientApp builds it."""
    from bench.federated.jobs import task_for_spec

    site = read_site_config(Path(str(context.node_config["site"])))
    text = str(context.run_config.get("job-spec") or "")
    if not text:
        raise DataError(site.folder, "the run config has no job-spec (submit with bench)")
    partition = int(context.node_config["partition-id"])
    # Built once per run (its data checked then), never reused by another run or job.
    key = hashlib.sha256(
        f"{context.run_id}\n{site.folder}\n{partition}\n{text}".encode()
    ).hexdigest()
    return task_for_spec(key, lambda: spec_at_site(json.loads(text), site, partition))


def init_site(name: str, data: Path, folder: Path, work: Path | None = None) -> SiteConfig:
    """A new site's folder: ``site.toml``, its SuperNode key pair (``keys/``) and its manifest
    part (``manifest.json``, the enrollment record its folder is checked against)."""
    from bench.datasets.manifest import site_manifest, write_manifest
    from bench.federated.certificates import make_supernode_key

    folder = Path(folder).resolve()
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise DataError(folder, f"--name {name!r}: use letters, digits, '-' and '_'")
    if (folder / SITE_FILE).exists():
        raise DataError(folder, "already holds a site (site.toml); choose another --out")
    site = SiteConfig(
        name=name,
        data=Path(data).resolve(),
        work=Path(work).resolve() if work else folder / "work",
        folder=folder,
    )
    part = site_manifest(site.data, name)  # reads the folder first: a bad --data writes nothing
    folder.mkdir(parents=True, exist_ok=True)
    make_supernode_key(folder / "keys", name)
    write_manifest(site.manifest, part)
    (folder / SITE_FILE).write_text(site.to_toml())
    return site


def check_site(folder: Path, ca: Path | None = None) -> list[str]:
    """What ``bench site check`` reports; DataError at the first problem."""
    from bench.datasets.manifest import check_site_folder, read_site_manifest

    site = read_site_config(folder)
    part = read_site_manifest(site.manifest)
    records = check_site_folder(site.data, part)
    lines = [f"data: {site.data} holds the {len(records)} patients of its manifest, unchanged"]
    key = site.private_key
    if not key.exists():
        raise DataError(key, "the site's private key is missing")
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        raise DataError(key, f"private key readable by others (mode {mode:o}); chmod 600 it")
    lines.append(f"key: {key} (mode {mode:o})")
    if ca is not None:
        lines.append(check_ca_certificate(Path(ca)))
    return lines


def check_ca_certificate(path: Path) -> str:
    """One line when ``path`` is a CA certificate valid now; DataError otherwise."""
    import datetime

    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a PEM certificate ({type(exc).__name__})") from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise DataError(path, f"certificate not valid now (until {cert.not_valid_after_utc:%F})")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise DataError(path, "not a CA certificate (the federation's ca.crt is needed)")
    return f"ca: {path} valid until {cert.not_valid_after_utc:%F}"


def site_commands(
    site: SiteConfig, superlink: str, ca: Path, partition: int, port: int = 9094
) -> list[list[str]]:
    """The site's two processes: its SuperNode (its key, its site config, its partition;
    process isolation) and its long-running ClientApp worker (docs/DEPLOYMENT.md)."""
    from bench.federated.certificates import make_secret
    from bench.federated.commands import supernode_command, worker_command

    config = (
        f'partition-id={int(partition)} site="{site.folder / SITE_FILE}" '
        f'private-key="{site.private_key}"'  # signs the site's partition claim
    )
    secret = site.private_key.parent / "superexec.secret"
    if not secret.exists():
        make_secret(secret)
    supernode = supernode_command(
        superlink, Path(ca).resolve(), config, port, secret, site.private_key
    )
    return [supernode, worker_command(port, secret)]
