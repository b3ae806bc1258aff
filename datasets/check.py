"""Read every file of a dataset and collect the problems instead of stopping at the first."""

from __future__ import annotations

from pathlib import Path

from .acdc import PATIENT_DIR, SUBSETS, acdc_root, read_patient
from .errors import DataError
from .hvsmr import read_hvsmr
from .layout import detect_layout
from .nifti import LABEL_VALUES, load_image, load_pair
from .records import PatientRecord


def _acdc_records(root: Path, problems: list) -> list[PatientRecord]:
    base = acdc_root(root)
    records = []
    for subset in SUBSETS:
        if not (base / subset).is_dir():
            continue
        for folder in sorted((base / subset).iterdir()):
            if folder.is_dir() and PATIENT_DIR.match(folder.name):
                try:
                    records.append(read_patient(folder, subset))
                except DataError as err:
                    problems.append(err)
    return records


def volume_warnings(path: Path, image) -> list[str]:
    """Readable but suspicious volumes: all zero, or a single voxel."""
    found = []
    if image.size == 1:
        found.append(f"{path}: a one-voxel volume")
    elif not image.any():
        found.append(f"{path}: an all-zero image")
    return found


def check_dataset(
    root: str | Path, cine: bool = True, progress: bool = False, warnings: list | None = None
):
    """``(layout, records, problems)``: decodes every image, label and (with ``cine``)
    4D cine, checking values, shapes and spacings. DataError only when the folder is
    in neither layout. Suspicious but readable volumes go to ``warnings`` (a list)."""
    root = Path(root)
    layout = detect_layout(root)
    problems: list[DataError] = []
    if layout == "acdc":
        records = _acdc_records(root, problems)
    else:
        try:
            records = read_hvsmr(root)
        except DataError as err:
            problems.append(err)
            records = []
    items = records
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(records, desc="check", unit="patient")
    for r in items:
        shape = None
        for f in r.frames:
            try:
                image, _, _ = load_pair(f.image_path, f.label_path, LABEL_VALUES[layout])
                shape = image.shape
                if warnings is not None:
                    warnings.extend(volume_warnings(f.image_path, image))
            except DataError as err:
                problems.append(err)
        if cine and r.cine_path is not None:
            try:
                data, _ = load_image(r.cine_path, expect_3d=False)
                if data.ndim != 4:
                    raise DataError(r.cine_path, f"{data.ndim}D cine; expected 4D (x, y, z, t)")
                if shape is not None and data.shape[1:] != shape:
                    raise DataError(
                        r.cine_path,
                        f"cine frames of shape {data.shape[1:]} differ "
                        f"from the ED/ES frames' {shape}",
                    )
                nb = r.info.get("NbFrame")
                if nb is not None and data.shape[0] != nb:
                    raise DataError(
                        r.cine_path, f"{data.shape[0]} cine frames but Info.cfg says NbFrame: {nb}"
                    )
            except DataError as err:
                problems.append(err)
    return layout, records, problems
