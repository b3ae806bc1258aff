"""Flower's deployment runtime: the app folder and the command that writes the deployment's files.

One host runs ``flower-superlink`` (and the ServerApp it launches); each site
runs one ``flower-supernode`` with its own ``partition-id`` and job file. See
docs/DEPLOYMENT.md. ``python -m bench.federated.deployment --help`` writes the
app folder, the TLS certificates and the SuperNode keys. The app's
``pyproject.toml`` is package data (``bench/federated/flower_app/``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from bench.federated.certificates import make_certificates, make_supernode_key


def app_pyproject() -> str:
    """The Flower app's ``pyproject.toml``, as shipped in the package."""
    return files("bench.federated").joinpath("flower_app", "pyproject.toml").read_text()


def write_app_dir(folder: Path) -> Path:
    """A Flower app folder (only ``pyproject.toml``: the apps come from the installed bench)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "pyproject.toml"
    text = app_pyproject()
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.federated.deployment",
        description="Files for running bench on Flower's deployment runtime (docs/DEPLOYMENT.md).",
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
