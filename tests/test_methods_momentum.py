"""The momentum base: one place copies, freezes, starts, schedules and applies the EMA."""

from __future__ import annotations

import inspect

import pytest
import torch

from bench.backbone import UNet2D
from bench.methods._momentum import MomentumMethod, momentum_for_round
from bench.registry import available_methods

WIDTHS = (8, 16)
MOMENTUM = [name for name, cls in available_methods().items() if issubclass(cls, MomentumMethod)]


def build(name: str, **hparams):
    torch.manual_seed(0)
    return available_methods()[name](UNet2D(widths=WIDTHS), hparams, num_clients=2)


def test_the_methods_with_momentum_networks_use_the_base():
    assert sorted(MOMENTUM) == ["byol", "fcl", "local_cl", "moco", "pgl"]
    for name in MOMENTUM:
        cls = available_methods()[name]
        # No method keeps its own copy of the round-0 start or of the EMA (FCL's begin_round
        # only empties its bank, after the base's).
        assert "after_optimizer_step" not in vars(cls), name
        source = inspect.getsource(inspect.getmodule(cls))
        for idiom in ("update_momentum", "deepcopy", "deactivate_requires_grad", "momentum_copy"):
            assert idiom not in source, (name, idiom)


@pytest.mark.parametrize("name", MOMENTUM)
def test_targets_are_frozen_copies_started_in_round_0_and_updated_by_the_ema(name):
    method = build(name)
    pairs = method.momentum_pairs()
    assert pairs and all(online is not target for online, target in pairs)
    for online, target in pairs:
        assert all(not p.requires_grad for p in target.parameters())
        assert all(p.requires_grad for p in online.parameters())
        # What FedAvg would have written into the online network before round 0.
        with torch.no_grad():
            for p in online.parameters():
                p.add_(1.0)
    method.begin_round(0, 4)
    for online, target in pairs:
        for p, q in zip(online.parameters(), target.parameters(), strict=True):
            assert torch.equal(p, q)
    with torch.no_grad():
        for online, _ in pairs:
            for p in online.parameters():
                p.mul_(2.0)
    before = [[q.clone() for q in target.parameters()] for _, target in pairs]
    m = method.momentum
    method.after_optimizer_step()
    for (online, target), old in zip(pairs, before, strict=True):
        for p, q, q_old in zip(online.parameters(), target.parameters(), old, strict=True):
            torch.testing.assert_close(q, q_old * m + p * (1 - m))


def test_a_later_round_does_not_restart_the_targets():
    method = build("moco")
    method.begin_round(0, 4)
    online, target = method.momentum_pairs()[0]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    method.begin_round(1, 4)
    assert not all(
        torch.equal(p, q) for p, q in zip(online.parameters(), target.parameters(), strict=True)
    )


def test_the_coefficient_follows_the_schedule_over_rounds():
    byol = build("byol", momentum=0.9, momentum_end=1.0)
    fcl = build("fcl", momentum=0.95)
    for round_index in range(5):
        byol.begin_round(round_index, 5)
        fcl.begin_round(round_index, 5)
        assert byol.momentum == momentum_for_round(0.9, 1.0, round_index, 5)
        assert fcl.momentum == 0.95  # no momentum_end: constant
