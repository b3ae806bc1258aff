"""Every registered method fulfils the contract of methods/base.py.

Parametrised over ``available_methods()``, so methods added later are covered too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from bench.backbone import UNet2D
from bench.registry import available_methods
from bench.sampling import SliceStack

METHODS = available_methods()
TRAINED = [name for name, cls in METHODS.items() if cls.needs_pretraining]
WIDTHS = (8, 16, 32, 64)
# The paper's U-Net, and a timm encoder (BatchNorm swapped for instance norm) under it.
# The timm cases run in the full suite (CI), not in the fast tier.
ENCODERS = ["unet", pytest.param("timm/resnet18", marks=pytest.mark.slow)]


def build(name: str, client_id: int = 0, seed: int = 0, encoder: str = "unet"):
    torch.manual_seed(seed)
    unet = UNet2D(widths=WIDTHS, encoder=encoder)
    # A timm encoder downsamples 64-px slices to 2 x 2: no smaller crop leaves GCL's local
    # stage room for a shift, so it compares the paper's aligned views.
    hparams = {"local_crop": 1.0} if name == "gcl" and encoder != "unet" else {}
    return METHODS[name](unet, hparams, num_clients=2, client_id=client_id)


def batch(seed: int = 0, client: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    volumes = [
        rng.normal(size=(int(rng.integers(5, 10)), 64, 64)).astype(np.float32) for _ in range(5)
    ]
    return SliceStack(volumes, partitions=4).sample(4, torch.Generator().manual_seed(seed), client)


def momentum_parameters(method) -> dict[str, torch.Tensor]:
    """Frozen parameters kept on the client: momentum / target networks."""
    return {
        name: p.detach().clone()
        for name, p in method.named_parameters()
        if not p.requires_grad and not method.is_shared(name)
    }


@pytest.mark.parametrize("name", list(METHODS))
def test_class_attributes(name):
    cls = METHODS[name]
    assert cls.name == name
    assert cls.summary.strip() and "\n" not in cls.summary
    missing = set(cls.defaults) - set(cls.sources)
    assert not missing, f"{name}: defaults without a source: {sorted(missing)}"
    assert all(str(text).strip() for text in cls.sources.values())
    assert cls.federation in {"fedavg", "none"}
    assert set(cls.pretrained_parts) <= {"encoder", "decoder"}
    assert cls.shared_doc.strip() and cls.local_doc.strip()
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        cls(UNet2D(widths=WIDTHS), {"no_such_option": 1})


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", TRAINED)
def test_training_step_gradients_and_momentum(name, encoder):
    method = build(name, client_id=0, encoder=encoder)
    other = build(name, client_id=1, encoder=encoder)
    # Exercise the payload exchange with another client's outgoing arrays.
    other.begin_round(0, 2)
    other.train()
    other.training_step(batch(seed=1, client=1), torch.Generator().manual_seed(1))
    payload = other.outgoing_payload()
    assert all(isinstance(v, np.ndarray) for v in payload.values())
    if payload:
        method.incoming_payload({1: payload})

    method.begin_round(0, 2)
    method.train()
    out = method.training_step(batch(), torch.Generator().manual_seed(0))
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    optimizer = torch.optim.Adam(method.optimizer_parameters(), lr=1e-3)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()

    for key, p in method.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"{name}: frozen parameter {key} got a gradient"
            continue
        if key.startswith("unet.encoder.") or not key.startswith("unet."):
            # The encoder and the method's own heads are all used by the step.
            assert p.grad is not None, f"{name}: {key} got no gradient"
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{name}: {key} has a non-finite gradient"
            # Weights (not biases, which can sit just before a normalisation) must move.
            if p.ndim > 1:
                assert p.grad.abs().sum() > 0, f"{name}: {key} has an all-zero gradient"
    assert not any(
        p is q
        for p in method.optimizer_parameters()
        for q in method.parameters()
        if not q.requires_grad
    )

    before = momentum_parameters(method)
    optimizer.step()
    method.after_optimizer_step()
    if before:
        after = momentum_parameters(method)
        changed = [key for key in before if not torch.equal(before[key], after[key])]
        assert changed, f"{name}: after_optimizer_step left the momentum parameters unchanged"


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", list(METHODS))
def test_shared_state_round_trip_through_flower(name, encoder):
    method, fresh = build(name, seed=0, encoder=encoder), build(name, seed=1, encoder=encoder)
    shared = method.shared_state()
    record = ArrayRecord(torch_state_dict=shared)
    result = fresh.load_state_dict(record.to_torch_state_dict(), strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= set(fresh.local_state())
    reloaded = fresh.shared_state()
    assert set(reloaded) == set(shared)
    for key, value in shared.items():
        assert torch.equal(reloaded[key], value), f"{name}: {key} differs after the round trip"


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", list(METHODS))
def test_state_split(name, encoder):
    method = build(name, encoder=encoder)
    shared, local, full = method.shared_state(), method.local_state(), method.state_dict()
    assert not set(shared) & set(local)
    assert set(shared) | set(local) == set(full)
    for key in local:
        assert not method.is_shared(key)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", list(METHODS))
def test_shared_tensors_are_floating_point(name, encoder):
    shared = build(name, encoder=encoder).shared_state()
    integer = [key for key, value in shared.items() if not value.is_floating_point()]
    assert not integer, f"{name}: shared non-float tensors {integer}"


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", TRAINED)
def test_client_state_survives_a_restart(name, encoder):
    """The engine saves state_dict() and rebuilds the method each round: nothing may be lost."""
    method = build(name, encoder=encoder)
    method.begin_round(0, 2)
    method.train()
    loss = method.training_step(batch(), torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    method.after_optimizer_step()
    restarted = build(name, seed=1, encoder=encoder)
    restarted.load_state_dict(method.state_dict())
    for key, value in method.state_dict().items():
        assert torch.equal(restarted.state_dict()[key], value)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", list(METHODS))
def test_pretrained_state_matches_unet_parts(name, encoder):
    method = build(name, encoder=encoder)
    state = method.pretrained_state()
    assert set(state) == set(method.pretrained_parts)
    for part, part_state in state.items():
        assert set(part_state) == set(getattr(method.unet, part).state_dict())


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(
    "name", [name for name, cls in METHODS.items() if "decoder" in cls.pretrained_parts]
)
def test_decoder_losses_train_the_decoder(name, encoder):
    """GCL's local stage and PGL's dense term reach the decoder's first block, whatever the
    encoder (a timm encoder's skips have other channels than the U-Net's)."""
    method = build(name, encoder=encoder)
    method.begin_round(1, 2)  # GCL: the last round is its local stage
    method.train()
    loss = method.training_step(batch(), torch.Generator().manual_seed(0))["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    first_block = [
        p.grad
        for key, p in method.named_parameters()
        if key.startswith("unet.decoder.ups.0.") and p.ndim > 1
    ]
    assert first_block and all(g is not None and g.abs().sum() > 0 for g in first_block)
