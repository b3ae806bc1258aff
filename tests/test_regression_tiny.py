"""Every method on the tiny preset against the committed per-method Dice baseline.

CI runs `REGRESSION_ARGS`: all methods on the tiny preset, federated fine-tuning
with N = 4 only (the full tiny run takes about four times as long; the other
fine-tuning units are covered by test_run_end_to_end). Every registered method
must produce rows and each one in the baseline must keep its mean Dice.

The regression pins fixed budgets (`FIXED_BUDGETS`: 5 pretraining steps per
round, 6 fine-tuning rounds of 20 steps, the best-validation round kept, no
early stop) so that the baseline measures the methods, not the tiny preset's
epoch budgets and early stopping (which test_convergence and
test_run_end_to_end cover); these are the budgets the baseline was measured with.

Refresh the baseline after an intended change with

    python -m bench.cli run --methods all --preset tiny --set finetune.modes=[federated] \\
        --set split.n_values=[4] --set pretrain.local_steps=5 --set finetune.local_steps=20 \\
        --set finetune.rounds=6 --set finetune.early_stopping.patience=6 \\
        --set finetune.early_stopping.min_delta=0 --out runs/tiny-regression
    python -c "from bench.regression import *; from bench.results import ResultStore; \\
        save_baseline('tests/baselines/tiny_dice.json', \\
        method_means(ResultStore('runs/tiny-regression').load()))"
"""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.registry import available_methods
from bench.regression import method_means, regressions
from bench.results import ResultStore

BASELINE = Path(__file__).parent / "baselines" / "tiny_dice.json"
FIXED_BUDGETS = [
    "pretrain.local_steps=5",
    "finetune.local_steps=20",
    "finetune.rounds=6",
    "finetune.early_stopping.patience=6",
    "finetune.early_stopping.min_delta=0",
]
REGRESSION_ARGS = [
    "run",
    "--methods",
    "all",
    "--preset",
    "tiny",
    "--set",
    "finetune.modes=[federated]",
    "--set",
    "split.n_values=[4]",
    *(arg for option in FIXED_BUDGETS for arg in ("--set", option)),
]


@pytest.mark.slow
def test_every_method_keeps_its_tiny_dice(tmp_path):
    run_dir = tmp_path / "tiny-all"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            *REGRESSION_ARGS,
            "--out",
            str(run_dir),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = ResultStore(run_dir).load()
    assert set(rows["method"]) == set(available_methods())
    assert rows["split_hash"].nunique() == 1
    measured = method_means(rows)
    print("tiny mean Dice per method:", measured)
    assert regressions(measured, BASELINE) == []


def test_a_drop_beyond_the_tolerance_is_caught(tmp_path):
    baseline = tmp_path / "b.json"
    baseline.write_text('{"tolerance": 0.05, "mean_dice": {"fcl": 0.5, "byol": 0.5}}')
    assert regressions({"fcl": 0.46, "byol": 0.5}, baseline) == []
    found = sorted(regressions({"fcl": 0.44}, baseline))
    assert (
        len(found) == 2
        and found[0].startswith("byol: no result")
        and found[1].startswith("fcl: mean Dice 0.440")
    )
