"""Paired tests (Wilcoxon, t-test fallback, n/a) and the seeded bootstrap CI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.reports.stats import bootstrap_ci, paired_test


def series(values, start=0):
    index = pd.MultiIndex.from_tuples(
        [(c, f) for c in range(start, start + 10) for f in range(5)][: len(values)],
        names=["client", "fold"],
    )
    return pd.Series(values, index=index, dtype=float)


def test_wilcoxon_with_enough_pairs():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.7, 0.05, 12), rng.normal(0.6, 0.05, 12)
    result = paired_test(series(a), series(b))
    assert result.test == "wilcoxon" and result.n_pairs == 12
    assert result.p == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_t_test_below_six_pairs_and_na_below_three():
    a, b = np.array([0.7, 0.72, 0.69, 0.75]), np.array([0.6, 0.65, 0.61, 0.62])
    result = paired_test(series(a), series(b))
    assert result.test == "t-test" and result.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    short = paired_test(series(a[:2]), series(b[:2]))
    assert short.test == "n/a" and math.isnan(short.p) and not short.significant


def test_pairs_only_over_common_client_fold():
    a = series([0.7, 0.8, 0.75, 0.9, 0.85, 0.8, 0.77])
    b = series([0.6, 0.7, 0.65, 0.8, 0.75, 0.7])  # one (client, fold) fewer
    result = paired_test(a, b)
    assert result.n_pairs == 6
    assert result.p == pytest.approx(stats.wilcoxon(a.iloc[:6], b).pvalue)


def test_identical_and_constant_differences():
    a = series([0.5, 0.6, 0.7, 0.8])
    assert paired_test(a, a).test == "identical" and paired_test(a, a).p == 1.0
    assert paired_test(a, a - 0.1).test == "n/a"


def test_bootstrap_ci_seeded_and_covers_mean():
    values = [0.61, 0.65, 0.7, 0.58, 0.66, 0.72]
    low, high = bootstrap_ci(values)
    assert (low, high) == bootstrap_ci(values)
    assert low < np.mean(values) < high
    assert all(math.isnan(x) for x in bootstrap_ci([0.5]))


def test_wilcoxon_with_ties_and_zero_differences():
    a = series([0.5, 0.6, 0.7, 0.8, 0.9, 0.6, 0.7])
    b = series([0.5, 0.6, 0.6, 0.7, 0.8, 0.5, 0.6])  # two zero differences, tied non-zero ones
    result = paired_test(a, b)
    assert result.test == "wilcoxon" and 0 < result.p < 1
