"""The standard methods compute the loss they claim to: wiring of lightly's parts, checked directly.

Each test replays the method's augmentation with a generator seeded like the
one given to ``training_step`` and recomputes the loss from the same modules.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.augment import random_rotation90, random_view
from bench.backbone import UNet2D
from bench.registry import get_method

WIDTHS = (8, 16, 32, 64)


def build(name: str, **hparams):
    torch.manual_seed(0)
    method = get_method(name)(UNet2D(widths=WIDTHS), hparams, num_clients=2, client_id=0)
    method.begin_round(0, 4)
    method.train()
    return method


def images(n: int = 16, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(size=(n, 1, 64, 64)).astype(np.float32))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def two_views(x: torch.Tensor, generator: torch.Generator):
    return random_view(x, generator)[0], random_view(x, generator)[0]


# -- FedRotation --------------------------------------------------------------
def test_rotation_criterion_is_cross_entropy_on_hand_made_logits():
    method = build("fedrotation")
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5], [1.0, 1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 2, 3])
    expected = -np.mean(
        [
            np.log(np.exp(row[k]) / np.exp(row).sum())
            for row, k in zip(logits.numpy(), labels.numpy(), strict=False)
        ]
    )
    assert method.criterion(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # Four equal logits: chance level, log 4.
    assert method.criterion(logits[2:], labels[2:]).item() == pytest.approx(np.log(4), rel=1e-6)


@pytest.mark.parametrize("augment", [False, True])
def test_rotation_step_is_cross_entropy_of_the_rotation_labels(augment):
    method = build("fedrotation", augment=augment)
    x = images()
    out = method.training_step({"image": x}, seeded(3))

    generator = seeded(3)
    base = random_view(x, generator)[0] if augment else x
    rotated, k = random_rotation90(base, generator)
    for image, source, turns in zip(rotated, base, k, strict=False):
        assert torch.equal(image, torch.rot90(source, int(turns), dims=(1, 2)))
    logits = method.classifier(method.unet.encoder.embed(rotated))
    expected = F.cross_entropy(logits, k)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert len(set(k.tolist())) > 1


# -- BYOL -------------------------------------------------------------------
def test_byol_loss_is_symmetrised_negative_cosine_to_the_target():
    method = build("byol")
    x = images()
    loss = method.training_step({"image": x}, seeded(1))["loss"]

    view_a, view_b = two_views(x, seeded(1))
    p_a = method.prediction(method.projection(method.unet.encoder.embed(view_a)))
    p_b = method.prediction(method.projection(method.unet.encoder.embed(view_b)))
    with torch.no_grad():
        z_a = method.target_projection(method.target_encoder.embed(view_a))
        z_b = method.target_projection(method.target_encoder.embed(view_b))
    expected = -0.5 * (F.cosine_similarity(p_a, z_b).mean() + F.cosine_similarity(p_b, z_a).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_byol_target_starts_as_online_copy_and_follows_by_ema():
    method = build("byol")
    online = dict(method.unet.encoder.named_parameters())
    for key, p in method.target_encoder.named_parameters():
        assert torch.equal(p, online[key]) and not p.requires_grad
    loss = method.training_step({"image": images()}, seeded(2))["loss"]
    optimizer = torch.optim.SGD(method.optimizer_parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    old = {k: p.detach().clone() for k, p in method.target_encoder.named_parameters()}
    m = method.momentum
    assert 0.99 <= m < 1.0
    method.after_optimizer_step()
    for key, p in method.target_encoder.named_parameters():
        torch.testing.assert_close(p, m * old[key] + (1 - m) * online[key].detach())
    # The target network stays on the client unless share_target is set.
    assert not any(k.startswith("target_") for k in method.shared_state())
    assert any(k.startswith("target_") for k in build("byol", share_target=True).shared_state())


def test_momentum_schedule_over_rounds():
    from bench.methods._momentum import momentum_for_round

    assert momentum_for_round(0.99, 0.99, 3, 10) == 0.99
    values = [momentum_for_round(0.99, 1.0, r, 10) for r in range(10)]
    assert values[0] == pytest.approx(0.99)
    assert all(a < b for a, b in itertools.pairwise(values))
    assert values[-1] < 1.0


# -- MoCo ------------------------------------------------------------------
def test_moco_loss_is_infonce_against_the_queue_then_keys_are_enqueued():
    method = build("moco", queue_size=40)
    bank = method.criterion.memory_bank
    queue_before = bank.bank.clone()
    x = images()
    loss = method.training_step({"image": x}, seeded(4))["loss"]

    view_q, view_k = two_views(x, seeded(4))
    q = F.normalize(method.projection(method.unet.encoder.embed(view_q)), dim=1)
    with torch.no_grad():
        k = F.normalize(method.momentum_projection(method.momentum_encoder.embed(view_k)), dim=1)
    logits = (
        torch.cat([(q * k).sum(1, keepdim=True), q @ queue_before.T], dim=1)
        / method.hparams["temperature"]
    )
    expected = F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The batch's keys went into the queue's first rows; the rest is unchanged.
    torch.testing.assert_close(bank.bank[:16], k)
    assert torch.equal(bank.bank[16:], queue_before[16:])
    assert int(bank.bank_ptr) == 16


def test_moco_queue_rotates_and_is_client_state():
    method = build("moco", queue_size=40)
    bank = method.criterion.memory_bank
    pointers = []
    for step in range(4):
        method.training_step({"image": images(seed=step)}, seeded(step))
        pointers.append(int(bank.bank_ptr))
    # 16 keys per step into 40 slots: lightly fills to the end, then starts over.
    assert pointers == [16, 32, 0, 16]
    state = method.state_dict()
    assert {"criterion.memory_bank.bank", "criterion.memory_bank.bank_ptr"} <= set(state)
    assert not any(key.startswith("criterion.") for key in method.shared_state())
    # Without gradients (evaluation), the queue is left as it is.
    before = bank.bank.clone()
    with torch.no_grad():
        method.training_step({"image": images(seed=9)}, seeded(9))
    assert torch.equal(bank.bank, before)


def test_moco_momentum_encoder_is_ema_of_query_encoder():
    method = build("moco")
    loss = method.training_step({"image": images()}, seeded(5))["loss"]
    loss.backward()
    torch.optim.SGD(method.optimizer_parameters(), lr=0.1).step()
    old = {k: p.detach().clone() for k, p in method.momentum_projection.named_parameters()}
    method.after_optimizer_step()
    m = method.hparams["momentum"]
    for key, p in method.momentum_projection.named_parameters():
        online = dict(method.projection.named_parameters())[key].detach()
        torch.testing.assert_close(p, m * old[key] + (1 - m) * online)


# -- Barlow Twins and VICReg -------------------------------------------------
def projections(method, x, seed):
    view_a, view_b = two_views(x, seeded(seed))
    return (
        method.projection(method.unet.encoder.embed(view_a)),
        method.projection(method.unet.encoder.embed(view_b)),
    )


def test_barlow_twins_loss_is_cross_correlation_to_identity():
    method = build("barlow_twins")
    x = images()
    loss = method.training_step({"image": x}, seeded(6))["loss"]
    z_a, z_b = projections(method, x, 6)

    def standardise(z):
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

    c = standardise(z_a).T @ standardise(z_b) / len(x)
    off = c - torch.diag(torch.diagonal(c))
    expected = ((torch.diagonal(c) - 1) ** 2).sum() + method.hparams["lambda_param"] * (
        off**2
    ).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_vicreg_loss_is_invariance_variance_covariance():
    method = build("vicreg")
    x = images()
    loss = method.training_step({"image": x}, seeded(7))["loss"]
    z_a, z_b = projections(method, x, 7)
    dim = z_a.shape[1]

    def variance(z):
        return F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()

    def covariance(z):
        cov = torch.cov(z.T)
        return (cov - torch.diag(torch.diagonal(cov))).pow(2).sum() / dim

    hp = method.hparams
    expected = (
        hp["lambda_param"] * F.mse_loss(z_a, z_b)
        + hp["mu_param"] * 0.5 * (variance(z_a) + variance(z_b))
        + hp["nu_param"] * (covariance(z_a) + covariance(z_b))
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


# -- SwAV ------------------------------------------------------------------
def test_swav_loss_is_swapped_prediction_of_sinkhorn_codes():
    from lightly.loss.swav_loss import sinkhorn

    method = build("swav")
    x = images()
    loss = method.training_step({"image": x}, seeded(8))["loss"]
    # The step first put the prototypes back on the unit sphere.
    norms = method.prototypes.heads[0].weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))

    view_a, view_b = two_views(x, seeded(8))
    hp = method.hparams

    def scores(view):
        z = F.normalize(method.projection(method.unet.encoder.embed(view)), dim=1)
        return method.prototypes(z)

    s_a, s_b = scores(view_a), scores(view_b)
    codes = [
        sinkhorn(s.detach(), hp["sinkhorn_iterations"], hp["sinkhorn_epsilon"]) for s in (s_a, s_b)
    ]

    def cross_entropy(s, q):
        return -(q * F.log_softmax(s / hp["temperature"], dim=1)).sum(1).mean()

    expected = 0.5 * (cross_entropy(s_b, codes[0]) + cross_entropy(s_a, codes[1]))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
