"""The ``cine`` phantom: synthetic short-axis cine MRI as hard as real ACDC, in ACDC's layout.

The ``easy`` phantom (:mod:`bench.datasets.synthetic`) draws clean rings on a
flat background; a U-Net segments it almost perfectly from one patient. This
one draws what makes real cine MRI hard at ACDC's geometry:

- a chest around the heart with tissues of similar brightness: subcutaneous
  and epicardial fat as bright as blood, chest-wall muscle and liver as dark as
  myocardium, dark lungs, the descending aorta and, at the base, the aorta,
  pulmonary artery and atria (bright blood that is not labeled);
- anatomy that varies between patients (size, orientation, position, the five
  ACDC pathology groups) and within a heart: myocardial thickness changing
  around the ring, an RV crescent of varying depth, wrap and tilt, papillary
  muscles inside the LV cavity (labeled LV, as in ACDC), trabeculated borders;
- slices that cover the heart from above the base (LV outflow tract through a
  gap in the ring, atria and great vessels, no labels) to below the apex (the
  RV ends first, then the LV cavity, then the myocardial cap);
- partial volume: soft edges over a pixel in-plane and averaging over the
  slice thickness through-plane (labels are the slice centre's);
- coil shading (sensitivity falling off from anterior and posterior coil
  elements) times a smooth bias field, then Rician noise (the magnitude of
  complex Gaussian noise) at cine SNR, and per-slice in-plane shifts of the
  heart and liver (breath-holds that differ between slices).

Geometry follows ACDC (Bernard et al., IEEE TMI 2018): 1.25-1.95 mm in-plane,
5-10 mm between slices, 6-21 slices, images of 150-430 pixels; ED and ES
frames with labels 1 RV, 2 Myo, 3 LV. Files are written by the same writers
as the easy phantom (ACDC's header quirks included). ``VERSION`` changes
whenever the same seed would draw different data; result rows record
``synthetic:cine-v<VERSION>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ._phantom import bias_field, seeded_rng, smooth_noise
from ._pool import run_tasks
from .acdc import GROUPS
from .synthetic_acdc import _AcdcCase, _phase_curve, _save_acdc

NAME = "cine"
VERSION = 2  # 2: more varied patients (size, position, orientation, anatomy), calibrated

# Per-group anatomy at end-diastole, in mm at size factor 1: LV cavity radius, mean
# wall thickness, RV size factor, ES/ED cavity radius ratio (LV, RV), septal thickening.
GROUP_ANATOMY = {
    "NOR": {"lv": 27.0, "wall": 9.0, "rv": 1.0, "es": 0.65, "rv_es": 0.72, "septal": 0.0},
    "DCM": {"lv": 36.0, "wall": 7.0, "rv": 1.05, "es": 0.9, "rv_es": 0.82, "septal": 0.0},
    "HCM": {"lv": 23.0, "wall": 14.0, "rv": 0.9, "es": 0.5, "rv_es": 0.7, "septal": 0.5},
    "MINF": {"lv": 32.0, "wall": 8.5, "rv": 1.0, "es": 0.83, "rv_es": 0.75, "septal": 0.0},
    "RV": {"lv": 25.0, "wall": 9.0, "rv": 1.55, "es": 0.66, "rv_es": 0.88, "septal": 0.0},
}


@dataclass(frozen=True)
class Difficulty:
    """What makes the phantom hard. Image quality follows cine bSSFP's usual ranges; the
    between-patient spread (size, position, orientation, anatomy) was raised in version 2
    until random-init fine-tuning met the published curve (docs/PROTOCOL.md, "Calibration")."""

    snr: tuple[float, float] = (7.0, 18.0)  # blood signal over noise sigma, drawn per patient
    shading: float = 0.6  # depth of coil shading (0: none)
    myo_contrast: tuple[float, float] = (0.22, 0.4)  # myocardium over blood
    misalign_mm: float = 2.5  # sd of per-slice in-plane shifts (breath-holds)
    size_sd: float = 0.18  # between-patient sd of the heart's size factor (v1: 0.12)
    position_mm: float = 16.0  # between-patient sd of the heart's centre in the image (v1: 8)
    rotation_sd: float = 0.6  # between-patient sd of the orientation, radians (v1: 0.3)
    anatomy_sd: float = 0.15  # between-patient relative sd of the group's anatomy (v1: 0.08)
    gamma_sd: float = 0.0  # between-patient sd of log(gamma), tissue contrast (scanner, field)


@dataclass
class _Case(_AcdcCase):
    """The ACDC case record, and the cine phantom's heart geometry."""

    size: float  # heart size factor
    u_first: float  # long-axis position of the first slice (0 base, 1 apex)
    length: float  # LV length from base to apex, mm


