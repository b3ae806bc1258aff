"""Paired significance tests over (client, fold) and bootstrap confidence intervals over clients.

Wilcoxon's signed-rank test cannot reach p < 0.05 (two-sided) with fewer than
6 pairs (its smallest p-value is 2 / 2**n), so below that the paired t-test is
used, and below 3 pairs no test is made (n/a).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
MIN_WILCOXON = 6
MIN_TTEST = 3
N_BOOT = 2000
BOOT_SEED = 0


@dataclass(frozen=True)
class TestResult:
    p: float  # NaN when not tested
    test: str  # "wilcoxon", "t-test", "identical" or "n/a"
    n_pairs: int

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < ALPHA


def paired_test(a: pd.Series, b: pd.Series) -> TestResult:
    """Two-sided test of a against b, paired over their common index (client, fold)."""
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    n = len(joined)
    diff = (joined["a"] - joined["b"]).to_numpy()
    if n < MIN_TTEST:
        return TestResult(math.nan, "n/a", n)
    if np.allclose(diff, 0.0, atol=1e-12):
        return TestResult(1.0, "identical", n)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # ties and zeros: scipy's normal approximation
        try:
            if n >= MIN_WILCOXON:
                return TestResult(
                    float(stats.wilcoxon(joined["a"], joined["b"]).pvalue), "wilcoxon", n
                )
            if np.allclose(diff, diff[0], atol=1e-12):
                return TestResult(math.nan, "n/a", n)  # constant non-zero differences: t undefined
            return TestResult(float(stats.ttest_rel(joined["a"], joined["b"]).pvalue), "t-test", n)
        except ValueError:
            return TestResult(math.nan, "n/a", n)


def bootstrap_ci(
    values, level: float = 0.95, n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over clients (resampled with replacement)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
