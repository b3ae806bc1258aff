"""Non-contrastive methods do not collapse on structured images in a short run.

Images: random disks and rings of varying centre, radius and brightness on
64 x 64 (made here with numpy). After 30 steps the spread of a held batch's
embeddings is checked with the measure of SimSiam (Chen & He 2021, Sec. 4):
the per-dimension standard deviation of L2-normalised vectors, times sqrt(dim),
which is 1 for vectors spread evenly over the sphere and 0 when collapsed.

- On the method's own output (the projection the loss acts on) it must stay
  above 0.3: a third of the isotropic value, while a collapsed output gives 0.
- The pooled U-Net bottleneck of a randomly initialised encoder already points
  one way (every embedding has cosine ~0.999 to the others: LeakyReLU features
  averaged over the image), so there the floor is relative: at least half of
  the value at initialisation, and the effective rank of the centred
  embeddings at least half of its initial value (a collapsed encoder: 0 and 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.backbone import UNet2D
from bench.registry import get_method

NON_CONTRASTIVE = ["byol", "barlow_twins", "vicreg", "swav"]
STEPS = 30
FLOOR = 0.3


pytestmark = pytest.mark.usefixtures("one_thread")


def disks_and_rings(n: int, rng: np.random.Generator, size: int = 64) -> torch.Tensor:
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, 1, size, size), np.float32)
    for image in out:
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(12, size - 12, 2)
            radius = rng.uniform(4, 14)
            distance = np.hypot(yy - cy, xx - cx)
            if rng.random() < 0.5:
                shape = distance < radius
            else:
                shape = np.abs(distance - radius) < rng.uniform(1.5, 4)
            image[0][shape] += rng.uniform(0.5, 1.5)
    out += rng.normal(0, 0.05, out.shape).astype(np.float32)
    return torch.from_numpy(out)


def spread(vectors: torch.Tensor) -> float:
    """SimSiam's collapse measure, scaled by sqrt(dim): 1 isotropic, 0 collapsed."""
    unit = F.normalize(vectors, dim=1)
    return float(unit.std(dim=0).mean() * vectors.shape[1] ** 0.5)


def effective_rank(vectors: torch.Tensor) -> float:
    """exp(entropy) of the singular values of the centred, L2-normalised vectors (Roy & Vetterli
    2007)."""
    unit = F.normalize(vectors, dim=1)
    values = torch.linalg.svdvals(unit - unit.mean(dim=0))
    p = values / values.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def outputs(method, images):
    with torch.no_grad():
        embedding = method.unet.encoder.embed(images)
        return embedding, method.projection(embedding)


@pytest.mark.slow
@pytest.mark.parametrize("name", NON_CONTRASTIVE)
def test_no_collapse_on_disks_and_rings(name):
    torch.manual_seed(0)
    method = get_method(name)(UNet2D(widths=(8, 16, 32, 64)), {})
    method.begin_round(0, 1)
    method.train()
    optimizer = torch.optim.Adam(method.optimizer_parameters(), lr=1e-3)
    held = disks_and_rings(64, np.random.default_rng(123))
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    start_embedding, _ = outputs(method, held)

    losses = []
    for _ in range(STEPS):
        loss = method.training_step({"image": disks_and_rings(16, rng)}, generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), f"{name}: loss did not go down: {losses}"

    embedding, projection = outputs(method, held)
    assert spread(projection) > FLOOR, f"{name}: projection spread {spread(projection):.3f}"
    assert spread(embedding) > 0.5 * spread(start_embedding)
    assert effective_rank(embedding) > 0.5 * effective_rank(start_embedding)