def _draw_case(rng, pid: str, group: str, nb_frames: int, force_ed: int, hard: Difficulty):
    sp = float(np.round(rng.triangular(1.25, 1.5, 1.95), 4))
    fov_h = rng.uniform(300, 400)
    h = int(np.clip(round(fov_h / sp), 150, 430))
    w = int(np.clip(round(h * rng.choice([1.0, 1.0, 256 / 216, 216 / 256, 1.2])), 150, 430))
    spz = float(rng.choice([5.0, 6.5, 7.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0]))
    size = float(np.clip(rng.normal(1.0, hard.size_sd), 0.75, 1.35))
    length = 88.0 * size * rng.uniform(0.9, 1.1)
    u_first = rng.uniform(-0.15, 0.0)
    u_last = rng.uniform(0.95, 1.08)
    z = int(np.clip(math.floor((u_last - u_first) * length / spz) + 1, 6, 21))
    ed = force_ed or (1 if rng.random() < 0.9 else int(rng.integers(2, 5)))
    es = int(np.clip(ed - 1 + round(nb_frames * rng.uniform(0.3, 0.45)), ed + 1, nb_frames))
    return _Case(
        pid=pid,
        group=group,
        shape=(z, h, w),
        spacing=sp,
        slice_spacing=spz,
        nb_frames=nb_frames,
        ed=ed,
        es=es,
        height=float(round(np.clip(rng.normal(172, 9), 150, 200))),
        weight=float(round(np.clip(rng.normal(76, 14), 45, 130))),
        size=size,
        u_first=u_first,
        length=length,
    )


def _soft(signed_mm, width_mm):
    """Partial-volume occupancy of a region given a signed distance to its border (< 0 inside)."""
    return np.clip(0.5 - signed_mm / width_mm, 0.0, 1.0)


def _paint(image, occupancy, value) -> None:
    image += occupancy * (value - image)


def _ellipse_sd(y, x, cy, cx, ry, rx):
    """Approximate signed distance (mm) to an axis-aligned ellipse's border."""
    return (np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2) - 1) * np.sqrt(ry * rx)


class _Angular:
    """A random smooth function of the angle, a sum of cosines of the given orders,
    evaluated from the powers of e^{i theta} (no trigonometric calls)."""

    def __init__(self, rng, orders, amplitude):
        self.terms = [
            (k, complex(rng.normal(0, amplitude) * np.exp(1j * rng.uniform(0, 2 * math.pi))))
            for k in orders
        ]

    def __call__(self, powers):
        """``powers[k]`` is e^{i k theta}."""
        return sum((np.complex64(c) * powers[k]).real for k, c in self.terms)


