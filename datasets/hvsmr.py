"""Reader for HVSMR 2016 axial crops (``training_axial_crop_patN[-label].nii.gz``)."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError
from .records import FrameRecord, PatientRecord

LABELS = {0: "background", 1: "myocardium", 2: "blood pool"}
_FILE = re.compile(r"(training|testing)_axial_crop_pat(\d+)(-label)?\.nii(\.gz)?$")


def hvsmr_files(root: str | Path, depth: int = 2) -> list[Path]:
    """Every ``*_axial_crop_pat*`` NIfTI in ``root`` or up to ``depth`` folders below, sorted."""
    root = Path(root)
    found = []
    for level in range(depth + 1):
        pattern = "/".join(["*"] * level + ["*_axial_crop_pat*.nii*"])
        found += [p for p in root.glob(pattern) if _FILE.match(p.name)]
    return sorted(found)


def read_hvsmr(root: str | Path) -> list[PatientRecord]:
    """One record per patient (id ``patN``), one frame with phase "volume".

    Training volumes need their ``-label`` file; testing labels are optional.
    """
    root = Path(root)
    found: dict[tuple[str, int], dict[str, Path]] = {}
    for path in hvsmr_files(root):
        subset, num, is_label, _ = _FILE.match(path.name).groups()
        slot = found.setdefault((subset, int(num)), {})
        kind = "label" if is_label else "image"
        if kind in slot:
            raise DataError(path, f"duplicate {kind} file for pat{num} (also {slot[kind]})")
        slot[kind] = path
    if not found:
        raise DataError(root, "no HVSMR files (expected training_axial_crop_patN.nii.gz)")
    records, seen = [], {}
    for (subset, num), slot in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        pid = f"pat{num}"
        if pid in seen:
            raise DataError(
                slot.get("image", slot.get("label")),
                f"{pid} appears in both training and testing files",
            )
        seen[pid] = subset
        if "image" not in slot:
            raise DataError(
                slot["label"], f"label without its image {subset}_axial_crop_{pid}.nii.gz"
            )
        if "label" not in slot and subset == "training":
            name = slot["image"].name.replace(".nii", "-label.nii", 1)
            raise DataError(
                slot["image"].with_name(name),
                "missing label of a training volume (expected this -label file)",
            )
        frame = FrameRecord("volume", slot["image"], slot.get("label"))
        records.append(PatientRecord(pid, subset, None, [frame], None, "hvsmr"))
    return records
