"""Measurements that tell whether a pretraining method can learn on given data.

Used by ``scripts/diagnose_pretraining.py`` and the tests: the spread of the
slice embeddings (mean pairwise cosine similarity) and each contrastive loss's
uniform value, the loss when every similarity is equal (the features carry no
information). A loss that stays at its uniform value has not learned anything.
Some losses cannot fall far below it: ``loss_floor`` is the value they reach when the
features are perfect for the task they pose, so progress reads as a share of the way from
the uniform value to the floor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mean_pairwise_cosine(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows (1.0: every row the same)."""
    unit = F.normalize(embeddings.flatten(1), dim=1)
    cosine = unit @ unit.T
    return cosine[~torch.eye(len(unit), dtype=torch.bool, device=unit.device)].mean().item()


def uniform_loss(name: str, slices_per_step: int, partitions: int, hparams: dict) -> float | None:
    """The loss of method ``name`` when every similarity is equal, for a two-view batch of
    ``slices_per_step`` slices (``partitions`` per volume); None for non-contrastive methods."""
    if name == "simclr":  # NT-Xent: the other view against the 2B - 2 other embeddings
        return math.log(2 * slices_per_step - 1)
    if name == "gcl":  # G^D / G^D-: negatives are the other partitions' embeddings, both views
        if hparams.get("global_strategy", "GD") == "GR":
            return math.log(2 * slices_per_step - 1)
        return math.log(1 + 2 * slices_per_step * (partitions - 1) // partitions)
    if name in ("fcl", "local_cl"):
        # Two terms, each log(1 + |N(q)|): N(q) is all K drawn features as the paper writes the
        # sum, or the other partitions' share of them (``negatives: other_partitions``).
        drawn = hparams["num_sampled"]
        if hparams.get("negatives", "all_sampled") == "all_sampled":
            return 2 * math.log(1 + drawn)
        return 2 * math.log(1 + drawn * (partitions - 1) / partitions)
    return None


def loss_floor(name: str, partitions: int, hparams: dict) -> float | None:
    """The loss of method ``name`` when the features are perfect for its task: every slice's
    feature equals its partition's and partitions are far apart. Only FCL and Local CL with
    ``negatives: all_sampled`` (the paper's sum) keep a floor well above 0 there: q's own
    partition stays in the denominator, so each term is log(1 + K / P), K / P being the
    expected number of the K drawn bank features in q's partition. For any features the bank
    term is at least log(1 + |Lambda(q)|) (Jensen); the local term, whose positives are not
    among the drawn features, can go lower. None where this value is 0 up to the
    temperature's bound (the other contrastive losses) or undefined."""
    if name in ("fcl", "local_cl") and hparams.get("negatives", "all_sampled") == "all_sampled":
        return 2 * math.log(1 + hparams["num_sampled"] / partitions)
    return None