def add_rician_noise(signal: np.ndarray, sigma: float, rng) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``
    per channel: Rician where the signal is positive, Rayleigh where it is zero."""
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


class CineHeart:
    """One patient's chest and heart; ``render(p)`` draws contraction ``p`` (0 ED, 1 ES)."""

    def __init__(self, case: _Case, rng, hard: Difficulty):
        self.case, self.hard = case, hard
        z, h, w = case.shape
        sp = case.spacing
        a = {
            k: v * rng.normal(1, hard.anatomy_sd) if k != "septal" else v
            for k, v in GROUP_ANATOMY[case.group].items()
        }
        a["es"], a["rv_es"] = min(a["es"], 0.95), min(a["rv_es"], 0.95)
        self.a = a
        s = case.size
        self.r_cav, self.wall = a["lv"] * s, a["wall"] * s
        self.r_epi = self.r_cav + self.wall
        # long-axis position of every slice and of sub-slices across its thickness
        thickness = min(case.slice_spacing, 8.0)
        self.sub = (-thickness / 3, 0.0, thickness / 3)
        self.u_centre = (case.u_first + np.arange(z) * case.slice_spacing / case.length).astype(
            np.float32
        )
        self.apex_power = rng.uniform(1.8, 3.0)
        self.cavity_end = rng.uniform(0.8, 0.9)
        # orientation, position, breath-hold shifts
        self.phi = float(rng.normal(0, hard.rotation_sd))
        cy, cx = rng.normal(0, hard.position_mm, 2) + np.array([-10.0, 15.0])
        self.centre = (float(cy), float(cx))  # heart (y, x) from the image centre, mm
        shift_sd = hard.misalign_mm * rng.uniform(0.3, 1.0)
        self.shifts = np.clip(rng.normal(0, shift_sd, (z, 2)), -8, 8).astype(np.float32)
        # shape variation
        self.ecc = rng.uniform(0.9, 1.1)
        self.wall_var = _Angular(rng, (1, 2), 0.13)
        self.trab = _Angular(rng, (4, 5, 6, 7), 0.025)
        self.fat = _Angular(rng, (1, 2, 3), 1.0)
        self.fat_mm = rng.uniform(1.5, 5.0)
        self.septum_dir = math.pi + rng.normal(0, 0.15)  # towards the RV (image left)
        self.infarct = (
            (rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(25, 50)))
            if case.group == "MINF"
            else None
        )
        self.papillary = [
            (math.radians(ang + rng.normal(0, 12)), rng.uniform(0.5, 0.7), rng.uniform(2.5, 4.5))
            for ang in (55.0, 125.0)
        ]
        self.rv_off = rng.uniform(0.6, 0.9)  # RV centre distance / epicardial radius
        self.rv_a = rng.uniform(0.8, 1.1) * a["rv"]  # depth of the crescent
        self.rv_b = rng.uniform(1.15, 1.6) * a["rv"]  # wrap around the septum
        self.rv_tilt = rng.normal(0, 0.3)
        self.rv_end = rng.uniform(0.62, 0.85)  # no RV below this (apex)
        self.rv_top = rng.uniform(-0.12, 0.0)  # RV labeled from here (above: outflow tract)
        self.lvot_dir = math.pi + rng.uniform(0.6, 1.1)  # anterior-septal
        self.lvot_width = rng.uniform(0.5, 0.9)
        # intensities relative to blood, bSSFP-like
        self.blood = rng.uniform(0.85, 1.0)
        self.level = {
            "myo": self.blood * rng.uniform(*hard.myo_contrast),
            "fat": rng.uniform(0.7, 1.0),
            "liver": rng.uniform(0.28, 0.48),
            "muscle": rng.uniform(0.22, 0.4),
            "mediastinum": rng.uniform(0.35, 0.6),
            "lung": rng.uniform(0.02, 0.08),
            "spine": rng.uniform(0.3, 0.5),
        }
        self.snr = rng.uniform(*hard.snr)
        # image grid in mm, centred; the heart is drawn in a box around its centre
        self.yy = ((np.arange(h, dtype=np.float32) - h / 2 + 0.5) * sp)[:, None]
        self.xx = ((np.arange(w, dtype=np.float32) - w / 2 + 0.5) * sp)[None, :]
        reach = (self.rv_off + max(self.rv_a, self.rv_b)) * self.r_epi + 25  # + fat, shifts
        self.box = tuple(
            slice(
                int(np.clip((c - reach) / sp + n / 2, 0, n)),
                int(np.clip((c + reach) / sp + n / 2 + 1, 0, n)),
            )
            for c, n in ((self.centre[0], h), (self.centre[1], w))
        )
        self.background = self._chest(rng)
        self.affine = np.eye(4)
        self.affine[:3, 3] = np.round(rng.normal(0, 50, 3), 2)
        # drawn last, so that the other draws do not depend on it
        self.gamma = float(np.exp(rng.normal(0, hard.gamma_sd)))

    def _heart_frame(self, yy, xx, shifts):
        """Coordinates (Y, X) in the heart's frame (Z, h, w): centred on the LV, rotated so
        that the RV lies towards -X, with each slice's breath-hold shift."""
        c, s = math.cos(self.phi), math.sin(self.phi)
        dy = yy[None] - self.centre[0] - shifts[:, 0, None, None]
        dx = xx[None] - self.centre[1] - shifts[:, 1, None, None]
        return -s * dx + c * dy, c * dx + s * dy

    # -- the chest: static over the cycle -----------------------------------
    def _chest(self, rng) -> np.ndarray:
        z = self.case.shape[0]
        sp, s = self.case.spacing, self.case.size
        no_shift = np.zeros((1, 2), np.float32)
        y, x = (g[0] for g in self._heart_frame(self.yy, self.xx, no_shift))
        # body: an ellipse around the heart's position, fat and muscle layers under the skin
        ry, rx = rng.uniform(95, 125) * s, rng.uniform(135, 175) * s
        by, bx = rng.uniform(5, 25), -rng.uniform(15, 35)
        body = _ellipse_sd(y, x, by, bx, ry, rx)
        fat_mm, muscle_mm = rng.uniform(6, 20), rng.uniform(8, 16)
        image = np.zeros(y.shape, np.float32)
        _paint(image, _soft(body, sp), self.level["fat"])
        _paint(image, _soft(body + fat_mm, sp), self.level["muscle"])
        _paint(image, _soft(body + fat_mm + muscle_mm, sp), self.level["mediastinum"])
        # lungs either side of the heart, dark with bright vessels
        vessels = 0.3 * np.clip(smooth_noise(rng, y.shape, 3) - 1.0, 0, None)
        for side in (-1, 1):
            ly, lx = rng.uniform(55, 80) * s, rng.uniform(40, 60) * s
            cx = side * (self.r_epi + lx + rng.uniform(10, 25) + (side < 0) * 25 * s)
            lung = _ellipse_sd(y, x, rng.uniform(-10, 20), cx, ly, lx)
            lung = np.maximum(lung, body + fat_mm + muscle_mm)  # inside the chest wall
            _paint(image, _soft(lung, sp), self.level["lung"] + vessels)
        # descending aorta and spine, posterior
        ay, ax = rng.uniform(55, 75) * s, rng.uniform(5, 30)
        aorta_r, spine_r = rng.uniform(9, 13), rng.uniform(13, 18)
        _paint(image, _soft(_ellipse_sd(y, x, ay, ax, aorta_r, aorta_r), sp), self.blood)
        spine = _ellipse_sd(y, x, ay + aorta_r + spine_r + 5, ax - 15, spine_r, spine_r)
        _paint(image, _soft(spine, sp), self.level["spine"])
        # coil shading (anterior and posterior elements) times a smooth bias field
        coils = np.zeros(y.shape, np.float32)
        for coil_y in (by - ry, by + ry):
            for coil_x in rng.uniform(-0.6, 0.6, 2) * rx + bx:
                dist = np.sqrt((y - coil_y) ** 2 + (x - coil_x) ** 2)
                coils += np.exp(-2 * dist / rng.uniform(70, 130))
        coils = np.sqrt(coils)
        coils /= np.median(coils[body < -0.3 * math.sqrt(ry * rx)])
        shade = (1 - self.hard.shading) + self.hard.shading * np.clip(coils, 0, 2.5)
        self.bias = (shade[None] * bias_field(rng, (z,) + y.shape)).astype(np.float32)
        # per-slice texture, and the liver, which rises into the slices towards the apex
        texture = 1 + 0.12 * smooth_noise(rng, (z,) + y.shape, 5)
        chest = image[None] * texture
        yz, xz = self._heart_frame(self.yy, self.xx, self.shifts)
        grow = np.clip((self.u_centre - 0.45) / 0.5, 0, 1)[:, None, None]
        ly, lx = 70 * s * grow + 1e-3, 110 * s * grow + 1e-3
        liver = _ellipse_sd(yz, xz, self.r_epi + 0.8 * ly + 8, -20.0, ly, lx)
        _paint(chest, _soft(liver, sp), self.level["liver"])
        return chest

    # -- the heart: drawn per contraction state ------------------------------
    def _heart(self, p: float, u: np.ndarray, y, x, image: np.ndarray) -> np.ndarray:
        """Paints the heart for contraction ``p`` at long-axis positions ``u`` (one per slice)
        on the grids ``y, x`` (Z, h, w) into ``image``; returns the label map."""
        a, sp = self.a, self.case.spacing
        uz = (u / (1 - 0.07 * p))[:, None, None]  # long-axis shortening in systole
        d = np.sqrt((x / self.ecc) ** 2 + (y * self.ecc) ** 2)
        unit = (x + 1j * y) / (np.sqrt(x * x + y * y) + 1e-6)  # e^{i theta}
        powers = [None, unit]
        for _ in range(6):
            powers.append(powers[-1] * unit)
        septum = np.exp(1j * self.septum_dir)
        cos_septum = (unit * np.conj(septum)).real
        inside = uz >= 0
        v = np.clip(uz, 0, 1)
        r_cav_ed = self.r_cav * np.sqrt(1 - np.clip(uz / self.cavity_end, 0, 1) ** self.apex_power)
        wall = self.wall * (
            1 + self.wall_var(powers) + a["septal"] * np.clip(cos_septum, 0, 1) ** 8
        )
        r_epi_ed = (self.r_cav + wall) * np.sqrt(1 - v**self.apex_power)
        r_epi_ed = np.maximum(r_epi_ed, r_cav_ed + 0.5 * wall * (r_cav_ed > 0))
        if self.infarct is not None:
            direction, half = self.infarct
            scar = (unit * np.exp(-1j * direction)).real > math.cos(half)
            r_epi_ed = np.where(scar, r_cav_ed + 0.4 * (r_epi_ed - r_cav_ed), r_epi_ed)
        r_cav = r_cav_ed * (1 - p * (1 - a["es"])) * (1 + self.trab(powers))
        # the myocardium keeps its area as the cavity contracts
        r_epi = np.sqrt(np.maximum(r_cav**2 + r_epi_ed**2 - r_cav_ed**2, 0))
        r_epi = np.where(inside, r_epi, 0)
        r_cav = np.where(inside, r_cav, 0)
        # the RV crescent: an ellipse beside the septum, outside the LV epicardium
        rv_f = np.sqrt(np.clip(1 - (v / self.rv_end) ** 2, 0, 1)) * (uz >= self.rv_top)
        r_ref = self.r_epi * rv_f
        shrink = 1 - p * (1 - a["rv_es"])
        ra = self.rv_a * r_ref * shrink + 1e-3
        rb = self.rv_b * r_ref * (0.5 + 0.5 * shrink) + 1e-3
        c, s = math.cos(self.septum_dir), math.sin(self.septum_dir)
        qx, qy = x - self.rv_off * r_ref * c, y - self.rv_off * r_ref * s
        along, across = qx * c + qy * s, -qx * s + qy * c
        ct, st = math.cos(self.rv_tilt), math.sin(self.rv_tilt)
        along, across = along * ct - across * st, along * st + across * ct
        rv_size = np.sqrt(ra * rb)
        rv_sd = (np.sqrt((along / ra) ** 2 + (across / rb) ** 2) - 1) * rv_size
        epi_sd = d - r_epi
        cav_sd = d - r_cav
        # outflow tract at the base: a gap in the ring where LV blood meets the aortic root
        gap = np.clip((0.12 - uz) / 0.22, 0, 1) * self.lvot_width
        in_gap = (unit * np.exp(-1j * self.lvot_dir)).real > np.cos(gap)
        labels = np.zeros(d.shape, np.uint8)
        labels[(rv_sd < 0) & (epi_sd >= 0) & (rv_f > 0)] = 1
        labels[(epi_sd < 0) & (cav_sd >= 0) & ~in_gap] = 2
        labels[cav_sd < 0] = 3

        def paint(sd, value):
            _paint(image, _soft(sd, sp), value)

        # intensities, painted from the outside in
        blood = self.blood * (1 - 0.2 * v)  # slower, trabeculated blood towards the apex
        fat_mm = self.fat_mm * np.clip(self.fat(powers) + 0.6, 0, None)
        paint(np.minimum(epi_sd, rv_sd) - fat_mm, self.level["fat"])
        paint(rv_sd - 3.0, self.level["myo"])  # the thin RV free wall
        paint(np.maximum(rv_sd, -epi_sd), blood)
        paint(epi_sd, self.level["myo"])
        paint(np.where(in_gap & (epi_sd < 0), -1.0, cav_sd), blood)
        papillary = (uz > 0.15) & (uz < 0.8)
        for angle, frac, radius in self.papillary:
            direction = septum * np.exp(1j * angle)
            py, px = frac * r_cav * direction.imag, frac * r_cav * direction.real
            pap = np.sqrt((y - py) ** 2 + (x - px) ** 2) - radius * (1 - 0.3 * p)
            paint(np.where(papillary, pap, 50.0), self.level["myo"])
        # above the base: atrium, aortic root and pulmonary artery, unlabeled blood
        paint(np.where(uz < 0, d - 0.85 * self.r_epi, 60.0), blood)
        root = np.sqrt((y + 0.55 * self.r_epi) ** 2 + (x + 0.35 * self.r_epi) ** 2)
        paint(np.where(uz < 0.08, root - 12 * self.case.size, 60.0), blood)
        pa = np.sqrt((y + self.r_epi) ** 2 + (x + self.r_epi) ** 2)
        paint(np.where(uz < self.rv_top, pa - 13 * self.case.size, 60.0), blood)
        return labels

    def render(self, p: float) -> tuple[np.ndarray, np.ndarray]:
        """Label map (Z, H, W) and noiseless intensity for contraction ``p`` in [0, 1]."""
        rows, cols = self.box
        y, x = self._heart_frame(self.yy[rows], self.xx[:, cols], self.shifts)
        labels = np.zeros(self.background.shape, np.uint8)
        image = self.background.copy()
        region = image[:, rows, cols]
        mean = np.zeros(region.shape, np.float32)
        for offset in self.sub:  # through-plane partial volume
            painted = region.copy()
            u = self.u_centre + offset / self.case.length
            lab = self._heart(p, u, y.astype(np.float32), x.astype(np.float32), painted)
            mean += painted / len(self.sub)
            if offset == 0.0:
                labels[:, rows, cols] = lab
        image[:, rows, cols] = mean
        if self.gamma != 1.0:
            image = image**self.gamma
        return labels, image * self.bias


