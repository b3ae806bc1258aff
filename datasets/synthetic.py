"""Synthetic cardiac MRI written as real NIfTI files in the ACDC or HVSMR layout.

ACDC: short-axis stacks with an LV cavity (3), a myocardial ring (2) and an RV
crescent (1) whose sizes change from base (slice 0) to apex, so slice position
carries meaning; the five pathology groups change the anatomy, ES has a smaller
cavity than ED. Files carry ACDC's quirks: spacing only in pixdim (sform code 2
with an unscaled affine, qform code 0), image dtypes int16/float32/uint8, ED
not always frame 1. HVSMR: near-isotropic 3D crops with myocardium (1) and
blood pool (2), uint16 labels, affine carrying the spacing.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .acdc import GROUPS

# Per-group anatomy at end-diastole (mm) and contraction: LV cavity radius, wall
# thickness, RV size factor, ES/ED cavity radius ratio (LV, RV), infarct wall gap.
ANATOMY = {
    "NOR": {"lv": 24.0, "wall": 8.0, "rv": 1.0, "es": 0.62, "rv_es": 0.70, "gap": False},
    "DCM": {"lv": 34.0, "wall": 5.5, "rv": 1.0, "es": 0.90, "rv_es": 0.80, "gap": False},
    "HCM": {"lv": 19.0, "wall": 15.0, "rv": 0.9, "es": 0.45, "rv_es": 0.70, "gap": False},
    "MINF": {"lv": 29.0, "wall": 8.0, "rv": 1.0, "es": 0.82, "rv_es": 0.75, "gap": True},
    "RV": {"lv": 22.0, "wall": 8.0, "rv": 1.65, "es": 0.65, "rv_es": 0.88, "gap": False},
}
TINY = {"size_range": (64, 96), "slices_range": (6, 10)}
REAL = {"size_range": (150, 430), "slices_range": (6, 21)}
ACDC_REAL_COUNTS = (100, 50)
HVSMR_REAL_COUNTS = (10, 10)


def acdc_real_sizes() -> dict:
    """Keyword arguments for ACDC's real sizes and patient counts (100 train, 50 test)."""
    return dict(n_train=ACDC_REAL_COUNTS[0], n_test=ACDC_REAL_COUNTS[1], **REAL)


