"""Seeds derived from the run's seed, so each (purpose, round, client) draws its own stream."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *parts) -> int:
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, *parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *parts))
