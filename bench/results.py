"""Tidy result rows, one CSV per unit of work, each verified by a manifest.

A unit is one (method, seed, fine-tuning mode, N, fold). Its CSV is written
atomically, then its manifest (row count, SHA-256 of the CSV, config and split
hashes), also atomically: a unit is finished when both exist and agree. A rerun
skips finished units and recomputes any other, saying why (docs/FORMATS.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from bench.datasets.errors import DataError
from bench.io import atomic_write_text

ROW_COLUMNS = [
    "method",
    "pretrain_setting",
    "pretrain_dataset",
    "finetune_mode",
    "dataset",
    "data_source",
    "n_labeled",
    "fold",
    "client",
    "patient",
    "phase",
    "class_name",
    "dice",
    "grid",
    "hd95_mm",
    "hd95_note",
    "protocol",
    "seed",
    "split_hash",
    "config_hash",
    "preset",
    "code_version",
    "versions",
]
INT_COLUMNS = ["n_labeled", "fold", "client", "seed"]
# Written after ROW_COLUMNS; optional when read (rows of older runs lack them).
CONVERGENCE_COLUMNS = ["chosen_round", "converged", "stopped_by"]
# Identifiers are text whatever they look like: a hash of digits and one "e" is not a float.
TEXT_COLUMNS = [c for c in ROW_COLUMNS if c not in INT_COLUMNS and c not in ("dice", "hd95_mm")]
# One row per (client, patient, phase, class) within a unit.
UNIT_KEY = ["client", "patient", "phase", "class_name"]
UNIT_FIELDS = ("method", "seed", "mode", "n", "fold")
UNIT_FIELDS_COLUMNS = ["method", "seed", "finetune_mode", "n_labeled", "fold"]
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_rows(frame: pd.DataFrame, where: str | Path) -> pd.DataFrame:
    """Typed rows, or DataError naming ``where``: missing columns, non-integer counters, a Dice
    that is not a number in [0, 1] (empty or NaN: class absent from the label), duplicated keys."""
    missing = [c for c in ROW_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(where, f"result rows lack the columns {', '.join(missing)}")
    if frame.empty:
        raise DataError(where, "no result rows")
    extra = [c for c in frame.columns if c not in ROW_COLUMNS]  # e.g. data_source, as text
    frame = frame[[*ROW_COLUMNS, *extra]].copy()
    for column in INT_COLUMNS:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() | (numbers != numbers.round())
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(
                where, f"{column} {frame[column].iloc[row]!r} in row {row + 1} is not an integer"
            )
        frame[column] = numbers.astype("int64")
    text = frame["dice"].astype(str).str.strip()
    dice = pd.to_numeric(frame["dice"], errors="coerce")
    not_number = dice.isna() & ~text.str.lower().isin(["", "nan", "none"])
    if not_number.any():
        row = int(not_number.to_numpy().nonzero()[0][0])
        raise DataError(where, f"dice {frame['dice'].iloc[row]!r} in row {row + 1} is not a number")
    outside = dice.notna() & ~dice.between(0.0, 1.0)
    if outside.any():
        row = int(outside.to_numpy().nonzero()[0][0])
        raise DataError(where, f"dice {dice.iloc[row]} in row {row + 1} is outside [0, 1]")
    frame["dice"] = dice.astype(float)
    hd95 = pd.to_numeric(frame["hd95_mm"], errors="coerce")
    empty = frame["hd95_mm"].astype(str).str.strip().str.lower().isin(["", "nan", "none"])
    bad = (hd95.isna() & ~empty) | (hd95 < 0)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            where, f"hd95_mm {frame['hd95_mm'].iloc[row]!r} in row {row + 1} is not a distance"
        )
    frame["hd95_mm"] = hd95.astype(float)
    for column in [*TEXT_COLUMNS, *extra]:
        frame[column] = frame[column].fillna("").astype(str)
    copies = frame.duplicated(subset=[*UNIT_FIELDS_COLUMNS, *UNIT_KEY], keep=False)
    if copies.any():
        first = frame[copies].iloc[0]
        raise DataError(
            where,
            f"{int(copies.sum())} rows share a key, e.g. client {first['client']} patient "
            f"{first['patient']} {first['phase']} {first['class_name']}",
        )
    return frame


def read_rows(path: Path) -> pd.DataFrame:
    """A result CSV, identifiers read as text and every row checked; DataError naming it."""
    path = Path(path)
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8",
            encoding_errors="strict",
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(
            path, f"unreadable result CSV ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from None
    if any("\x00" in str(c) for c in frame.columns):
        raise DataError(path, "unreadable result CSV (binary content)")
    return check_rows(frame, path)


def rows_csv(rows: list[dict] | pd.DataFrame) -> str:
    """ROW_COLUMNS in their order, then any other column the rows carry."""
    frame = pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if c not in ROW_COLUMNS)
    buffer = io.StringIO()
    frame.reindex(columns=[*ROW_COLUMNS, *extra]).to_csv(buffer, index=False)
    return buffer.getvalue()


class ResultStore:
    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / "results"

    def unit_path(self, unit: dict) -> Path:
        name = "_".join(f"{key}-{unit[key]}" for key in UNIT_FIELDS)
        return self.folder / f"{name}.csv"

    @staticmethod
    def manifest_path(csv_path: Path) -> Path:
        return csv_path.with_name(csv_path.stem + MANIFEST_SUFFIX)

    def write(self, unit: dict, rows: list[dict]) -> None:
        """The unit's CSV, then its manifest: each atomic, the manifest last."""
        path = self.unit_path(unit)
        text = rows_csv(rows)
        frame = check_rows(pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False), path)
        hashes = {column: sorted(set(frame[column])) for column in ("config_hash", "split_hash")}
        if any(len(values) != 1 for values in hashes.values()):
            raise DataError(path, f"a unit's rows must share one config and split hash: {hashes}")
        atomic_write_text(path, text)
        manifest = {
            "format": MANIFEST_FORMAT,
            "unit": {key: unit[key] for key in UNIT_FIELDS},
            "file": path.name,
            "rows": len(frame),
            "sha256": _sha256(text.encode("utf-8")),
            "config_hash": hashes["config_hash"][0],
            "split_hash": hashes["split_hash"][0],
        }
        atomic_write_text(self.manifest_path(path), json.dumps(manifest, indent=1) + "\n")

    def problem(
        self, csv_path: Path, *, config_hash: str | None = None, split_hash: str | None = None
    ) -> str | None:
        """Why the unit in ``csv_path`` cannot be trusted, or None when its manifest verifies."""
        manifest_path = self.manifest_path(csv_path)
        if not manifest_path.exists():
            return "it has no manifest (cut short, or written by an older bench)"
        try:
            manifest = json.loads(manifest_path.read_text())
            rows, digest = int(manifest["rows"]), str(manifest["sha256"])
            saved_config, saved_split = str(manifest["config_hash"]), str(manifest["split_hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"its manifest {manifest_path.name} is unreadable"
        if _sha256(csv_path.read_bytes()) != digest:
            return "its CSV differs from the SHA-256 in its manifest (changed or truncated)"
        if config_hash is not None and saved_config != config_hash:
            return f"it was made with config {saved_config}, this run's is {config_hash}"
        if split_hash is not None and saved_split != split_hash:
            return f"it was made on split {saved_split}, this run's is {split_hash}"
        try:
            frame = read_rows(csv_path)
        except DataError as error:
            return error.message
        if len(frame) != rows:
            return f"it has {len(frame)} rows, its manifest says {rows}"
        unit = manifest.get("unit") or {}
        if manifest.get("file") != csv_path.name or csv_path != self.unit_path(
            {key: unit.get(key) for key in UNIT_FIELDS}
        ):
            return f"its manifest describes {manifest.get('file')!r}, not this file"
        values = frame[UNIT_FIELDS_COLUMNS].drop_duplicates()
        expected = [unit.get(key) for key in UNIT_FIELDS]
        if len(values) != 1 or [str(v) for v in values.iloc[0]] != [str(v) for v in expected]:
            return "its rows belong to another unit than its file name says"
        if set(frame["config_hash"]) != {saved_config} or set(frame["split_hash"]) != {saved_split}:
            return "its rows' config or split hash differ from its manifest's"
        return None

    def status(self, unit: dict, *, config_hash: str, split_hash: str) -> tuple[bool, str | None]:
        """(finished, why it must be recomputed): (False, None) when it never ran."""
        path = self.unit_path(unit)
        if not path.exists():
            return False, None
        why = self.problem(path, config_hash=config_hash, split_hash=split_hash)
        return why is None, why

    def unit_files(self) -> list[Path]:
        return sorted(self.folder.glob("*.csv")) if self.folder.is_dir() else []

    def load(self, *, split_hash: str | None = None) -> pd.DataFrame:
        """The rows of every unit whose manifest verifies; DataError naming any other."""
        rows, problems = self.load_checked(split_hash=split_hash)
        if problems:
            path, why = problems[0]
            raise DataError(path, f"unverifiable result unit: {why}")
        return rows

    def load_checked(
        self, *, split_hash: str | None = None
    ) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
        """(rows of every unit with a ``verified`` column, [(file, why) of the unverified]).

        Rows of an unverified unit are included (verified False) when they read and
        check; those of a unit whose file does not read are left out (its problem says why).
        """
        frames, problems = [], []
        for path in self.unit_files():
            why = self.problem(path, split_hash=split_hash)
            if why is None:
                frames.append(read_rows(path).assign(verified=True, _file=path.name))
                continue
            problems.append((path, why))
            with contextlib.suppress(DataError):
                frames.append(read_rows(path).assign(verified=False, _file=path.name))
        if not frames:
            return pd.DataFrame(columns=[*ROW_COLUMNS, "verified"]), problems
        rows = pd.concat(frames, ignore_index=True)
        copies = rows.duplicated(subset=[*UNIT_FIELDS_COLUMNS, *UNIT_KEY], keep=False)
        if copies.any() and not problems:  # else the unverified files are named first
            files = sorted(set(rows.loc[copies, "_file"]))
            raise DataError(
                self.folder / files[-1],
                f"{int(copies.sum())} result rows appear in more than one unit file "
                f"({', '.join(files)}): a copied or renamed CSV?",
            )
        return rows.drop(columns="_file"), problems


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Methods x N mean Dice per fine-tuning mode: class means per patient, then the mean
    over patients."""
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