@dataclass
class _Look:
    blood: float
    myo: float
    tissue: float
    noise: float
    dtype: str
    gain: float


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _smooth_noise(rng, shape, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field: coarse noise upsampled linearly."""
    coarse = rng.standard_normal([max(2, s // cell + 2) for s in shape]).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse.shape, strict=False)]
    out = ndimage.zoom(coarse, zoom, order=1, grid_mode=True, mode="nearest")
    return out[tuple(slice(0, s) for s in shape)]


def _bias(rng, shape) -> np.ndarray:
    """Smooth multiplicative bias field (about 0.75-1.3)."""
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    log = sum(rng.normal(0, 0.12) * g + rng.normal(0, 0.08) * g * g for g in grids)
    log = log + rng.normal(0, 0.08) * grids[-1] * grids[-2]
    return np.exp(log).astype(np.float32)


def _finish(image: np.ndarray, look: _Look, rng, sigma) -> np.ndarray:
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


# --------------------------------------------------------------------------- ACDC


@dataclass
class _AcdcCase:
    pid: str
    group: str
    shape: tuple[int, int, int]  # (Z, H, W)
    spacing: float
    slice_spacing: float
    nb_frames: int
    ed: int
    es: int
    height: float
    weight: float


def _acdc_case(
    rng, pid, group, size_range, slices_range, spacing_range, slice_range, nb_frames, force_ed
) -> _AcdcCase:
    lo, hi = size_range
    lo_sp, hi_sp = spacing_range  # most ACDC scans are 1.3-1.7 mm
    sp = float(np.round(rng.triangular(lo_sp, lo_sp + 0.6 * (hi_sp - lo_sp), hi_sp), 4))
    s_lo, s_hi = max(lo, int(260 / sp)), min(hi, int(400 / sp))  # field of view 260-400 mm
    if s_lo > s_hi:
        s_lo, s_hi = lo, hi
    h = int(rng.integers(s_lo, s_hi + 1))
    w = int(np.clip(round(h * rng.choice([1.0, 1.0, 256 / 216, 216 / 256, 1.3])), lo, hi))
    z = int(rng.integers(slices_range[0], slices_range[1] + 1))
    spz = (
        float(rng.choice([5.0, 6.5, 7.0, 8.0, 10.0]))
        if slice_range is None
        else float(np.round(rng.uniform(*slice_range), 2))
    )
    ed = force_ed or (1 if rng.random() < 0.9 else int(rng.integers(2, 5)))
    es = int(np.clip(ed - 1 + round(nb_frames * rng.uniform(0.3, 0.45)), ed + 1, nb_frames))
    return _AcdcCase(
        pid,
        group,
        (z, h, w),
        sp,
        spz,
        nb_frames,
        ed,
        es,
        float(round(np.clip(rng.normal(172, 9), 150, 200))),
        float(round(np.clip(rng.normal(76, 14), 45, 130))),
    )


def _phase_curve(n: int, ed: int, es: int) -> np.ndarray:
    """Contraction in [0, 1] per frame (0 at ED, 1 at ES), smooth and cyclic."""
    k = (np.arange(n) - (ed - 1)) % n
    sys = max(1, (es - ed) % n)
    return np.where(
        k <= sys,
        0.5 - 0.5 * np.cos(np.pi * k / sys),
        0.5 + 0.5 * np.cos(np.pi * (k - sys) / max(1, n - sys)),
    )


class _AcdcHeart:
    """Fixed per-patient geometry; ``render(p)`` draws contraction state ``p`` in [0, 1]."""

    def __init__(self, case: _AcdcCase, rng, scale: float | None):
        z, h, w = case.shape
        sp = case.spacing
        fov = min(h, w) * sp
        self.s = scale if scale is not None else min(1.0, fov / 260.0)
        a = {
            k: (v * rng.normal(1, 0.07) if isinstance(v, float) else v)
            for k, v in ANATOMY[case.group].items()
        }
        self.a, self.case = a, case
        self.yy = ((np.arange(h, dtype=np.float32) - h / 2 + 0.5) * sp)[None, :, None]
        self.xx = ((np.arange(w, dtype=np.float32) - w / 2 + 0.5) * sp)[None, None, :]
        t = np.linspace(0, 1, z, dtype=np.float32)[:, None, None]
        t0, t1 = rng.uniform(-0.12, 0.02), rng.uniform(0.93, 1.1)
        self.u = (t - t0) / (t1 - t0)  # 0 at base, 1 at apex
        off = rng.uniform(-0.06, 0.06, 2) * fov
        drift = rng.normal(0, 4, 2) * self.s
        self.cy = off[0] + drift[0] * (t - 0.5)
        self.cx = off[1] + drift[1] * (t - 0.5)
        self.ecc = rng.uniform(0.92, 1.08)
        self.theta = math.pi + rng.normal(0, 0.25)  # RV to the image left of the LV
        self.rv_end = rng.uniform(0.65, 0.85)
        self.gap_dir = rng.uniform(0, 2 * math.pi)
        self.gap_cos = math.cos(math.radians(rng.uniform(30, 45)))
        # static background: body, lungs, textured tissue, bias
        by, bx = 0.38 * h * sp, 0.46 * w * sp
        body = (self.yy / by) ** 2 + (self.xx / bx) ** 2 < 1
        lungs = np.zeros((1, h, w), bool)
        for side in (-1, 1):
            ly, lx = 0.2 * h * sp, 0.11 * w * sp
            lungs |= ((self.yy + 0.03 * h * sp) / ly) ** 2 + (
                (self.xx - side * 0.27 * w * sp) / lx
            ) ** 2 < 1
        look = self.look = _Look(
            blood=rng.uniform(0.8, 0.95),
            myo=rng.uniform(0.25, 0.35),
            tissue=rng.uniform(0.4, 0.55),
            noise=rng.uniform(0.02, 0.045),
            dtype=str(rng.choice(["int16", "int16", "float32", "uint8"])),
            gain=1.0,
        )
        look.gain = {"uint8": rng.uniform(150, 230), "int16": rng.uniform(250, 1500)}.get(
            look.dtype, rng.uniform(50, 500)
        )
        tissue = look.tissue + 0.08 * _smooth_noise(rng, (z, h, w), 6)
        tissue = np.where(body, np.where(lungs, 0.06, tissue), 0.015).astype(np.float32)
        self.bias = _bias(rng, (z, h, w))
        self.background = tissue * self.bias
        self.affine = np.eye(4)
        self.affine[:3, 3] = np.round(rng.normal(0, 50, 3), 2)

    def render(self, p: float) -> tuple[np.ndarray, np.ndarray]:
        """Label map and noiseless intensity image for contraction ``p``."""
        a, s, u = self.a, self.s, self.u
        r_ed, wall = a["lv"] * s, a["wall"] * s
        r_cav0 = r_ed * (1 - p * (1 - a["es"]))
        r_epi0 = math.sqrt(r_cav0**2 + (r_ed + wall) ** 2 - r_ed**2)  # myocardium keeps its area
        uu = u / (1 - 0.05 * p)  # long-axis shortening in systole
        inside = uu >= 0
        r_cav = np.where(inside, r_cav0 * np.sqrt(np.clip(1 - (uu / 0.9) ** 2, 0, 1)), 0)
        r_epi = np.where(inside, r_epi0 * np.sqrt(np.clip(1 - uu**2, 0, 1)), 0)
        dy, dx = self.yy - self.cy, self.xx - self.cx
        d = np.sqrt((dx / self.ecc) ** 2 + (dy * self.ecc) ** 2)
        lv = d < r_cav
        epi = d < r_epi
        if a["gap"]:  # infarct: the wall thins to a third over one sector
            cosd = (dx * math.cos(self.gap_dir) + dy * math.sin(self.gap_dir)) / (d + 1e-3)
            thin = (cosd > self.gap_cos) & (d >= r_cav + 0.35 * (r_epi - r_cav))
            epi &= ~thin
        rv_f = np.where(inside, np.sqrt(np.clip(1 - (uu / self.rv_end) ** 2, 0, 1)), 0)
        ra = 19.0 * s * a["rv"] * rv_f * (1 - p * (1 - a["rv_es"]))
        rb = 34.0 * s * a["rv"] * rv_f * (1 - 0.5 * p * (1 - a["rv_es"]))
        ct, st = math.cos(self.theta), math.sin(self.theta)
        dist = r_epi + 0.45 * ra
        qx, qy = dx - dist * ct, dy - dist * st
        along, across = qx * ct + qy * st, -qx * st + qy * ct
        rv = (along / np.maximum(ra, 1e-3)) ** 2 + (across / np.maximum(rb, 1e-3)) ** 2 < 1
        rv &= (ra > 0) & ~epi
        label = np.zeros(d.shape, np.uint8)
        label[rv] = 1
        label[epi & ~lv] = 2
        label[lv] = 3
        atrium = (~inside) & (d < 0.9 * r_ed * (1 - 0.3 * p))  # above the base: unlabeled blood
        blood = lv | rv | atrium
        image = np.where(
            blood,
            self.look.blood * self.bias,
            np.where(label == 2, self.look.myo * self.bias, self.background),
        )
        return label, image


def _save_acdc(path: Path, data_zyx: np.ndarray, spacing: tuple, affine: np.ndarray) -> None:
    """ACDC quirk: sform code 2 with an unscaled affine, qform code 0, spacing in pixdim."""
    data = np.transpose(data_zyx, (2, 1, 0) if data_zyx.ndim == 3 else (3, 2, 1, 0))
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(spacing)
    img.header.set_sform(affine, code=2)
    img.header.set_qform(None, code=0)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def _write_acdc_patient(
    folder: Path, case: _AcdcCase, seed: int, key: tuple, scale, cine: bool, labeled: bool
) -> None:
    rng = _rng(seed, *key)
    heart = _AcdcHeart(case, rng, scale)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"ED: {case.ed}",
        f"ES: {case.es}",
        f"Group: {case.group}",
        f"Height: {case.height}",
        f"NbFrame: {case.nb_frames}",
        f"Weight: {case.weight}",
    ]
    (folder / "Info.cfg").write_text("\n".join(lines) + "\n")
    curve = _phase_curve(case.nb_frames, case.ed, case.es)
    frames = range(1, case.nb_frames + 1) if cine else (case.ed, case.es)
    sp3 = (case.spacing, case.spacing, case.slice_spacing)
    stack = []
    for f in frames:
        label, image = heart.render(float(curve[f - 1]))
        image = _finish(image, heart.look, _rng(seed, *key, f), (0, 0.6, 0.6))
        if cine:
            stack.append(image)
        if f in (case.ed, case.es):
            stem = folder / f"{case.pid}_frame{f:02d}"
            _save_acdc(stem.with_name(stem.name + ".nii.gz"), image, sp3, heart.affine)
            if labeled:
                _save_acdc(stem.with_name(stem.name + "_gt.nii.gz"), label, sp3, heart.affine)
    if cine:
        _save_acdc(folder / f"{case.pid}_4d.nii.gz", np.stack(stack), sp3 + (1.0,), heart.affine)


def _write_acdc(
    out: Path,
    n_train,
    n_test,
    seed,
    size_range,
    slices_range,
    spacing_range,
    slice_range,
    scale,
    cine,
    cine_frames,
    test_labels,
    progress,
    workers,
) -> None:
    base = out / "database"
    jobs = []
    for i in range(n_train):
        group = GROUPS[min(len(GROUPS) - 1, i * len(GROUPS) // max(1, n_train))]
        jobs.append(("training", i, group))
    test_groups = _rng(seed, 7).permutation(np.resize(np.array(GROUPS), n_test))
    jobs += [("testing", n_train + i, str(g)) for i, g in enumerate(test_groups)]
    force_ed_at = min(3, n_train - 1) if n_train > 1 else -1  # at least one ED != 1
    tasks = []
    for subset, i, group in jobs:
        pid = f"patient{i + 1:03d}"
        rng = _rng(seed, 1, i)
        nb = (
            int(rng.integers(cine_frames[0], cine_frames[1] + 1))
            if cine
            else int(rng.integers(12, 36))
        )
        case = _acdc_case(
            rng,
            pid,
            group,
            size_range,
            slices_range,
            spacing_range,
            slice_range,
            nb,
            4 if (i == force_ed_at and nb >= 6) else 0,
        )
        tasks.append(
            partial(
                _write_acdc_patient,
                base / subset / pid,
                case,
                seed,
                (2, i),
                scale,
                cine,
                test_labels or subset == "training",
            )
        )
    _run(tasks, progress, "synth acdc", workers)


# -------------------------------------------------------------------------- HVSMR


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
    rng = _rng(seed, 3, i)
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
    look = _Look(
        blood=rng.uniform(0.75, 0.9),
        myo=rng.uniform(0.3, 0.4),
        tissue=rng.uniform(0.45, 0.6),
        noise=rng.uniform(0.02, 0.04),
        dtype=str(rng.choice(["float64", "int16"])),
        gain=1.0,
    )
    look.gain = rng.uniform(200, 1200) if look.dtype == "int16" else rng.uniform(0.5, 300)
    tissue = look.tissue + 0.1 * _smooth_noise(rng, shape, 8)
    lungs = _smooth_noise(rng, shape, 24) > 0.9
    image = np.where(lungs, 0.05, tissue).astype(np.float32)
    image = np.where(blood, look.blood, np.where(myo, look.myo, image)).astype(np.float32)
    image *= _bias(rng, shape)
    image = _finish(image, look, rng, 0.5)
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
    _run(
        [
            partial(_write_hvsmr_patient, out, name, seed, i, size_range, scale, labeled)
            for name, i, labeled in jobs
        ],
        progress,
        "synth hvsmr",
        workers,
    )


# ---------------------------------------------------------------------------- API


def _run(tasks: list, progress: bool, desc: str, workers: int | None) -> None:
    """Run per-patient writers, in a process pool when there are many (same files either way)."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(tasks) > 8 else 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit="patient")
    if workers > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for fut in as_completed([pool.submit(task) for task in tasks]):
                fut.result()
                if bar is not None:
                    bar.update()
    else:
        for task in tasks:
            task()
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()


def write_synthetic(
    out_dir: str | Path,
    layout: str = "acdc",
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    *,
    real_sizes: bool = False,
    size_range: tuple[int, int] | None = None,
    slices_range: tuple[int, int] | None = None,
    spacing_range: tuple[float, float] = (0.7, 1.95),
    slice_spacing_range: tuple[float, float] | None = None,
    scale: float | None = None,
    cine: bool = False,
    cine_frames: tuple[int, int] = (6, 10),
    test_labels: bool = True,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write a synthetic dataset under ``out_dir`` and return ``out_dir``.

    ACDC goes to ``out_dir/database/{training,testing}/patientXXX/``; HVSMR files
    go directly into ``out_dir``. Defaults are tiny (ACDC 12+4 patients of
    64-96 px, 6-10 slices; HVSMR 4+2 volumes of 40-64 voxels); ``real_sizes``
    switches to the real sizes and counts (ACDC 100+50 patients, 150-430 px,
    6-21 slices; HVSMR 10+10 volumes of 80-170 voxels). ``size_range`` is the
    in-plane size in pixels (HVSMR: every side), ``scale`` multiplies the
    anatomy (default: fitted to the field of view), ``cine`` adds a 4D cine of
    ``cine_frames`` frames per ACDC patient. ``test_labels=False`` leaves the
    testing patients unlabeled. ``workers`` processes write patients in parallel
    (default: up to 2 when there are more than 8). Same arguments, same files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "acdc":
        counts = ACDC_REAL_COUNTS if real_sizes else (12, 4)
        sizes = REAL if real_sizes else TINY
        _write_acdc(
            out,
            counts[0] if n_train is None else n_train,
            counts[1] if n_test is None else n_test,
            seed,
            size_range or sizes["size_range"],
            slices_range or sizes["slices_range"],
            spacing_range,
            slice_spacing_range,
            scale,
            cine,
            cine_frames,
            test_labels,
            progress,
            workers,
        )
    elif layout == "hvsmr":
        counts = HVSMR_REAL_COUNTS if real_sizes else (4, 2)
        _write_hvsmr(
            out,
            counts[0] if n_train is None else n_train,
            counts[1] if n_test is None else n_test,
            seed,
            size_range or ((80, 170) if real_sizes else (40, 64)),
            scale,
            test_labels,
            progress,
            workers,
        )
    else:
        raise ValueError(f"layout must be 'acdc' or 'hvsmr', not {layout!r}")
    return out
