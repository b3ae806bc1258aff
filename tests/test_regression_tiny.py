"""`bench run --methods all --preset tiny` against the committed per-method Dice baseline.

The baseline holds the methods measured so far (see tests/baselines/tiny_dice.json);
every registered method must run, and each one in the baseline must keep its Dice.

Refresh the baseline after an intended change with
`python -m bench.cli run --methods all --preset tiny --out runs/tiny-baseline` and
`python -c "from bench.regression import *; from bench.results import ResultStore; save_baseline('tests/baselines/tiny_dice.json', method_means(ResultStore('runs/tiny-baseline').load()))"`.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.registry import available_methods
from bench.regression import method_means, regressions
from bench.results import ResultStore

BASELINE = Path(__file__).parent / "baselines" / "tiny_dice.json"


@pytest.mark.slow
def test_every_method_keeps_its_tiny_dice(tmp_path):
    run_dir = tmp_path / "tiny-all"
    subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--methods", "all", "--preset", "tiny", "--out", str(run_dir), "--no-progress"],
        check=True, capture_output=True, text=True,
    )
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
    assert len(found) == 2 and found[0].startswith("byol: no result") and found[1].startswith("fcl: mean Dice 0.440")
