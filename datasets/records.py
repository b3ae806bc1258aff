"""What a reader finds on disk: patients and their frames (paths only, nothing decoded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FrameRecord:
    """One 3D frame: ``phase`` is "ED", "ES" or "volume" (HVSMR); label may be absent."""

    phase: str
    image_path: Path
    label_path: Path | None


@dataclass
class PatientRecord:
    """One patient: subset "training" | "testing", ACDC pathology ``group`` or None.

    ``info`` holds the rest of ACDC's Info.cfg (ED, ES, NbFrame, Height, Weight).
    """

    patient_id: str
    subset: str
    group: str | None
    frames: list[FrameRecord]
    cine_path: Path | None = None
    layout: str = "acdc"
    info: dict = field(default_factory=dict)

    @property
    def labeled(self) -> bool:
        """True when every frame has a label file."""
        return bool(self.frames) and all(f.label_path is not None for f in self.frames)

    def frame(self, phase: str) -> FrameRecord:
        """The frame with this phase (KeyError if absent)."""
        for f in self.frames:
            if f.phase == phase:
                return f
        raise KeyError(f"{self.patient_id} has no frame {phase!r}")