def _write_patient(
    folder: Path, case: _Case, seed: int, index: int, hard: Difficulty, cine: bool, labeled: bool
):
    heart = CineHeart(case, seeded_rng(seed, 12, index), hard)
    folder.mkdir(parents=True, exist_ok=True)
    info = {
        "ED": case.ed,
        "ES": case.es,
        "Group": case.group,
        "Height": case.height,
        "NbFrame": case.nb_frames,
        "Weight": case.weight,
    }
    (folder / "Info.cfg").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
    curve = _phase_curve(case.nb_frames, case.ed, case.es)
    frames = range(1, case.nb_frames + 1) if cine else (case.ed, case.es)
    spacing = (case.spacing, case.spacing, case.slice_spacing)
    rng = seeded_rng(seed, 13, index)
    dtype = str(rng.choice(["int16", "int16", "int16", "float32", "uint8"]))
    gain = {"uint8": rng.uniform(120, 200), "int16": rng.uniform(200, 1500)}.get(
        dtype, rng.uniform(50, 500)
    )
    stack = []
    for f in frames:
        labels, signal = heart.render(float(curve[f - 1]))
        image = (
            add_rician_noise(signal, heart.blood / heart.snr, seeded_rng(seed, 14, index, f)) * gain
        )
        if dtype != "float32":
            top = 255 if dtype == "uint8" else 32767
            image = np.clip(np.rint(image), 0, top)
        image = image.astype(dtype)
        if cine:
            stack.append(image)
        if f in (case.ed, case.es):
            stem = f"{case.pid}_frame{f:02d}"
            _save_acdc(folder / f"{stem}.nii.gz", image, spacing, heart.affine)
            if labeled:
                _save_acdc(folder / f"{stem}_gt.nii.gz", labels, spacing, heart.affine)
    if cine:
        _save_acdc(
            folder / f"{case.pid}_4d.nii.gz", np.stack(stack), spacing + (1.0,), heart.affine
        )


