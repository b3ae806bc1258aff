"""The synthetic HVSMR phantom: near-isotropic 3D crops with myocardium (1) and blood pool (2).

uint16 labels and an affine carrying the spacing, in HVSMR 2016's file layout.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

from ._phantom import Look, bias_field, finish_image, seeded_rng, smooth_noise
from ._pool import run_tasks


def _ellipsoid(grid, centre, radii, rot) -> np.ndarray:
    """Normalised squared distance (< 1 inside) of an oriented ellipsoid."""
    q = [g - c for g, c in zip(grid, centre, strict=False)]
    total = 0
    for k in range(3):
        comp = q[0] * rot[0, k] + q[1] * rot[1, k] + q[2] * rot[2, k]
        total = total + (comp / radii[k]) ** 2
    return total


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)) * 0.35 + np.eye(3))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _write_hvsmr_patient(
    out: Path, name: str, seed: int, i: int, size_range, scale, labeled: bool
) -> None:
    rng = seeded_rng(seed, 3, i)
    sp_xy = float(np.round(rng.uniform(0.7, 1.05), 4))
    sp_z = float(np.round(rng.uniform(0.65, 0.9), 4))
    shape = tuple(int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(3))
    spacing = (sp_z, sp_xy, sp_xy)  # (z, y, x)
    fov = min(n * s for n, s in zip(shape, spacing, strict=False))
    s = scale if scale is not None else fov / 90.0
    grid = [
        ((np.arange(n, dtype=np.float32) - n / 2 + 0.5) * sp).reshape(
            [-1 if k == j else 1 for k in range(3)]
        )
        for j, (n, sp) in enumerate(zip(shape, spacing, strict=False))
    ]
    rot = _rotation(rng)
    c = rng.normal(0, 4, 3) * s
    size = rng.uniform(0.8, 1.2)
    blood = np.zeros(shape, bool)
    myo = np.zeros(shape, bool)
    # ventricles: LV with a thick shell, RV beside it with a thin one
    lv_r = np.array([34, 17, 17]) * s * size
    lv_c = c + rot[:, 0] * 4 * s
    lv = _ellipsoid(grid, lv_c, lv_r, rot)
    wall = 5.5 * s
    blood |= lv < 1
    myo |= _ellipsoid(grid, lv_c, lv_r + wall, rot) < 1
    rv_r = np.array([30, 12, 20]) * s * size * rng.uniform(0.8, 1.3)
    rv_c = lv_c + rot[:, 1] * (lv_r[1] + wall + 0.6 * rv_r[1])
    blood |= _ellipsoid(grid, rv_c, rv_r, rot) < 1
    myo |= _ellipsoid(grid, rv_c, rv_r + 2.5 * s, rot) < 1
    # atria and great vessels: blood pool without labeled wall
    for along, side, r in ((-1.0, -0.4, 15), (-1.0, 1.2, 14), (-0.6, 0.4, 8), (-0.5, -0.2, 9)):
        centre = lv_c + rot[:, 0] * along * lv_r[0] + rot[:, 1] * side * lv_r[1]
        radii = np.array([r * 1.6, r, r]) * s * rng.uniform(0.8, 1.2)
        blood |= _ellipsoid(grid, centre, radii, _rotation(rng)) < 1
    myo &= ~blood
    label = (myo * 1 + blood * 2).astype(np.uint16)
    look = Look(
        blood=rng.uniform(0.75, 0.9),
        myo=rng.uniform(0.3, 0.4),
        tissue=rng.uniform(0.45, 0.6),
        noise=rng.uniform(0.02, 0.04),
        dtype=str(rng.choice(["float64", "int16"])),
        gain=1.0,
    )
    look.gain = rng.uniform(200, 1200) if look.dtype == "int16" else rng.uniform(0.5, 300)
    tissue = look.tissue + 0.1 * smooth_noise(rng, shape, 8)
    lungs = smooth_noise(rng, shape, 24) > 0.9
    image = np.where(lungs, 0.05, tissue).astype(np.float32)
    image = np.where(blood, look.blood, np.where(myo, look.myo, image)).astype(np.float32)
    image *= bias_field(rng, shape)
    image = finish_image(image, look, rng, 0.5)
    affine = np.diag([sp_xy, sp_xy, sp_z, 1.0])
    affine[:3, 3] = np.round(rng.normal(0, 40, 3), 2)
    for data, suffix in ((image, ""), (label, "-label")):
        if suffix and not labeled:
            continue
        img = nib.Nifti1Image(np.transpose(data, (2, 1, 0)), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, str(out / f"{name}{suffix}.nii.gz"))


def _write_hvsmr(
    out, n_train, n_test, seed, size_range, scale, test_labels, progress, workers
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(f"training_axial_crop_pat{i}", i, True) for i in range(n_train)]
    jobs += [
        (f"testing_axial_crop_pat{n_train + i}", n_train + i, test_labels) for i in range(n_test)
    ]
    run_tasks(
        [
            partial(_write_hvsmr_patient, out, name, seed, i, size_range, scale, labeled)
            for name, i, labeled in jobs
        ],
        workers=workers,
        progress=progress,
        desc="synth hvsmr",
        unit="patient",
    )
