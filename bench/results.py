"""Tidy result rows, one CSV per unit of work, written atomically.

A unit is one (method, seed, fine-tuning mode, N, fold); its file exists only
once all its rows are computed, so a rerun skips finished units and redoes
the one that was interrupted.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from bench.io import atomic_write_text

ROW_COLUMNS = [
    "method",
    "pretrain_setting",
    "pretrain_dataset",
    "finetune_mode",
    "dataset",
    "n_labeled",
    "fold",
    "client",
    "patient",
    "phase",
    "class_name",
    "dice",
    "seed",
    "split_hash",
    "config_hash",
    "preset",
    "code_version",
    "versions",
]


class ResultStore:
    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / "results"

    def unit_path(self, unit: dict) -> Path:
        name = "_".join(f"{key}-{unit[key]}" for key in ("method", "seed", "mode", "n", "fold"))
        return self.folder / f"{name}.csv"

    def is_done(self, unit: dict) -> bool:
        return self.unit_path(unit).exists()

    def write(self, unit: dict, rows: list[dict]) -> None:
        frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        atomic_write_text(self.unit_path(unit), buffer.getvalue())

    def load(self) -> pd.DataFrame:
        files = sorted(self.folder.glob("*.csv"))
        if not files:
            return pd.DataFrame(columns=ROW_COLUMNS)
        return pd.concat([pd.read_csv(f, dtype={"patient": str}) for f in files], ignore_index=True)


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Methods x N mean Dice per fine-tuning mode: class means per patient, then mean over
    patients."""
    if rows.empty:
        return pd.DataFrame()
    per_patient = rows.groupby(
        ["finetune_mode", "method", "n_labeled", "fold", "client", "patient"], as_index=False
    )["dice"].mean()
    table = (
        per_patient.groupby(["finetune_mode", "method", "n_labeled"])["dice"]
        .mean()
        .unstack("n_labeled")
    )
    table.columns = [f"N={n}" for n in table.columns]
    return table.round(3)
