"""CI regression: each method's mean Dice on the tiny preset against a committed baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

TOLERANCE = 0.05  # absolute Dice; covers float differences between CPUs, not a real regression


def method_means(rows: pd.DataFrame) -> dict[str, float]:
    """Mean Dice per method over every fine-tuning mode, N, fold, client, patient and class."""
    return {
        method: round(float(group["dice"].mean()), 4) for method, group in rows.groupby("method")
    }


def save_baseline(path: Path, means: dict[str, float]) -> None:
    Path(path).write_text(
        json.dumps({"tolerance": TOLERANCE, "mean_dice": means}, indent=2, sort_keys=True) + "\n"
    )


def regressions(measured: dict[str, float], baseline_path: Path) -> list[str]:
    """Methods whose Dice fell more than the tolerance below the baseline, or that are missing."""
    baseline = json.loads(Path(baseline_path).read_text())
    problems = []
    for method, expected in baseline["mean_dice"].items():
        if method not in measured:
            problems.append(f"{method}: no result (baseline {expected:.3f})")
        elif measured[method] < expected - baseline["tolerance"]:
            problems.append(
                f"{method}: mean Dice {measured[method]:.3f} < baseline {expected:.3f} - "
                f"{baseline['tolerance']}"
            )
    return problems
