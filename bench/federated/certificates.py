"""TLS certificates for the SuperLink and authentication keys for the SuperNodes.

Uses the ``cryptography`` package (a Flower dependency), else the openssl and
ssh-keygen command-line tools. See docs/DEPLOYMENT.md.
"""

from __future__ import annotations

from pathlib import Path


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
