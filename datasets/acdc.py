"""Reader for the ACDC folder layout (``database/{training,testing}/patientXXX``)."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError
from .records import FrameRecord, PatientRecord

GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
LABELS = {0: "background", 1: "RV", 2: "Myo", 3: "LV"}
SUBSETS = ("training", "testing")
PATIENT_DIR = re.compile(r"patient(\d{3})$")
_INT_KEYS = ("ED", "ES", "NbFrame")
_FLOAT_KEYS = ("Height", "Weight")


def acdc_root(root: str | Path) -> Path:
    """The folder holding ``training/`` and/or ``testing/``: ``root`` or ``root/database``."""
    root = Path(root)
    for cand in (root, root / "database"):
        if any((cand / s).is_dir() for s in SUBSETS):
            return cand
    raise DataError(root, "no ACDC 'training/' or 'testing/' folder here or under 'database/'")


def parse_info(path: str | Path) -> dict:
    """Parse ``Info.cfg`` (``Key: value`` lines) into typed values.

    ED, ES and NbFrame are ints, Height and Weight floats, Group a string (may be
    absent in the testing set). Raises DataError for a missing file, a malformed
    line, an unparsable value or an unknown group.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path, "missing Info.cfg (expected 'Key: value' lines with ED, ES, Group, …)"
        )
    info: dict = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(path, f"line {n} {line!r} is not 'Key: value'")
        key, value = key.strip(), value.strip()
        try:
            if key in _INT_KEYS:
                number = float(value)
                if not number.is_integer():
                    raise ValueError
                info[key] = int(number)
            elif key in _FLOAT_KEYS:
                info[key] = float(value)
            else:
                info[key] = value
        except ValueError:
            kind = "an integer" if key in _INT_KEYS else "a number"
            raise DataError(path, f"line {n}: {key} = {value!r} is not {kind}") from None
    for key in ("ED", "ES"):
        if key not in info:
            raise DataError(path, f"no {key} frame number (expected a line '{key}: <int>')")
    nb = info.get("NbFrame")
    for key in ("ED", "ES"):
        if info[key] < 1 or (nb is not None and info[key] > nb):
            raise DataError(path, f"{key} = {info[key]} is outside 1..{nb or '?'} (NbFrame)")
    if "Group" in info and info["Group"] not in GROUPS:
        raise DataError(
            path, f"unknown Group {info['Group']!r}; expected one of {', '.join(GROUPS)}"
        )
    return info


def _nifti(folder: Path, stem: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def read_patient(folder: str | Path, subset: str) -> PatientRecord:
    """One ``patientXXX`` folder: Info.cfg, ED/ES frames with ``_gt`` labels, optional ``_4d``
    cine."""
    folder = Path(folder)
    pid = folder.name
    info = parse_info(folder / "Info.cfg")
    group = info.get("Group")
    if subset == "training" and group is None:
        raise DataError(folder / "Info.cfg", "training patient without a Group line")
    frames = []
    for phase in ("ED", "ES"):
        stem = f"{pid}_frame{info[phase]:02d}"
        image = _nifti(folder, stem)
        if image is None:
            raise DataError(
                folder / f"{stem}.nii.gz",
                f"missing {phase} frame (Info.cfg says {phase}: {info[phase]})",
            )
        label = _nifti(folder, f"{stem}_gt")
        if label is None and subset == "training":
            raise DataError(
                folder / f"{stem}_gt.nii.gz",
                f"missing label of the {phase} frame (training patients need _gt files)",
            )
        frames.append(FrameRecord(phase, image, label))
    rest = {k: v for k, v in info.items() if k != "Group"}
    return PatientRecord(pid, subset, group, frames, _nifti(folder, f"{pid}_4d"), "acdc", rest)


def read_acdc(root: str | Path) -> list[PatientRecord]:
    """All patients under an ACDC ``database/`` folder (or a folder containing it), sorted by id."""
    base = acdc_root(root)
    records = []
    for subset in SUBSETS:
        sub = base / subset
        if not sub.is_dir():
            continue
        for folder in sorted(sub.iterdir()):
            if folder.is_dir() and PATIENT_DIR.match(folder.name):
                records.append(read_patient(folder, subset))
    if not records:
        raise DataError(base, "no patientXXX folders under training/ or testing/")
    ids = [r.patient_id for r in records]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataError(base, f"patients in both training/ and testing/: {', '.join(dup)}")
    return records
