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

from bench.federated.certificates import make_certificates, make_secret, make_supernode_key
from bench.federated.claims import PartitionKeysError, write_partition_keys


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
        "--out",
        required=True,
        type=Path,
        help="folder for ca-private/ca.key, superlink/server.{pem,key} and for-sites/ca.crt",
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
    keys = commands.add_parser(
        "partition-keys", help="the operator's map of partition ids to the sites' public keys"
    )
    keys.add_argument("--out", required=True, type=Path, help="the JSON file to write")
    keys.add_argument(
        "public_keys", nargs="+", type=Path, help="site i's .pub file holds partition i"
    )
    secret = commands.add_parser(
        "secret", help="a SuperExec shared secret (--superexec-auth-secret-file), mode 0600"
    )
    secret.add_argument("--out", required=True, type=Path)
    app = commands.add_parser("app", help="the Flower app folder for `flwr run`")
    app.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "certificates":
            paths = make_certificates(args.out, args.host, args.days)
            print(f"CA private key (keep it offline)     {paths['ca_key']}")
            print(
                f"SuperLink certificate and key (stay) {paths['server_cert']} {paths['server_key']}"
            )
            print(f"CA certificate (give to every site)  {paths['ca_cert']}")
        elif args.command == "supernode-key":
            private, public = make_supernode_key(args.out, args.name)
            print(f"private key (stays at the site) {private}")
            print(f"public key (register it)       {public}")
        elif args.command == "partition-keys":
            print(write_partition_keys(args.out, dict(enumerate(args.public_keys))))
        elif args.command == "secret":
            args.out.parent.mkdir(parents=True, exist_ok=True)
            print(make_secret(args.out))
        else:
            print(write_app_dir(args.out))
    except (FileExistsError, PartitionKeysError, OSError) as error:
        parser.exit(2, f"bench: error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