def draw_cases(n_train: int, n_test: int, seed: int, hard: Difficulty, cine: bool):
    """Every patient's subset and case, from the seed alone (pathology groups in ACDC's blocks)."""
    jobs = [("training", i, GROUPS[min(4, i * 5 // max(1, n_train))]) for i in range(n_train)]
    test_groups = seeded_rng(seed, 17).permutation(np.resize(np.array(GROUPS), n_test))
    jobs += [("testing", n_train + i, str(g)) for i, g in enumerate(test_groups)]
    force_ed_at = min(3, n_train - 1) if n_train > 1 else -1  # at least one ED != 1, as in ACDC
    cases = []
    for subset, i, group in jobs:
        rng = seeded_rng(seed, 11, i)
        nb = int(rng.integers(6, 11) if cine else rng.integers(12, 36))
        force_ed = 4 if (i == force_ed_at and nb >= 6) else 0
        cases.append((subset, i, _draw_case(rng, f"patient{i + 1:03d}", group, nb, force_ed, hard)))
    return cases


def write_cine_phantom(
    out_dir: str | Path,
    n_train: int = 100,
    n_test: int = 50,
    seed: int = 0,
    *,
    difficulty: Difficulty | None = None,
    cine: bool = False,
    test_labels: bool = True,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write ``n_train`` training and ``n_test`` testing patients under
    ``out_dir/database/`` in ACDC's layout and return ``out_dir``. Same arguments,
    same files. ``cine`` adds a 4D cine of 6-10 frames per patient."""
    out = Path(out_dir)
    hard = difficulty or Difficulty()
    tasks = [
        partial(
            _write_patient,
            out / "database" / subset / case.pid,
            case,
            seed,
            i,
            hard,
            cine,
            test_labels or subset == "training",
        )
        for subset, i, case in draw_cases(n_train, n_test, seed, hard, cine)
    ]
    run_tasks(
        tasks, workers=workers, progress=progress, desc="synth acdc (cine phantom)", unit="patient"
    )
    return out
