"""Batched, seeded augmentation on tensors.

Every random draw comes from the ``torch.Generator`` passed in, so a client's
augmentations are reproducible for a given (seed, round, client). Spatial
augmentations return the affine matrices they applied (``theta``, in
``F.affine_grid``'s convention: output coordinates -> input coordinates, both
normalised to [-1, 1]) so that methods such as PGL can map one view's feature
map onto the other's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device="cpu").to(device)


def random_affine_theta(
    batch_size: int,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.6, 1.0),
    max_rotation_deg: float = 15.0,
    flip: bool = True,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random crop (side fraction ``scale``), rotation and horizontal flip as (B, 2, 3)."""
    side = _uniform(batch_size, *scale, generator, device)
    angle = (
        _uniform(batch_size, -max_rotation_deg, max_rotation_deg, generator, device) * math.pi / 180
    )
    sign = torch.ones(batch_size, device=device)
    if flip:
        sign = torch.where(_uniform(batch_size, 0, 1, generator, device) < 0.5, -sign, sign)
    # The crop centre stays where the whole crop fits inside the image.
    room = 1.0 - side
    tx = _uniform(batch_size, -1, 1, generator, device) * room
    ty = _uniform(batch_size, -1, 1, generator, device) * room
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack(
        [torch.stack([cos * sign, -sin, tx], dim=1), torch.stack([sin * sign, cos, ty], dim=1)],
        dim=1,
    )
    return theta


def apply_affine(images: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def relative_theta(theta_a: torch.Tensor, theta_b: torch.Tensor) -> torch.Tensor:
    """Affine mapping view A's normalised coordinates to view B's.

    Sampling B's feature map with ``apply_affine(feat_b, relative_theta(a, b))``
    brings it into A's frame.
    """
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=theta_a.dtype, device=theta_a.device)
    bottom = bottom.expand(theta_a.shape[0], 1, 3)
    homogeneous_a = torch.cat([theta_a, bottom], dim=1)
    homogeneous_b = torch.cat([theta_b, bottom], dim=1)
    return (torch.linalg.inv(homogeneous_b) @ homogeneous_a)[:, :2]


def random_intensity(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    gamma: tuple[float, float] = (0.7, 1.5),
    noise_std: float = 0.05,
) -> torch.Tensor:
    """Brightness, contrast, gamma and Gaussian noise, drawn per image."""
    n, device = images.shape[0], images.device
    shape = (n, 1, 1, 1)
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    unit = (images - lo) / (hi - lo).clamp_min(1e-6)
    unit = unit.pow(
        torch.exp(_uniform(n, math.log(gamma[0]), math.log(gamma[1]), generator, device)).view(
            shape
        )
    )
    out = unit * (hi - lo) + lo
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * (1 + _uniform(n, -contrast, contrast, generator, device)).view(
        shape
    ) + mean
    out = out + _uniform(n, -brightness, brightness, generator, device).view(shape) * (hi - lo)
    noise = torch.randn(out.shape, generator=generator, device="cpu").to(device)
    return out + noise_std * (hi - lo) * noise


def random_view(
    images: torch.Tensor, generator: torch.Generator, **spatial
) -> tuple[torch.Tensor, torch.Tensor]:
    """One spatially and intensity-augmented view, with the affine that made it."""
    theta = random_affine_theta(images.shape[0], generator, device=images.device, **spatial)
    return random_intensity(apply_affine(images, theta), generator), theta


def random_rotation90(
    images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates each image by k * 90 degrees; returns the images and k in {0, 1, 2, 3}."""
    k = torch.randint(0, 4, (images.shape[0],), generator=generator)
    rotated = torch.stack(
        [torch.rot90(img, int(turns), dims=(1, 2)) for img, turns in zip(images, k, strict=False)]
    )
    return rotated, k.to(images.device)
