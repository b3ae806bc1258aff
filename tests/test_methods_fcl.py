"""FCL and Local CL: the loss against explicit loops, and the feature exchange."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.backbone import UNet2D
from bench.diagnostics import loss_floor, uniform_loss
from bench.methods.fcl import FCL, fcl_loss
from bench.methods.local_cl import LocalCL

WIDTHS = (4, 8, 16)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def _l(q, positives, negatives, tau):
    """Wu et al. 2021, Eq. 1, term by term: -1/|P| sum_k+ log(e^{q.k+/t} / (e^{q.k+/t} + sum_n
    e^{q.n/t}))."""
    if not positives:
        return 0.0
    total = 0.0
    for k in positives:
        pos = math.exp(float(q @ k) / tau)
        neg = sum(math.exp(float(q @ n) / tau) for n in negatives)
        total += -math.log(pos / (pos + neg))
    return total / len(positives)


def _batch(volumes: int = 2, partitions: int = 4, size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = volumes * partitions
    return {
        "image": torch.rand(n, 1, size, size, generator=g),
        "partition": torch.arange(partitions).repeat(volumes),
        "position": torch.rand(n, generator=g),
        "volume": torch.arange(volumes).repeat_interleave(partitions),
        "client": torch.zeros(n, dtype=torch.long),
    }


def _method(cls=FCL, num_clients: int = 3, client_id: int = 0, **hparams) -> FCL:
    torch.manual_seed(client_id)
    hp = {"bank_size": 16, "num_sampled": 12, "hidden_dim": 16, "projection_dim": 8, **hparams}
    return cls(UNet2D(widths=WIDTHS), hp, num_clients=num_clients, client_id=client_id)


def test_loss_terms_equal_explicit_loops():
    tau = 0.1
    queries, q_parts = _unit(6, 5, 0), torch.tensor([0, 1, 2, 0, 1, 3])
    keys, k_parts = _unit(6, 5, 1), torch.tensor([0, 1, 2, 0, 1, 2])
    bank, b_parts = _unit(10, 5, 2), torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 2, 1])
    out = fcl_loss(
        queries,
        q_parts,
        keys,
        k_parts,
        bank,
        b_parts,
        tau,
        negatives="other_partitions",
        own_view_positive=True,
    )

    bank_terms, local_terms = [], []
    for i in range(6):
        p = int(q_parts[i])
        bank_pos = [bank[j] for j in range(10) if int(b_parts[j]) == p]  # Lambda(q)
        negatives = [bank[j] for j in range(10) if int(b_parts[j]) != p]  # other partitions of Q'
        local_pos = [keys[j] for j in range(6) if int(k_parts[j]) == p]  # P(q)
        bank_terms.append(_l(queries[i], bank_pos, negatives, tau))
        local_terms.append(_l(queries[i], local_pos, negatives, tau))
    # Query 5 (partition 3) has no positive anywhere: both of its terms are 0.
    assert bank_terms[5] == 0.0 and local_terms[5] == 0.0
    assert float(out["bank"]) == pytest.approx(np.mean(bank_terms), rel=1e-5)
    assert float(out["local"]) == pytest.approx(np.mean(local_terms), rel=1e-5)
    expected = np.mean([b + loc for b, loc in zip(bank_terms, local_terms, strict=False)])
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)


def _variant_value(negatives: str, own_view_positive: bool) -> float:
    """By hand, tau = 1, one query q = (1, 0) of partition 0. Q' (4 features): a = (1, 0) and
    d = (0.6, 0.8) of partition 0, b = (0, 1) and c = (-1, 0) of partition 1, so q.a = 1,
    q.d = 0.6, q.b = 0, q.c = -1 and Lambda(q) = {a, d}. Batch keys: k0 = (0.8, 0.6), the
    other view of q's slice (q.k0 = 0.8); k1 = (0, 1) of partition 0 (q.k1 = 0); k2 of
    partition 1 (never a positive)."""
    e = math.exp
    if negatives == "all_sampled":
        s = e(1) + e(0.6) + e(0) + e(-1)
    else:
        s = e(0) + e(-1)
    bank = -0.5 * (math.log(e(1) / (e(1) + s)) + math.log(e(0.6) / (e(0.6) + s)))
    if own_view_positive:
        local = -0.5 * (math.log(e(0.8) / (e(0.8) + s)) + math.log(1 / (1 + s)))
    else:
        local = -math.log(1 / (1 + s))
    return bank + local


@pytest.mark.parametrize("negatives", ["all_sampled", "other_partitions"])
@pytest.mark.parametrize("own_view_positive", [False, True])
def test_each_variant_equals_a_hand_computed_value_on_four_features(negatives, own_view_positive):
    t = torch.tensor
    query, query_parts = t([[1.0, 0.0]]), t([0])
    keys, key_parts = t([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]), t([0, 0, 1])
    sampled = t([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    sampled_parts = t([0, 1, 1, 0])
    out = fcl_loss(
        query,
        query_parts,
        keys,
        key_parts,
        sampled,
        sampled_parts,
        1.0,
        negatives=negatives,
        own_view_positive=own_view_positive,
    )
    assert float(out["loss"]) == pytest.approx(_variant_value(negatives, own_view_positive))
    assert FCL.defaults["negatives"] == "all_sampled" and not FCL.defaults["own_view_positive"]


def test_local_bank_is_emptied_at_round_start_only_when_a_round_does_not_refill_it():
    method = _method()  # bank_size 16, 8 slices per step
    method.begin_round(0, 3)
    method.training_step(_batch(), torch.Generator().manual_seed(0))
    assert int(method.bank_count) == 8
    method.begin_round(1, 3)  # unknown round size: kept
    assert int(method.bank_count) == 8
    method.slices_per_round = 16  # a round refills the whole bank: nothing stale to remove
    method.begin_round(1, 3)
    assert int(method.bank_count) == 8
    method.slices_per_round = 8  # a round leaves 8 old features: emptied
    method.begin_round(1, 3)
    assert int(method.bank_count) == 0 and int(method.bank_pointer) == 0
    kept = _method(empty_bank_each_round=False)
    kept.slices_per_round = 8
    kept.begin_round(0, 3)
    kept.training_step(_batch(), torch.Generator().manual_seed(0))
    kept.begin_round(1, 3)
    assert int(kept.bank_count) == 8


def test_training_step_uses_the_sampled_bank_and_fills_the_local_bank():
    method = _method()
    method.begin_round(0, 2)
    batch = _batch()
    out = method.training_step(
        batch, torch.Generator().manual_seed(0)
    )  # empty banks: batch fallback
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in method.unet.encoder.parameters())
    assert all(p.grad is None for p in method.momentum_encoder.parameters())
    method.after_optimizer_step()
    assert int(method.bank_count) == 8
    assert torch.equal(method.bank_partitions[:8], batch["partition"])
    assert torch.allclose(method.bank_features[:8].norm(dim=1), torch.ones(8))
    for _ in range(2):
        method.training_step(batch, torch.Generator().manual_seed(1))
    assert int(method.bank_count) == 16 and int(method.bank_pointer) == 8  # FIFO wrapped around
    sampled, parts = method.sample_bank(torch.Generator().manual_seed(0))
    assert sampled.shape == (12, 8) and parts.shape == (12,)


def _exchange(methods: list[FCL]) -> None:
    payloads = {m.client_id: m.outgoing_payload() for m in methods}
    for m in methods:
        m.incoming_payload({c: p for c, p in payloads.items() if c != m.client_id})


def test_exchange_round_fills_every_remote_bank_and_replaces_old_features():
    methods = [_method(client_id=c) for c in range(3)]
    for m in methods:
        m.begin_round(0, 2)
        m.training_step(_batch(seed=m.client_id), torch.Generator().manual_seed(m.client_id))
    _exchange(methods)
    for m in methods:
        n = int(m.remote_count)
        others = {c for c in range(3) if c != m.client_id}
        assert n == 8 * len(others)
        assert set(m.remote_clients[:n].tolist()) == others
        for c in others:
            sent = methods[c].outgoing_payload()["features"]
            got = m.remote_features[:n][m.remote_clients[:n] == c].numpy()
            np.testing.assert_array_equal(got, sent)
    first_round = [m.remote_features[: int(m.remote_count)].clone() for m in methods]

    # Next round: every client trains on new slices, refills its bank, and the exchange replaces
    # the remote banks; no feature of the first round remains.
    for m in methods:
        m.begin_round(1, 2)
        for step in range(2):
            m.training_step(
                _batch(seed=10 + step + m.client_id), torch.Generator().manual_seed(step)
            )
    _exchange(methods)
    for m, old in zip(methods, first_round, strict=False):
        n = int(m.remote_count)
        assert n == 2 * 16  # two other clients, full local banks of 16
        new = m.remote_features[:n]
        expected = np.concatenate(
            [methods[c].outgoing_payload()["features"] for c in range(3) if c != m.client_id]
        )
        np.testing.assert_array_equal(new.numpy(), expected)
        # None of the old rows survives (they were all pushed out of the senders' FIFO banks).
        assert torch.cdist(old, new).min() > 1e-6

    # An empty forward (nothing from the server) clears the remote bank as well.
    methods[0].incoming_payload({})
    assert int(methods[0].remote_count) == 0


def test_payload_holds_only_small_feature_vectors_and_partition_ids():
    method = _method()
    method.begin_round(0, 1)
    batch = _batch(size=32)
    method.training_step(batch, torch.Generator().manual_seed(0))
    payload = method.outgoing_payload()
    assert set(payload) == {"features", "partitions"}
    features, partitions = payload["features"], payload["partitions"]
    assert features.dtype == np.float32 and features.ndim == 2 and features.shape[1] == 8
    assert np.issubdtype(partitions.dtype, np.integer) and partitions.shape == (features.shape[0],)
    assert set(partitions.tolist()) <= set(range(4))
    image_pixels = batch["image"][0].numel()
    for array in payload.values():
        assert (
            array.ndim <= 2
            and array.shape[-1] < image_pixels
            and array.nbytes < batch["image"].numpy().nbytes
        )
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)


def test_local_cl_sends_nothing_and_keeps_no_remote_bank():
    methods = [_method(LocalCL, client_id=c) for c in range(3)]
    assert LocalCL.federation == "none" and FCL.federation == "fedavg"
    for m in methods:
        m.begin_round(0, 1)
        out = m.training_step(_batch(seed=m.client_id), torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss"])
        assert m.outgoing_payload() == {}
    methods[0].incoming_payload(
        {1: {"features": np.zeros((4, 8), np.float32), "partitions": np.zeros(4, np.int32)}}
    )
    assert int(methods[0].remote_count) == 0 and methods[0].remote_features.shape[0] == 0


def test_momentum_networks_and_banks_stay_local():
    method = _method()
    local = set(method.local_state())
    assert any(k.startswith("momentum_encoder.") for k in local)
    assert {"bank_features", "bank_partitions", "remote_features", "remote_partitions"} <= local
    shared = set(method.shared_state())
    assert any(k.startswith("unet.encoder.") for k in shared)
    assert any(k.startswith("projection.") for k in shared)
    assert not any(k.startswith(("momentum_", "bank_", "remote_")) for k in shared)


def test_perfect_partition_features_reach_the_loss_floor_not_zero():
    """With the paper's denominator (all of Q'), features that encode their partition
    perfectly still pay log(1 + K / P) per term: FCL's floor, well above 0 (bench.diagnostics)."""
    partitions, sampled_count, temperature = 4, 64, 0.05
    prototypes = torch.eye(partitions, 8)  # far apart: orthogonal
    query_parts = torch.arange(partitions).repeat(2)
    sampled_parts = torch.arange(partitions).repeat(sampled_count // partitions)
    out = fcl_loss(
        prototypes[query_parts],
        query_parts,
        prototypes[query_parts],
        query_parts,
        prototypes[sampled_parts],
        sampled_parts,
        temperature,
    )
    floor = loss_floor("fcl", partitions, {"num_sampled": sampled_count})
    assert floor == pytest.approx(2 * math.log(1 + sampled_count / partitions))
    assert float(out["loss"]) == pytest.approx(floor, rel=1e-6)
    assert floor / uniform_loss("fcl", 8, partitions, {"num_sampled": sampled_count}) < 0.7
    other_partitions = {"num_sampled": 64, "negatives": "other_partitions"}
    assert loss_floor("fcl", partitions, other_partitions) is None


def test_local_negatives_batch_contrasts_the_local_positives_with_other_partitions_keys():
    """``local_negatives: batch``: the local term's denominator holds the current batch's keys
    of other partitions, not the bank; the bank term is unchanged."""
    t = torch.tensor
    query, query_parts = t([[1.0, 0.0]]), t([0])
    keys, key_parts = t([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]), t([0, 0, 1])
    sampled, sampled_parts = t([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), t([0, 1, 1])
    args = (query, query_parts, keys, key_parts, sampled, sampled_parts, 0.5)
    bank, batch = (fcl_loss(*args, local_negatives=where) for where in ("bank", "batch"))
    assert float(batch["bank"]) == pytest.approx(float(bank["bank"]))
    # P(q): keys[1] (keys[0] is q's own other view); negatives: keys[2], the other partition.
    expected = _l(query[0], [keys[1]], [keys[2]], 0.5)
    assert float(batch["local"]) == pytest.approx(expected)
    assert float(bank["local"]) == pytest.approx(_l(query[0], [keys[1]], list(sampled), 0.5))
    with pytest.raises(ValueError, match="local_negatives"):
        fcl_loss(*args, local_negatives="queue")
