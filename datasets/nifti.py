"""Load one NIfTI file safely: arrays as (Z, H, W), spacing (z, y, x) in mm from the header."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import DataError

LABEL_VALUES = {"acdc": frozenset({0, 1, 2, 3}), "hvsmr": frozenset({0, 1, 2})}
SPACING_RTOL = 1e-3
SPACING_ATOL = 1e-3


def _decode(raw: bytes):
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)  # whole stream: checks the CRC and length trailer too
    if len(raw) >= 4 and struct.unpack("<i", raw[:4])[0] in (540, 0x1C020000):
        return nib.Nifti2Image.from_bytes(raw)
    return nib.Nifti1Image.from_bytes(raw)


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    if not path.is_file():
        raise DataError(path, "file not found (expected a NIfTI .nii or .nii.gz)")
    raw = path.read_bytes()
    if not raw:
        raise DataError(path, "empty file (expected a NIfTI .nii or .nii.gz)")
    try:
        img = _decode(raw)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # any failure to decode means a damaged file
        what = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DataError(path, f"unreadable NIfTI (truncated or corrupt?): {what}") from exc
    return data, zooms


def _spacing(path: Path, zooms: tuple[float, ...]) -> tuple[float, float, float]:
    if len(zooms) < 3 or not all(np.isfinite(zooms[:3])) or min(zooms[:3]) <= 0:
        raise DataError(
            path, f"bad voxel size {zooms[:3]} in pixdim (expected 3 positive mm values)"
        )
    return (zooms[2], zooms[1], zooms[0])


def _labels(path: Path, data: np.ndarray, label_values) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.integer) and (
        not np.isfinite(data).all() or not np.array_equal(data, np.round(data))
    ):
        raise DataError(path, "label map has non-integer values (expected integer classes)")
    ok = np.isin(data, np.array(sorted(label_values)))
    bad = [] if ok.all() else sorted(np.unique(data[~ok]).tolist())
    if bad:
        shown = ", ".join(str(int(v)) for v in bad[:8])
        raise DataError(
            path,
            f"label values {shown} outside the expected set "
            f"{{{', '.join(str(v) for v in sorted(label_values))}}}",
        )
    return data.astype(np.uint8)


def load_image(path: str | Path, expect_3d: bool = True, label_values=None):
    """Return ``(array, spacing)`` with array ``(Z, H, W)`` and spacing ``(z, y, x)`` mm.

    Images come back float32; with ``label_values`` (a set of allowed classes) the
    file is a label map and comes back uint8. With ``expect_3d=False`` a 4D file is
    accepted and returned as ``(T, Z, H, W)``. Spacing is read from the header's
    pixdim, never from the affine (ACDC's affine is unscaled).
    """
    path = Path(path)
    data, zooms = _read(path)
    while data.ndim > 3 and data.shape[-1] == 1 and (expect_3d or data.ndim > 4):
        data = data[..., 0]
    if expect_3d and data.ndim != 3:
        raise DataError(path, f"{data.ndim}D array of shape {data.shape}; expected a 3D volume")
    if data.ndim not in (3, 4):
        raise DataError(path, f"{data.ndim}D array of shape {data.shape}; expected 3D or 4D")
    if min(data.shape) < 1:
        raise DataError(path, f"empty array of shape {data.shape}")
    spacing = _spacing(path, zooms)
    # NIfTI (x, y, z[, t]) -> (z, y, x) or (t, z, y, x)
    data = np.transpose(data, (2, 1, 0) if data.ndim == 3 else (3, 2, 1, 0))
    if label_values is not None:
        return np.ascontiguousarray(_labels(path, data, label_values)), spacing
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise DataError(path, f"image dtype {data.dtype} is not a real number type")
    image = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(image).all():
        n = int((~np.isfinite(image)).sum())
        raise DataError(path, f"{n} NaN/inf intensities (expected finite values)")
    return image, spacing


def check_pair(
    label_path: str | Path, image: np.ndarray, image_spacing, label: np.ndarray, label_spacing
) -> None:
    """DataError naming the label file when its shape or spacing differs from the image's."""
    if image.shape != label.shape:
        raise DataError(
            label_path,
            f"label shape {label.shape} (z, y, x) differs from the image's {image.shape}",
        )
    if not np.allclose(image_spacing, label_spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
        raise DataError(
            label_path,
            f"label spacing {tuple(round(s, 4) for s in label_spacing)} "
            f"differs from the image's "
            f"{tuple(round(s, 4) for s in image_spacing)}",
        )


def load_pair(image_path, label_path, label_values):
    """``(image, label | None, spacing)`` for one frame, checked against each other."""
    image, spacing = load_image(image_path)
    if label_path is None:
        return image, None, spacing
    label, lspacing = load_image(label_path, label_values=label_values)
    check_pair(label_path, image, spacing, label, lspacing)
    return image, label, spacing
