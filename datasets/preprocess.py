"""Preprocess frames to fixed-size normalised arrays, cached as .npz keyed by content.

In-plane resampling to ``spacing_mm`` (slice spacing kept; linear for images,
nearest for labels), per-volume percentile clipping and normalisation, then a
centre crop or pad to ``size`` x ``size``. A cache entry's name carries the
sha256 of the source files' bytes and of the settings, so an edited file or a
changed setting is never served stale; the key also carries a digest of this
module's and the NIfTI reader's source, so entries made by other preprocessing
code are never served either. Reading a cache entry decodes no NIfTI.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from bench.io import atomic_write_bytes

from . import nifti
from ._pool import run_tasks
from .errors import DataError
from .nifti import LABEL_VALUES, load_image, load_pair
from .records import PatientRecord

# Any edit to the code that computes an entry changes every key.
CODE_DIGEST = hashlib.sha256(
    Path(__file__).read_bytes() + Path(nifti.__file__).read_bytes()
).hexdigest()[:16]
NORMALISE = ("minmax", "zscore")


@dataclass(frozen=True)
class PreprocessSettings:
    """In-plane target spacing in mm (None: keep), square output size (None: keep),
    intensity clip percentiles, normalisation ("minmax" to [0, 1] or "zscore") and
    N4 bias-field correction (``n4``, Chaitanya et al. 2020) before all of these."""

    spacing_mm: float | None = 1.367
    size: int | None = 192
    clip_percentiles: tuple[float, float] = (1.0, 99.0)
    normalise: str = "minmax"
    n4: bool = False

    def __post_init__(self):
        lo, hi = (float(p) for p in self.clip_percentiles)
        object.__setattr__(self, "clip_percentiles", (lo, hi))
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {lo, hi}")
        if self.normalise not in NORMALISE:
            raise ValueError(f"normalise must be one of {NORMALISE}, got {self.normalise!r}")
        if self.spacing_mm is not None and not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive or None, got {self.spacing_mm}")
        if self.size is not None and int(self.size) < 1:
            raise ValueError(f"size must be a positive int or None, got {self.size}")

    def fingerprint(self) -> str:
        """Canonical JSON of the settings and the code digest (part of every cache key)."""
        return json.dumps({"code": CODE_DIGEST, **asdict(self)}, sort_keys=True)


@dataclass
class Volume:
    """One preprocessed frame: ``image`` float32 ``(Z, H, W)``, ``label`` uint8 or None.

    ``spacing``/``native_spacing`` are ``(z, y, x)`` mm; ``resampled_shape`` and
    ``crop_offset`` (top, left; negative = padding) let ``restore_native`` map a
    prediction back onto the native grid, where ``native_label`` lives.
    """

    patient_id: str
    phase: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    native_spacing: tuple[float, float, float]
    native_shape: tuple[int, int, int]
    group: str | None = None
    subset: str = "training"
    resampled_shape: tuple[int, int, int] = (0, 0, 0)
    crop_offset: tuple[int, int] = (0, 0)
    native_label: np.ndarray | None = field(default=None, repr=False)


# ----------------------------------------------------------------- array operations


def _axis_weights(n_in: int, n_out: int):
    """Source indices and weights of linear interpolation, pixel-centre aligned."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resample(array: np.ndarray, shape_hw: tuple[int, int], order: int) -> np.ndarray:
    """Resize the last two axes: ``order`` 1 linear (images), 0 nearest (labels)."""
    h, w = array.shape[-2:]
    if (h, w) == tuple(shape_hw):
        return array
    if order == 0:
        iy = np.minimum(((np.arange(shape_hw[0]) + 0.5) * (h / shape_hw[0])).astype(np.intp), h - 1)
        ix = np.minimum(((np.arange(shape_hw[1]) + 0.5) * (w / shape_hw[1])).astype(np.intp), w - 1)
        return array[..., iy[:, None], ix[None, :]]
    y0, y1, wy = _axis_weights(h, shape_hw[0])
    x0, x1, wx = _axis_weights(w, shape_hw[1])
    rows = array[..., y0, :] * (1 - wy)[:, None] + array[..., y1, :] * wy[:, None]
    return (rows[..., x0] * (1 - wx) + rows[..., x1] * wx).astype(np.float32)


