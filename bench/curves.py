"""Per-round curves of a pretraining or fine-tuning unit: one tidy CSV format for both.

One row per (round, client, metric); ``client`` is empty for the server's
values (the global model's validation Dice, the loss averaged over clients).
The identity columns repeat the unit, so any set of curve files concatenates
into one table. The format is specified in docs/FORMATS.md.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from bench.config import as_section
from bench.config_schema import Config
from bench.convergence import StoppingRule, plateau_round, smoothed
from bench.io import atomic_write_text
from bench.trackers import log_curves

CURVE_COLUMNS = [
    "stage",
    "method",
    "seed",
    "setting",
    "n_labeled",
    "fold",
    "round",
    "client",
    "metric",
    "value",
]
# Reply fields that are bookkeeping, not curves.
_NOT_CURVES = {"num-examples", "stopped", "score"}


def unit_name(identity: dict) -> str:
    """File stem of a unit's curves: ``fcl-seed0`` or ``fcl-seed0-local-N4-fold0``."""
    name = f"{identity['method']}-seed{identity['seed']}"
    if identity["stage"] == "finetune":
        name += f"-{identity['setting']}-N{identity['n_labeled']}-fold{identity['fold']}"
    return name


def curve_frame(
    history: list[dict], identity: dict, chosen: dict[int | None, int], loss_window: int
) -> pd.DataFrame:
    """The curves of one unit from its server history.

    ``chosen``: the round whose model was kept, keyed by client (None: the server's global
    model); empty for pretraining.
    """
    records = []

    def add(round_number, client, metric, value):
        records.append((round_number, client, metric, float(value)))

    pooled = []
    for entry in history:
        r = entry["round"]
        for client, metrics in sorted(entry["train"].items()):
            if metrics.get("steps", 1.0) == 0:
                continue  # a client that had stopped and idled this round
            for metric, value in sorted(metrics.items()):
                if metric not in _NOT_CURVES:
                    add(r, client, metric, value)
        trained = [m for m in entry["train"].values() if m.get("steps", 1.0) > 0]
        if trained:
            weights = [m["num-examples"] for m in trained]
            loss = sum(m["loss_mean"] * w for m, w in zip(trained, weights, strict=True)) / sum(
                weights
            )
            pooled.append((r, loss))
            add(r, None, "loss_mean", loss)
        if entry.get("validation"):
            add(r, None, "val_dice", entry["validation"]["val_dice"])
    for (r, _), value in zip(
        pooled, smoothed([loss for _, loss in pooled], loss_window), strict=True
    ):
        add(r, None, "loss_smoothed", value)
    for client, round_number in chosen.items():
        add(round_number, client, "chosen_round", round_number)
    frame = pd.DataFrame(records, columns=["round", "client", "metric", "value"])
    frame["client"] = frame["client"].astype("Int64")
    for column in ("stage", "method", "seed", "setting", "n_labeled", "fold"):
        frame[column] = identity.get(column)
    frame = frame[CURVE_COLUMNS]
    return frame.sort_values(["round", "client", "metric"], na_position="first").reset_index(
        drop=True
    )


def write_curves(folder: Path, name: str, frame: pd.DataFrame, summary: dict) -> Path:
    """``<folder>/<name>.csv`` (the curves) and ``<folder>/<name>.json`` (how the unit ended)."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    path = Path(folder) / f"{name}.csv"
    atomic_write_text(path, buffer.getvalue())
    atomic_write_text(path.with_suffix(".json"), json.dumps(summary, indent=1, sort_keys=True))
    return path


def read_curves(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"client": "Int64", "n_labeled": "Int64", "fold": "Int64"})


def record_unit(run_dir: Path, run_cfg: dict, identity: dict, frame: pd.DataFrame, summary: dict):
    """Writes a unit's curves and summary, and sends the curves to the run's tracker."""
    name = unit_name(identity)
    write_curves(Path(run_dir) / "curves" / identity["stage"], name, frame, summary)
    log_curves(run_cfg, Path(run_dir), f"{identity['stage']}/{name}", frame)


def record_pretraining(run_dir: Path, config, task, final: dict) -> None:
    """A pretraining unit's curves and the round its loss reached a plateau (recorded only)."""
    config = as_section(Config, config)
    cfg = config.pretrain
    rule = StoppingRule.from_config(cfg.plateau, "loss")
    identity = {
        "stage": "pretrain",
        "method": task.method_name,
        "seed": task.seed,
        "setting": cfg.setting,
    }
    frame = curve_frame(final["history"], identity, {}, rule.loss_window)
    pooled = frame[frame["client"].isna() & (frame["metric"] == "loss_mean")]
    plateau = plateau_round(pooled["value"].tolist(), rule)
    summary = {
        "unit": identity,
        "rounds": final["rounds"],
        "epochs_per_round": cfg.epochs_per_round if cfg.local_steps is None else None,
        "steps_per_round": task.steps,
        "plateau": {
            "round": plateau,
            "reached": plateau is not None,
            "rule": {**rule.__dict__, "criterion": "loss"},
        },
    }
    record_unit(run_dir, config.run, identity, frame, summary)


def record_finetuning(run_dir: Path, config, unit, task, final: dict, outcome: list[dict]):
    """A fine-tuning unit's curves and, per client, the round chosen and what stopped it."""
    config = as_section(Config, config)
    cfg = config.finetune
    identity = {
        "stage": "finetune",
        "method": unit.method,
        "seed": unit.seed,
        "setting": unit.mode,
        "n_labeled": unit.n,
        "fold": unit.fold,
    }
    if task.aggregate:
        chosen = {None: outcome[0]["chosen_round"]}
    else:
        chosen = {c: o["chosen_round"] for c, o in enumerate(outcome)}
    frame = curve_frame(final["history"], identity, chosen, task.rules[0].loss_window)
    summary = {
        "unit": identity,
        "max_rounds": task.num_rounds,
        "rounds": final["rounds"],
        "epochs_per_round": cfg.epochs_per_round if cfg.local_steps is None else None,
        "steps_per_round": task.steps,
        "rules": [
            {**rule.__dict__, "criterion": criterion}
            for rule, criterion in zip(task.rules, task.criteria, strict=True)
        ],
        "clients": outcome,
    }
    record_unit(run_dir, config.run, identity, frame, summary)
