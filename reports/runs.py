"""Reading run folders: result rows, configs, pretraining losses, profiles, timings, models."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from bench.datasets.errors import DataError
from bench.reports.aggregate import Planned
from bench.results import CONVERGENCE_COLUMNS, ROW_COLUMNS, ResultStore

# A row is identified by these columns; two run folders holding the same key hold a copy.
ROW_KEY = [
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
    "seed",
    "split_hash",
    "config_hash",
]
NO_PRESET = "default"


class RunFolderError(FileNotFoundError):
    pass


@dataclass
class Run:
    path: Path
    config: dict | None
    meta: dict  # run.yaml
    rows: pd.DataFrame
    losses: pd.DataFrame
    profiles: dict[str, pd.DataFrame] = field(default_factory=dict)
    profile_json: dict[str, object] = field(default_factory=dict)
    timings: pd.DataFrame = field(default_factory=pd.DataFrame)
    models: list[Path] = field(default_factory=list)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # curves/finetune/*.csv, tidy
    name: str = ""  # unique among the runs of one report (load_runs)

    def __post_init__(self):
        self.name = self.name or self.path.name


def _yaml(path: Path):
    if not path.exists():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise RunFolderError(f"{path}: unreadable YAML") from None


def _read_csvs(folder: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        try:
            frames[path.stem] = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
    return frames


def _read_jsons(folder: Path) -> dict[str, object]:
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


def _read_timings(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by an interrupted run
    return pd.DataFrame(records)


# Columns some runs write beside ROW_COLUMNS, kept when present: where the data came from
# (``synthetic:...`` or a folder; absent in older runs, which were synthetic).
OPTIONAL_COLUMNS = ["data_source", *CONVERGENCE_COLUMNS]


def _read_curves(folder: Path) -> pd.DataFrame:
    """The fine-tuning units' per-round curves (docs/FORMATS.md, "Curves"), concatenated."""
    frames = list(_read_csvs(folder).values())
    frames = [f for f in frames if {"method", "setting", "round", "metric", "value"} <= set(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def normalise_rows(rows: pd.DataFrame) -> pd.DataFrame:
    extra = [c for c in OPTIONAL_COLUMNS if c in rows.columns and c not in ROW_COLUMNS]
    rows = rows.reindex(columns=[*ROW_COLUMNS, *extra]).copy()
    for column in ("n_labeled", "fold", "client", "seed"):
        rows[column] = pd.to_numeric(rows[column]).astype("int64")
    rows["dice"] = pd.to_numeric(rows["dice"], errors="coerce").astype(float)
    rows["preset"] = rows["preset"].fillna(NO_PRESET).astype(str)
    for column in (
        "method",
        "pretrain_setting",
        "pretrain_dataset",
        "finetune_mode",
        "dataset",
        "patient",
        "phase",
        "class_name",
        "split_hash",
        "config_hash",
        "code_version",
        "versions",
    ):
        rows[column] = rows[column].astype(str)
    return rows


UNVERIFIED = " [unverified]"


def _verified_rows(path: Path, meta: dict, show_unverified: bool) -> pd.DataFrame:
    """The run's result rows; a unit whose manifest does not verify is refused, or with
    ``show_unverified`` kept with its method named ``<method> [unverified]``."""
    split_hash = meta.get("split_hash")
    try:
        rows, problems = ResultStore(path).load_checked(
            split_hash=None if split_hash is None else str(split_hash)
        )
    except DataError as error:
        raise RunFolderError(str(error)) from None
    if problems and not show_unverified:
        file, why = problems[0]
        more = f" ({len(problems) - 1} more unit(s) likewise)" if len(problems) > 1 else ""
        raise RunFolderError(
            f"{file}: unverifiable result unit: {why}{more}; rerun the same `bench run` to "
            "recompute it, or pass --show-unverified to show such units flagged"
        )
    if not rows.empty:
        rows.loc[~rows["verified"], "method"] += UNVERIFIED
    return rows.drop(columns="verified")


def load_run(path: str | Path, *, show_unverified: bool = False) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such run folder")
    if not (path / "results").is_dir() and not (path / "config.yaml").exists():
        raise RunFolderError(f"{path}: not a run folder (no results/ and no config.yaml)")
    meta = _yaml(path / "run.yaml") or {}
    config = _yaml(path / "config.yaml")
    for name, value in (("run.yaml", meta), ("config.yaml", config or {})):
        if not isinstance(value, dict):
            raise RunFolderError(f"{path / name}: not a mapping of fields")
    rows = _verified_rows(path, meta, show_unverified)
    rows = normalise_rows(rows) if not rows.empty else rows
    losses = _read_csvs(path / "pretrain_loss")
    loss_frame = pd.concat(losses.values(), ignore_index=True) if losses else pd.DataFrame()
    return Run(
        path=path,
        config=config,
        meta=meta,
        rows=rows,
        losses=loss_frame,
        profiles=_read_csvs(path / "profile"),
        profile_json=_read_jsons(path / "profile"),
        timings=_read_timings(path / "timings.jsonl"),
        models=sorted((path / "models").glob("*.safetensors"))
        if (path / "models").is_dir()
        else [],
        curves=_read_curves(path / "curves" / "finetune"),
    )


def load_runs(paths, *, show_unverified: bool = False) -> tuple[list[Run], pd.DataFrame, list[str]]:
    """The runs, their rows concatenated (copies dropped) and notes about what was dropped."""
    runs, seen, notes = [], set(), []
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            notes.append(f"{path}: given twice; read once.")
            continue
        seen.add(resolved)
        runs.append(load_run(path, show_unverified=show_unverified))
    names = [run.name for run in runs]
    for i, run in enumerate(runs):
        if names.count(run.name) > 1:
            run.name = f"{run.name}-{i + 1}"
    frames = [run.rows.assign(run=str(run.path)) for run in runs if not run.rows.empty]
    if not frames:
        return runs, pd.DataFrame(columns=[*ROW_COLUMNS, "run"]), notes
    rows = pd.concat(frames, ignore_index=True)
    copies = rows.duplicated(subset=ROW_KEY, keep="first")
    if copies.any():
        notes.append(
            f"{int(copies.sum())} result rows appear in more than one run folder; the first copy "
            "is used."
        )
        rows = rows[~copies].reset_index(drop=True)
    flagged = sorted({m for m in rows["method"] if m.endswith(UNVERIFIED)})
    if flagged:
        notes.append(
            f"Shown unverified (--show-unverified): {', '.join(flagged)}; their result files do "
            "not match their manifests."
        )
    return runs, rows, notes


def planned(run: Run) -> Planned | None:
    """The modes and N of the run's config and the methods of its run.yaml (when recorded)."""
    config, meta = run.config or {}, run.meta
    if not meta.get("dataset") or not meta.get("split_hash"):
        return None
    if not run.rows.empty:
        pretrain_dataset = str(run.rows["pretrain_dataset"].iloc[0])
    else:
        source = (config.get("pretrain") or {}).get("from_run")
        source_meta = _yaml(Path(source) / "run.yaml") if source else None
        pretrain_dataset = (
            (source_meta or {}).get("dataset", meta["dataset"]) if source else meta["dataset"]
        )
    return Planned(
        dataset=str(meta["dataset"]),
        pretrain_dataset=str(pretrain_dataset),
        preset=str(config.get("preset") or NO_PRESET),
        split_hash=str(meta["split_hash"]),
        modes=tuple((config.get("finetune") or {}).get("modes", ())),
        n_values=tuple(int(n) for n in (config.get("split") or {}).get("n_values", ())),
        methods=tuple(meta.get("methods") or ()),
    )
