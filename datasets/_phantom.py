"""What the synthetic phantoms share: the scanner's look, smooth noise, bias field, noise model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Look:
    blood: float
    myo: float
    tissue: float
    noise: float
    dtype: str
    gain: float


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def smooth_noise(rng, shape, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field: coarse noise upsampled linearly."""
    coarse = rng.standard_normal([max(2, s // cell + 2) for s in shape]).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse.shape, strict=False)]
    out = ndimage.zoom(coarse, zoom, order=1, grid_mode=True, mode="nearest")
    return out[tuple(slice(0, s) for s in shape)]


def bias_field(rng, shape) -> np.ndarray:
    """Smooth multiplicative bias field (about 0.75-1.3)."""
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    log = sum(rng.normal(0, 0.12) * g + rng.normal(0, 0.08) * g * g for g in grids)
    log = log + rng.normal(0, 0.08) * grids[-1] * grids[-2]
    return np.exp(log).astype(np.float32)


def finish_image(image: np.ndarray, look: Look, rng, sigma) -> np.ndarray:
    """Partial-volume blur, Rician noise, then the file's dtype and value range."""
    image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    n1 = rng.standard_normal(image.shape, dtype=np.float32)
    n2 = rng.standard_normal(image.shape, dtype=np.float32)
    image = np.sqrt((image + look.noise * n1) ** 2 + (look.noise * n2) ** 2)
    if look.dtype == "uint8":
        return np.clip(np.rint(image * look.gain), 0, 255).astype(np.uint8)
    if look.dtype == "int16":
        return np.clip(np.rint(image * look.gain), 0, 32767).astype(np.int16)
    return (image * look.gain).astype(look.dtype)