def _normalise(image: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    lo, hi = np.percentile(image, settings.clip_percentiles)
    image = np.clip(image, lo, hi)
    if settings.normalise == "minmax":
        out = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    else:
        std = float(image.std())
        out = (image - image.mean()) / std if std > 0 else np.zeros_like(image)
    return out.astype(np.float32)


def _crop_or_pad(array: np.ndarray, size: int, fill: float) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = array.shape[-2:]
    # MONAI's centre convention (CenterSpatialCrop / SpatialPad); negative offset = padding
    top = h // 2 - size // 2 if h >= size else -((size - h) // 2)
    left = w // 2 - size // 2 if w >= size else -((size - w) // 2)
    out = np.full(array.shape[:-2] + (size, size), fill, array.dtype)
    sy, sx = max(top, 0), max(left, 0)
    dy, dx = max(-top, 0), max(-left, 0)
    ch, cw = min(h - sy, size - dy), min(w - sx, size - dx)
    out[..., dy : dy + ch, dx : dx + cw] = array[..., sy : sy + ch, sx : sx + cw]
    return out, (top, left)


def n4_correct(image: np.ndarray, spacing) -> np.ndarray:
    """N4 bias-field correction (Tustison et al. 2010, SimpleITK's filter) of a ``(Z, H, W)``
    volume with ``(z, y, x)`` spacing in mm; the mask is Otsu's foreground, as in
    SimpleITK's N4 example, and the field is fitted at half resolution in-plane."""
    import SimpleITK as sitk

    volume = sitk.GetImageFromArray(np.asarray(image, dtype=np.float32))
    volume.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK: (x, y, z)
    mask = sitk.OtsuThreshold(volume, 0, 1, 200)
    shrink = [2, 2, 1]
    small = sitk.Shrink(volume, shrink)
    small_mask = sitk.Shrink(mask, shrink)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(volume)
    corrected = volume / sitk.Exp(log_field)
    return sitk.GetArrayFromImage(corrected).astype(np.float32)


def preprocess_frame(image: np.ndarray, label: np.ndarray | None, spacing, settings):
    """Preprocess one ``(Z, H, W)`` frame; returns ``(image, label, spacing, resampled_shape,
    crop_offset)``."""
    if settings.n4:
        image = n4_correct(image, spacing)
    z, h, w = image.shape
    sz, sy, sx = (float(s) for s in spacing)
    if settings.spacing_mm is not None:
        shape_hw = (
            max(1, round(h * sy / settings.spacing_mm)),
            max(1, round(w * sx / settings.spacing_mm)),
        )
    else:
        shape_hw = (h, w)
    image = _normalise(_resample(image, shape_hw, 1), settings)
    label = None if label is None else _resample(label, shape_hw, 0)
    new_spacing = (sz, sy * h / shape_hw[0], sx * w / shape_hw[1])
    offset = (0, 0)
    if settings.size is not None:
        image, offset = _crop_or_pad(image, int(settings.size), float(image.min()))
        if label is not None:
            label, _ = _crop_or_pad(label, int(settings.size), 0)
    return image, label, new_spacing, (z, *shape_hw), offset


def restore_native(array: np.ndarray, volume: Volume, order: int = 0) -> np.ndarray:
    """Map a ``(Z, size, size)`` array (e.g. a predicted label map) back to the native grid."""
    _, h, w = volume.resampled_shape
    top, left = volume.crop_offset
    canvas = np.zeros((array.shape[0], h, w), array.dtype)
    size_h, size_w = array.shape[-2:]
    sy, sx, dy, dx = max(top, 0), max(left, 0), max(-top, 0), max(-left, 0)
    ch, cw = min(h - sy, size_h - dy), min(w - sx, size_w - dx)
    canvas[:, sy : sy + ch, sx : sx + cw] = array[:, dy : dy + ch, dx : dx + cw]
    return _resample(canvas, tuple(volume.native_shape[1:]), order)


# ----------------------------------------------------------------------- the cache


def _sha256(path: Path, memo: dict) -> str:
    if path not in memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        memo[path] = h.hexdigest()
    return memo[path]


def _save_npz(path: Path, **arrays) -> None:
    """An .npz written atomically; float arrays stored raw (noise hardly compresses), the rest
    deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            array = np.asarray(array)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = (
                zipfile.ZIP_STORED if array.dtype.kind == "f" else zipfile.ZIP_DEFLATED
            )
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


@dataclass(frozen=True)
class _Job:
    kind: str  # "frame" | "cine"
    record: PatientRecord
    phase: str
    path: Path  # cache file
    settings: PreprocessSettings


def _frame_payload(job: _Job) -> dict:
    frame = job.record.frame(job.phase)
    image, label, spacing = load_pair(
        frame.image_path, frame.label_path, LABEL_VALUES[job.record.layout]
    )
    out, lab, new_spacing, rshape, offset = preprocess_frame(image, label, spacing, job.settings)
    payload = {
        "image": out,
        "spacing": new_spacing,
        "native_spacing": spacing,
        "native_shape": image.shape,
        "resampled_shape": rshape,
        "crop_offset": offset,
    }
    if lab is not None:
        payload.update(label=lab, native_label=label)
    return payload


def _cine_payload(job: _Job) -> dict:
    cine, spacing = load_image(job.record.cine_path, expect_3d=False)
    if cine.ndim != 4:
        raise DataError(job.record.cine_path, f"{cine.ndim}D cine; expected 4D (x, y, z, t)")
    frames = [preprocess_frame(frame, None, spacing, job.settings) for frame in cine]
    return {
        "image": np.stack([f[0] for f in frames]),
        "spacing": frames[0][2],
        "native_spacing": spacing,
        "native_shape": cine.shape[1:],
        "resampled_shape": frames[0][3],
        "crop_offset": frames[0][4],
    }


def _compute(job: _Job) -> Path:
    payload = _cine_payload(job) if job.kind == "cine" else _frame_payload(job)
    _save_npz(job.path, **{k: np.asarray(v) for k, v in payload.items()})
    return job.path


def _read_cache(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None  # damaged entry: recompute


def _volumes(job: _Job, data: dict) -> list[Volume]:
    r = job.record
    meta = {
        "spacing": tuple(float(s) for s in data["spacing"]),
        "native_spacing": tuple(float(s) for s in data["native_spacing"]),
        "native_shape": tuple(int(s) for s in data["native_shape"]),
        "group": r.group,
        "subset": r.subset,
        "resampled_shape": tuple(int(s) for s in data["resampled_shape"]),
        "crop_offset": tuple(int(s) for s in data["crop_offset"]),
    }
    if job.kind == "frame":
        return [
            Volume(
                r.patient_id,
                job.phase,
                data["image"],
                data.get("label"),
                **meta,
                native_label=data.get("native_label"),
            )
        ]
    skip = {int(r.info[p]) for p in ("ED", "ES") if p in job.phase.split(",") and p in r.info}
    return [
        Volume(r.patient_id, f"cine{t + 1:02d}", np.ascontiguousarray(img), None, **meta)
        for t, img in enumerate(data["image"])
        if t + 1 not in skip
    ]


def _plan(records, settings, cache_dir: Path, phases, include_cine) -> list[_Job]:
    memo: dict = {}
    fingerprint = settings.fingerprint()
    jobs = []
    for r in records:
        for f in r.frames:
            if f.phase not in phases:
                continue
            sources = [f.image_path] + ([f.label_path] if f.label_path else [])
            key = hashlib.sha256(
                "\n".join(
                    [fingerprint, r.layout, f.phase, *(_sha256(p, memo) for p in sources)]
                ).encode()
            ).hexdigest()[:32]
            path = cache_dir / f"{r.patient_id}_{f.phase}_{key}.npz"
            jobs.append(_Job("frame", r, f.phase, path, settings))
        if include_cine and r.cine_path is not None:
            key = hashlib.sha256(
                "\n".join([fingerprint, r.layout, "cine", _sha256(r.cine_path, memo)]).encode()
            ).hexdigest()[:32]
            path = cache_dir / f"{r.patient_id}_cine_{key}.npz"
            jobs.append(_Job("cine", r, ",".join(phases), path, settings))
    return jobs


def load_volumes(
    records: list[PatientRecord],
    settings: PreprocessSettings | None = None,
    cache_dir: str | Path = ".cache/preprocessed",
    phases=("ED", "ES"),
    include_cine: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, list[Volume]]:
    """Preprocessed volumes per patient id, computed once and then read from ``cache_dir``.

    ``phases`` selects frames ("ED", "ES"; HVSMR's is "volume"); ``include_cine`` adds
    each ACDC cine frame other than the selected ED/ES ones as an unlabeled volume
    ("cineNN", 1-based frame). ``workers`` > 1 computes missing entries in a process
    pool (default: up to 2 processes when more than 4 entries are missing).
    """
    settings = settings or PreprocessSettings()
    cache_dir = Path(cache_dir)
    phases = tuple(phases)
    jobs = _plan(records, settings, cache_dir, phases, include_cine)
    cached = {j.path: _read_cache(j.path) for j in jobs if j.path.is_file()}
    missing = [j for j in jobs if cached.get(j.path) is None]
    run_tasks(
        [partial(_compute, j) for j in missing],
        workers=workers,
        parallel_above=4,
        progress=progress,
        desc="preprocess",
        unit="frame",
    )
    out: dict[str, list[Volume]] = {r.patient_id: [] for r in records}
    for j in jobs:
        data = cached.get(j.path) or _read_cache(j.path)
        if data is None:
            raise DataError(j.path, "cache entry unreadable right after writing it")
        out[j.record.patient_id].extend(_volumes(j, data))
    return out
