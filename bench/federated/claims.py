"""Partition claims: a site proves which partition it serves by signing the run's nonce.

Flower's node ids are random and a SuperNode declares its own ``partition-id``
(node config), so the declaration alone proves nothing. The operator's
*partition keys* file maps each partition id to the public key of the site that
holds it (the key the site registered with ``flwr supernode register``). At the
start of a run the ServerApp sends every node a fresh random nonce; the site's
ClientApp signs (run id, its node id, its partition id, the nonce) with its
private key, and the ServerApp accepts the claim only if the signature verifies
against the key mapped to that partition. See docs/DEPLOYMENT.md (security model)
and docs/FORMATS.md (the partition keys file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PARTITION_KEYS_FORMAT = "bench-partition-keys"
PARTITION_KEYS_VERSION = 1
# Domain separation: a claim signature can never be mistaken for Flower's signed timestamps.
CLAIM_CONTEXT = b"bench partition claim v1\0"
NONCE_BYTES = 32


class PartitionKeysError(ValueError):
    """A partition keys file that cannot be used (names the file and what is wrong)."""


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def claim_bytes(run_id: int, node_id: int, partition: int, nonce: bytes) -> bytes:
    """What a site signs: the claim bound to this run, this node and this nonce."""
    return CLAIM_CONTEXT + f"{int(run_id)}:{int(node_id)}:{int(partition)}:".encode() + nonce


def _signature_hash(key) -> hashes.HashAlgorithm:
    return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()


def sign_claim(private_key: Path, run_id: int, node_id: int, partition: int, nonce: bytes) -> str:
    """The site's signature (hex) of its claim, with its OpenSSH EC private key file."""
    key = serialization.load_ssh_private_key(Path(private_key).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PartitionKeysError(
            f"{private_key}: not an EC private key (make one with make_supernode_key)"
        )
    message = claim_bytes(run_id, node_id, partition, nonce)
    return key.sign(message, ec.ECDSA(_signature_hash(key))).hex()


def verify_claim(
    public_key: str, signature: str, run_id: int, node_id: int, partition: int, nonce: bytes
) -> bool:
    """Whether ``signature`` (hex) is the holder of ``public_key``'s signature of the claim."""
    key = parse_public_key(public_key)
    try:
        key.verify(
            bytes.fromhex(signature),
            claim_bytes(run_id, node_id, partition, nonce),
            ec.ECDSA(_signature_hash(key)),
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_public_key(line: str) -> ec.EllipticCurvePublicKey:
    """An OpenSSH public key line (``ecdsa-sha2-nistp384 AAAA... comment``)."""
    try:
        key = serialization.load_ssh_public_key(line.strip().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm, IndexError) as error:
        raise PartitionKeysError(f"not an OpenSSH public key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PartitionKeysError("not an EC public key (make site keys with make_supernode_key)")
    return key


def _key_id(line: str) -> tuple[str, str]:
    """(type, base64 body) of an OpenSSH line, without its comment."""
    parts = line.split()
    return parts[0], parts[1]


def write_partition_keys(path: Path, public_keys: Mapping[int, Path | str]) -> Path:
    """The operator's partition keys file: partition id -> the site's public key.

    ``public_keys`` values are ``.pub`` files or OpenSSH lines. Written as JSON
    (docs/FORMATS.md) and read back through ``read_partition_keys``, so a bad key
    is refused here rather than at the start of a run.
    """
    lines = {}
    for partition, key in sorted(public_keys.items()):
        text = Path(key).read_text() if isinstance(key, Path) else str(key)
        try:
            parse_public_key(text)
        except PartitionKeysError as error:
            source = f" ({key})" if isinstance(key, Path) else ""
            raise PartitionKeysError(f"partition {partition}{source}: {error}") from None
        lines[str(int(partition))] = text.strip()
    path = Path(path)
    path.write_text(
        json.dumps(
            {
                "format": PARTITION_KEYS_FORMAT,
                "version": PARTITION_KEYS_VERSION,
                "partitions": lines,
            },
            indent=2,
        )
        + "\n"
    )
    read_partition_keys(path)
    return path


def read_partition_keys(path: Path) -> dict[int, str]:
    """Partition id -> OpenSSH public key line, checked (raises ``PartitionKeysError``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PartitionKeysError(f"{path}: unreadable partition keys ({error})") from None
    if not isinstance(data, dict) or data.get("format") != PARTITION_KEYS_FORMAT:
        raise PartitionKeysError(f"{path}: not a {PARTITION_KEYS_FORMAT} file")
    if data.get("version") != PARTITION_KEYS_VERSION:
        raise PartitionKeysError(
            f"{path}: version {data.get('version')!r}, this bench reads {PARTITION_KEYS_VERSION}"
        )
    partitions = data.get("partitions")
    if not isinstance(partitions, dict) or not partitions:
        raise PartitionKeysError(f"{path}: 'partitions' must map partition ids to public keys")
    keys: dict[int, str] = {}
    seen: dict[tuple[str, str], int] = {}
    for name, line in partitions.items():
        if not str(name).isdigit() or not isinstance(line, str):
            raise PartitionKeysError(f"{path}: partition {name!r} is not a partition id with a key")
        try:
            parse_public_key(line)
        except PartitionKeysError as error:
            raise PartitionKeysError(f"{path}: partition {name}: {error}") from None
        if _key_id(line) in seen:
            raise PartitionKeysError(
                f"{path}: partitions {seen[_key_id(line)]} and {name} have the same key; "
                "each site needs its own key pair"
            )
        seen[_key_id(line)] = int(name)
        keys[int(name)] = line
    return keys


class ClaimChecker:
    """Checks the claims of one run: each partition goes to at most one node, with a valid proof.

    ``check`` returns None for an accepted claim, else the reason it is refused.
    """

    def __init__(self, partition_keys: dict[int, str], run_id: int, nonce: bytes):
        self.partition_keys = partition_keys
        self.run_id = run_id
        self.nonce = nonce
        self.accepted: dict[int, int] = {}  # node id -> partition
        self.refused: list[dict] = []

    def check(self, node_id: int, partition: int, signature: str | None) -> str | None:
        reason = self._reason(node_id, partition, signature)
        if reason is None:
            self.accepted[node_id] = partition
        else:
            self.refused.append({"node_id": node_id, "partition": partition, "reason": reason})
        return reason

    def _reason(self, node_id: int, partition: int, signature: str | None) -> str | None:
        if partition not in self.partition_keys:
            return f"partition {partition} is not in the partition keys"
        if not signature:
            return "no signature (the site's node config names no private-key)"
        if not verify_claim(
            self.partition_keys[partition], signature, self.run_id, node_id, partition, self.nonce
        ):
            return f"the signature does not verify against partition {partition}'s key"
        holder = next((n for n, p in self.accepted.items() if p == partition), None)
        if holder is not None:
            return f"duplicate claim: partition {partition} is already held by node {holder}"
        return None
