"""Tell an ACDC folder from an HVSMR one and read either."""

from __future__ import annotations

from pathlib import Path

from .acdc import acdc_root, read_acdc
from .errors import DataError
from .hvsmr import hvsmr_files, read_hvsmr
from .records import PatientRecord

LAYOUTS = ("acdc", "hvsmr")


def detect_layout(root: str | Path) -> str:
    """``"acdc"`` or ``"hvsmr"``; DataError naming the folder when it is neither."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder (expected an ACDC or HVSMR dataset folder)")
    try:
        base = acdc_root(root)
    except DataError:
        base = None
    if base is not None and any(
        p.is_dir() and p.name.startswith("patient")
        for sub in ("training", "testing")
        if (base / sub).is_dir()
        for p in (base / sub).iterdir()
    ):
        return "acdc"
    if hvsmr_files(root):
        return "hvsmr"
    raise DataError(
        root,
        "neither ACDC nor HVSMR layout: ACDC has [database/]training|testing/patientXXX/ with "
        "Info.cfg and patientXXX_frameNN[_gt].nii.gz; HVSMR has "
        "training_axial_crop_patN.nii.gz with training_axial_crop_patN-label.nii.gz",
    )


def read_dataset(root: str | Path) -> tuple[str, list[PatientRecord]]:
    """``(layout, records)`` for a dataset folder of either layout."""
    layout = detect_layout(root)
    return layout, (read_acdc(root) if layout == "acdc" else read_hvsmr(root))
