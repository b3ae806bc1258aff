"""Load one NIfTI file safely: arrays as (Z, H, W), spacing (z, y, x) in mm from the header."""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import DataError

LABEL_VALUES = {"acdc": frozenset({0, 1, 2, 3}), "hvsmr": frozenset({0, 1, 2})}
SPACING_RTOL = 1e-3
SPACING_ATOL = 1e-3


def _decode(raw: bytes):
    if len(raw) >= 4 and struct.unpack("<i", raw[:4])[0] in (540, 0x1C020000):
        return nib.Nifti2Image.from_bytes(raw)
    return nib.Nifti1Image.from_bytes(raw)


# Refused before anything is allocated: more voxels than this (2 GiB of float32), or a
# dimension above MAX_DIM. ACDC's largest cine is ~1.4e8 voxels, HVSMR's volumes ~6e7.
MAX_VOXELS = 512 * 1024 * 1024
MAX_DIM = 8192
# Bytes a file may hold past the voxel data its header implies (NIfTI allows none; some
# writers pad).
SLACK_BYTES = 1 << 20
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1's is 348


def _header(path: Path, head: bytes):
    """The NIfTI-1 or NIfTI-2 header at the start of ``head``."""
    if len(head) < 348:
        raise DataError(path, f"only {len(head)} bytes: too short for a NIfTI header")
    sizes = {struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]}
    if 540 in sizes:
        if len(head) < 540:
            raise DataError(path, "too short for its NIfTI-2 header")
        return nib.Nifti2Header.from_fileobj(io.BytesIO(head[:540]), check=False)
    if 348 in sizes:
        return nib.Nifti1Header.from_fileobj(io.BytesIO(head[:348]), check=False)
    raise DataError(path, "not a NIfTI file (header size is neither 348 nor 540)")


def _expected_bytes(path: Path, header) -> int:
    """Bytes the header says the file holds (header, extensions, voxels); DataError when
    its dimensions are negative or beyond the documented caps."""
    dims = [int(d) for d in header["dim"]]
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise DataError(path, f"header dim[0]={ndim}; expected 1 to 7 dimensions")
    shape = dims[1 : ndim + 1]
    if min(shape) < 1:
        raise DataError(path, f"header dimensions {tuple(shape)} include one below 1")
    if max(shape) > MAX_DIM or math.prod(shape) > MAX_VOXELS:
        raise DataError(
            path,
            f"header dimensions {tuple(shape)} exceed bench's caps ({MAX_DIM} per axis, "
            f"{MAX_VOXELS} voxels): refusing to allocate them",
        )
    bitpix = int(header["bitpix"])
    if bitpix <= 0 or bitpix % 8:
        raise DataError(path, f"header bitpix={bitpix}; expected a whole number of bytes")
    offset = int(header["vox_offset"])
    if offset < 0:
        raise DataError(path, f"header vox_offset={offset} is negative")
    return offset + math.prod(shape) * bitpix // 8


def _check_pixdim(path: Path, header) -> None:
    """pixdim as written (nibabel's zooms turn 0 into 1 mm): positive and finite."""
    pixdim = [float(p) for p in header["pixdim"][1:4]]
    if not all(math.isfinite(p) for p in pixdim) or min(pixdim) <= 0:
        raise DataError(
            path, f"bad voxel size {tuple(pixdim)} in pixdim (expected 3 positive mm values)"
        )


def _read_bounded(path: Path) -> bytes:
    """The file's (decompressed) bytes, never more than its header implies."""
    with open(path, "rb") as handle:
        start = handle.read(2)
        handle.seek(0)
        if start != b"\x1f\x8b":
            head = handle.read(_HEADER_BYTES)
            expected = _expected_bytes(path, _header(path, head))
            size = path.stat().st_size
            if size < expected:
                raise DataError(
                    path,
                    f"the header implies {expected} bytes, the file holds {size} (truncated?)",
                )
            if size > expected + SLACK_BYTES:
                raise DataError(path, f"the file holds {size} bytes, its header implies {expected}")
            handle.seek(0)
            return handle.read()
        return _inflate_bounded(path, handle)


def _inflate_bounded(path: Path, handle) -> bytes:
    """Inflates a .nii.gz, stopping as soon as it passes the size its header implies."""
    inflater = zlib.decompressobj(wbits=31)  # gzip framing; CRC and length checked at the end
    out = bytearray()
    expected, limit = None, _HEADER_BYTES
    while not inflater.eof:
        chunk = inflater.unconsumed_tail or handle.read(1 << 16)
        if not chunk:
            raise DataError(path, "truncated gzip stream (the file was cut short)")
        try:
            out += inflater.decompress(chunk, limit + 1 - len(out))
        except zlib.error as exc:
            raise DataError(path, f"corrupt gzip stream ({exc})") from None
        if expected is None and (len(out) >= _HEADER_BYTES or inflater.eof):
            expected = _expected_bytes(path, _header(path, bytes(out[:_HEADER_BYTES])))
            limit = expected + SLACK_BYTES
        if len(out) > limit:
            raise DataError(
                path,
                f"decompresses past the {expected} bytes its header implies "
                "(a decompression bomb?); refusing it",
            )
    if len(out) < expected:
        raise DataError(
            path, f"the header implies {expected} bytes, the file inflates to {len(out)}"
        )
    return bytes(out)


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    if not path.is_file():
        raise DataError(path, "file not found (expected a NIfTI .nii or .nii.gz)")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (expected a NIfTI .nii or .nii.gz)")
    raw = _read_bounded(path)
    _check_pixdim(path, _header(path, raw[:_HEADER_BYTES]))  # as written: nibabel fixes 0 to 1
    try:
        img = _decode(raw)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        data = np.asanyarray(img.dataobj)
    except DataError:
        raise
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
