"""Provenance: data, split, seeds, configuration, code, libraries, hardware and durations."""

from __future__ import annotations

import datetime
import json

import pandas as pd
import yaml

from bench.config import config_hash
from bench.reports.document import MISSING, Code, Note, Table
from bench.reports.runs import Run
from bench.reports.tables import frame_table


def _join(values) -> str:
    values = [str(v) for v in dict.fromkeys(values) if v is not None and str(v) != "nan"]
    return ", ".join(values) if values else MISSING


def data_root(run: Run) -> str:
    config = run.config or {}
    data = config.get("data", {})
    if data.get("root"):
        return str(data["root"])
    synthetic = data.get("synthetic") or {}
    if not synthetic:
        return MISSING
    folder = run.path / "data" / ("synthetic-" + str(synthetic.get("layout")))
    return f"{folder} (synthetic, seed {synthetic.get('seed')})"


def run_record(run: Run) -> dict:
    rows, config = run.rows, run.config or {}

    def get(column):
        return rows[column].unique() if column in rows else []

    pretrain = config.get("pretrain", {})
    return {
        "run": str(run.path),
        "dataset": run.meta.get("dataset", _join(get("dataset"))),
        "data root": data_root(run),
        "pretrained in": pretrain.get("from_run") or "this run",
        "split hash": _join([run.meta.get("split_hash"), *get("split_hash")]),
        "seeds": _join([*config.get("run", {}).get("seeds", []), *get("seed")]),
        "preset": _join([config.get("preset") if config else None, *get("preset")]),
        "config hash": _join([config_hash(config) if config else None, *get("config_hash")]),
        "code version": _join(get("code_version")),
        "result rows": str(len(rows)),
    }


def versions_table(runs: list[Run]) -> Table | None:
    records = []
    for run in runs:
        for text in run.rows["versions"].dropna().unique() if "versions" in run.rows else []:
            try:
                records.append({"run": str(run.path), **json.loads(text)})
            except ValueError:
                records.append({"run": str(run.path), "versions": text})
    if not records:
        return None
    frame = pd.DataFrame(records).drop_duplicates().fillna(MISSING)
    return frame_table(
        frame.astype(str), "provenance-versions", "Library versions recorded with the results"
    )


def durations_table(runs: list[Run]) -> Table | None:
    frames = [
        run.timings.assign(run=run.path.name)
        for run in runs
        if not run.timings.empty and "seconds" in run.timings
    ]
    if not frames:
        return None
    timings = pd.concat(frames, ignore_index=True)
    keys = [k for k in ("run", "phase", "method", "mode", "n") if k in timings]
    table = (
        timings.groupby(keys, dropna=False)["seconds"]
        .agg(units="count", seconds="sum")
        .reset_index()
    )
    return frame_table(
        table,
        "provenance-durations",
        "Recorded durations (timings.jsonl), summed per step",
        notes=[f"Total: {timings['seconds'].sum():.1f} s over {len(timings)} recorded steps."],
    )


def provenance_blocks(runs: list[Run], hardware: dict, code_version: str) -> list:
    blocks: list = [
        frame_table(pd.DataFrame([run_record(r) for r in runs]), "provenance-runs", "Run folders")
    ]
    versions = versions_table(runs)
    blocks.append(versions or Note("No library versions recorded (no result rows)."))
    recorded = [
        {"run": r.path.name, **r.meta["hardware"]}
        for r in runs
        if isinstance(r.meta.get("hardware"), dict)
    ]
    for name, profile in (
        (f"{r.path.name}/{k}", v) for r in runs for k, v in r.profile_json.items()
    ):
        if isinstance(profile, dict) and isinstance(profile.get("device"), (str, dict)):
            device = profile["device"]
            recorded.append(
                {"run": name, **(device if isinstance(device, dict) else {"device": device})}
            )
    if recorded:
        blocks.append(
            frame_table(
                pd.DataFrame(recorded).astype(str),
                "provenance-hardware-runs",
                "Hardware recorded by the runs",
            )
        )
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    machine = {
        "report generated": now,
        "report code version": code_version,
        **{k: str(v) for k, v in hardware.items()},
    }
    blocks.append(
        frame_table(
            pd.DataFrame([machine]),
            "provenance-hardware",
            "This machine (where the report was made)",
        )
    )
    durations = durations_table(runs)
    blocks.append(durations or Note("No durations recorded (no timings.jsonl in the run folders)."))
    for run in runs:
        if run.config is not None:
            blocks.append(
                Code(
                    f"Configuration of {run.path} (config hash {config_hash(run.config)})",
                    yaml.safe_dump(run.config, sort_keys=True),
                )
            )
    return blocks
