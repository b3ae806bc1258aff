"""PGL: alignment of two views' feature maps with their known transforms, and the local loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.augment import apply_affine, random_affine_theta
from bench.backbone import UNet2D
from bench.methods.pgl import PGL, LocalHead, align_to_view, masked_byol_loss

IDENTITY = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])


def _smooth_map(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Low-frequency feature maps: sums of a few sinusoids of the normalised coordinates."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.arange(size) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    maps = torch.zeros(batch, channels, size, size)
    for _ in range(3):
        fy, fx, phase = torch.rand(3, batch, channels, 1, 1, generator=g) * torch.tensor(
            [2.0, 2.0, 6.0]
        ).view(3, 1, 1, 1, 1)
        maps += torch.sin(math.pi * (fy * y + fx * x) + phase)
    return maps


def test_integer_shift_aligns_back_exactly_on_the_overlap():
    size, shift = 16, 3
    original = torch.randn(1, 2, size, size, generator=torch.Generator().manual_seed(0))
    theta_b = IDENTITY.clone()
    theta_b[0, 0, 2] = 2 * shift / size  # view B shows the slice moved by 3 pixels
    view_a = original  # view A: the slice itself
    view_b = apply_affine(original, theta_b)
    aligned, mask = align_to_view(view_b, IDENTITY, theta_b)
    # Columns of A that B does not cover (the first 3) are masked out; the rest match exactly.
    assert int(mask.sum()) == size * (size - shift)
    assert not mask[0, 0, :, :shift].any() and mask[0, 0, :, shift:].all()
    torch.testing.assert_close(aligned * mask, view_a * mask, atol=1e-5, rtol=0)


def test_flip_aligns_back_everywhere():
    original = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    flip = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    aligned, mask = align_to_view(apply_affine(original, flip), IDENTITY, flip)
    assert mask.all()
    torch.testing.assert_close(aligned, original, atol=1e-5, rtol=0)


def test_random_views_of_a_smooth_map_align_on_their_overlap():
    """Two random crops/rotations/flips of one map: B aligned into A's frame matches A where
    valid."""
    generator = torch.Generator().manual_seed(0)
    original = _smooth_map(6, 4, 128)
    theta_a = random_affine_theta(6, generator)
    theta_b = random_affine_theta(6, generator)
    view_a = apply_affine(original, theta_a)
    view_b = apply_affine(original, theta_b)
    aligned, mask = align_to_view(view_b, theta_a, theta_b)
    assert mask.float().mean() > 0.2  # crops of at least 60% of the side overlap
    error = ((aligned - view_a).abs() * mask).amax()
    assert float(error) < 0.02  # bilinear resampling twice of a smooth map (values in [-3, 3])
    # Unaligned, the views disagree much more on the same positions.
    assert float(((view_b - view_a).abs() * mask).mean()) > 5 * float(
        ((aligned - view_a).abs() * mask).mean()
    )
    # The local loss of the aligned smooth features is close to 0, far from that of unaligned ones.
    assert float(masked_byol_loss(view_a, aligned, mask)) < 0.02
    assert float(masked_byol_loss(view_a, view_b, mask)) > 10 * float(
        masked_byol_loss(view_a, aligned, mask)
    )


def test_masked_loss_is_zero_for_identical_features_and_counts_only_valid_positions():
    features = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:6, 2:6] = True
    assert float(masked_byol_loss(features, features, mask)) == pytest.approx(0.0, abs=1e-6)
    other = features.clone()
    other[:, :, 0, 0] = -features[:, :, 0, 0]  # outside the mask: ignored
    assert float(masked_byol_loss(features, other, mask)) == pytest.approx(0.0, abs=1e-6)
    other[:, :, 3, 3] = -features[:, :, 3, 3]  # inside: 2 - 2 cos = 4 at 1 of 16 positions
    assert float(masked_byol_loss(features, other, mask)) == pytest.approx(4 / 16, rel=1e-5)
    assert float(masked_byol_loss(features, other, torch.zeros_like(mask))) == 0.0


def test_training_step_trains_online_networks_and_leaves_the_target_local():
    torch.manual_seed(0)
    method = PGL(
        UNet2D(widths=(4, 8, 16)),
        {"hidden_dim": 32, "projection_dim": 8, "local_hidden_dim": 8, "local_dim": 8},
    )
    method.begin_round(0, 2)
    method.train()
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = method.training_step({"image": images}, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and 0 <= float(out["local_term"]) <= 4
    out["loss"].backward()
    for part in (
        method.unet.encoder,
        method.unet.decoder,
        method.local_projection,
        method.local_prediction,
    ):
        assert all(p.grad is not None for p in part.parameters())
    for part in (method.target_encoder, method.target_decoder, method.target_local_projection):
        assert all(p.grad is None and not p.requires_grad for p in part.parameters())
    local = method.local_state()
    assert any(k.startswith("target_decoder.") for k in local)
    assert not any(k.startswith("target_") for k in method.shared_state())
    assert method.pretrained_parts == ("encoder", "decoder")


def test_local_head_matrix_products_equal_the_1x1_convolutions():
    """LocalHead's GEMM form is the same function (and gradients) as its modules run in sequence."""
    torch.manual_seed(0)
    head = LocalHead(6, 10, 5).train()
    maps = torch.randn(3, 6, 7, 9, requires_grad=True)
    reference = nn.Sequential.forward(head, maps)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), maps)
    out = head(maps)
    (grad,) = torch.autograd.grad(out.square().sum(), maps)
    assert out.shape == (3, 5, 7, 9)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-5)
    assert list(head.state_dict()) == [
        "0.weight",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.weight",
        "3.bias",
    ]
