"""TLS certificates for the SuperLink and authentication keys for the SuperNodes.

Every private key (and the SuperExec shared secret) is created with mode 0600 from
its first byte (``os.open`` with ``O_EXCL`` and the mode, whatever the umask), and an
existing key is never overwritten. ``make_certificates`` keeps the CA's private key
in its own folder, apart from what the sites receive. See docs/DEPLOYMENT.md.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# make_certificates' folders: what stays offline, what the SuperLink host keeps, what sites get.
CA_FOLDER = "ca-private"
SUPERLINK_FOLDER = "superlink"
SITES_FOLDER = "for-sites"


def private_folder(folder: Path) -> Path:
    """``folder`` (created if needed) readable by its owner only (mode 0700)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    return folder


def write_private_file(path: Path, data: bytes) -> Path:
    """Creates ``path`` holding ``data``, mode 0600 from the first byte; refuses to overwrite.

    ``O_EXCL`` makes the call fail (``FileExistsError``) if the file exists, so a key
    is never replaced by accident nor written through a planted link; ``fchmod``
    sets 0600 before any byte is written, whatever the umask.
    """
    path = Path(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            descriptor = -1  # the file object owns it now
            out.write(data)
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    return path


def make_secret(path: Path, size: int = 32) -> Path:
    """A random shared secret (``size`` bytes) for Flower's ``--superexec-auth-secret-file``."""
    return write_private_file(path, secrets.token_bytes(size))


def make_certificates(folder: Path, hosts: list[str], days: int = 365) -> dict[str, Path]:
    """A CA and a server certificate for the SuperLink, valid for ``hosts`` (names or IPs).

    Writes, under ``folder``:

    - ``ca-private/ca.key``: the CA's private key; keep it offline (folder mode 0700);
    - ``superlink/server.pem`` and ``superlink/server.key``: stay on the SuperLink host;
    - ``for-sites/ca.crt``: the CA certificate, the only file every site receives.

    Returns the paths as ``ca_cert``, ``ca_key``, ``server_cert``, ``server_key``.
    Refuses (``FileExistsError``) to overwrite an existing key.
    """
    folder = Path(folder)
    ca_dir = private_folder(folder / CA_FOLDER)
    link_dir = private_folder(folder / SUPERLINK_FOLDER)
    sites_dir = folder / SITES_FOLDER
    sites_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "ca_cert": sites_dir / "ca.crt",
        "ca_key": ca_dir / "ca.key",
        "server_cert": link_dir / "server.pem",
        "server_key": link_dir / "server.key",
    }
    for key in ("ca_key", "server_key"):
        if paths[key].exists():
            raise FileExistsError(f"{paths[key]} exists; bench never overwrites a private key")

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
    names: list[x509.GeneralName] = []
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
    write_private_file(paths["ca_key"], _key_pem(ca_key))
    write_private_file(paths["server_key"], _key_pem(server_key))
    paths["ca_cert"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["server_cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def make_supernode_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A site's key pair: EC (NIST P-384), OpenSSH format; returns (private, public) paths.

    Writes ``<folder>/<name>`` (private, mode 0600 from the first byte, stays at the
    site: ``flower-supernode --auth-supernode-private-key`` and the site's partition
    claims) and ``<folder>/<name>.pub`` (one OpenSSH line: registered with the SuperLink
    by ``flwr supernode register`` and named in the operator's partition keys).
    Refuses (``FileExistsError``) to overwrite an existing private key.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / name, folder / f"{name}.pub"
    key = ec.generate_private_key(ec.SECP384R1())
    write_private_file(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + f" {name}\n".encode()
    )
    return private, public
