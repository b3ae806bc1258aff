"""The synthetic ACDC phantom: short-axis cine MRI stacks in ACDC's layout and file quirks.

An LV cavity (3), a myocardial ring (2) and an RV crescent (1) whose sizes change
from base (slice 0) to apex, so slice position carries meaning; the five
pathology groups change the anatomy, ES has a smaller cavity than ED. Files carry
ACDC's quirks: spacing only in pixdim (sform code 2 with an unscaled affine,
qform code 0), image dtypes int16/float32/uint8, ED not always frame 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

from ._phantom import Look, bias_field, finish_image, seeded_rng, smooth_noise
from ._pool import run_tasks
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
        look = self.look = Look(
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
        tissue = look.tissue + 0.08 * smooth_noise(rng, (z, h, w), 6)
        tissue = np.where(body, np.where(lungs, 0.06, tissue), 0.015).astype(np.float32)
        self.bias = bias_field(rng, (z, h, w))
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
    rng = seeded_rng(seed, *key)
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
        image = finish_image(image, heart.look, seeded_rng(seed, *key, f), (0, 0.6, 0.6))
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
    test_groups = seeded_rng(seed, 7).permutation(np.resize(np.array(GROUPS), n_test))
    jobs += [("testing", n_train + i, str(g)) for i, g in enumerate(test_groups)]
    force_ed_at = min(3, n_train - 1) if n_train > 1 else -1  # at least one ED != 1
    tasks = []
    for subset, i, group in jobs:
        pid = f"patient{i + 1:03d}"
        rng = seeded_rng(seed, 1, i)
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
    run_tasks(tasks, workers=workers, progress=progress, desc="synth acdc", unit="patient")
