"""Synthetic cardiac MRI written as real NIfTI files in the ACDC or HVSMR layout.

ACDC: short-axis stacks with an LV cavity (3), a myocardial ring (2) and an RV
crescent (1) whose sizes change from base (slice 0) to apex, so slice position
carries meaning; the five pathology groups change the anatomy, ES has a smaller
cavity than ED. Files carry ACDC's quirks: spacing only in pixdim (sform code 2
with an unscaled affine, qform code 0), image dtypes int16/float32/uint8, ED
not always frame 1. HVSMR: near-isotropic 3D crops with myocardium (1) and
blood pool (2), uint16 labels, affine carrying the spacing.

The phantoms are ``synthetic_acdc`` and ``synthetic_hvsmr``; this module is the
one entry point, ``write_synthetic``.
"""

from __future__ import annotations

from pathlib import Path

from .synthetic_acdc import _write_acdc
from .synthetic_hvsmr import _write_hvsmr

EASY_VERSION = 1  # changes whenever the same seed would draw different data
TINY = {"size_range": (64, 96), "slices_range": (6, 10)}
REAL = {"size_range": (150, 430), "slices_range": (6, 21)}
ACDC_REAL_COUNTS = (100, 50)
HVSMR_REAL_COUNTS = (10, 10)


def acdc_real_sizes() -> dict:
    """Keyword arguments for ACDC's real sizes and patient counts (100 train, 50 test)."""
    return dict(n_train=ACDC_REAL_COUNTS[0], n_test=ACDC_REAL_COUNTS[1], **REAL)


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
