"""Everything the tables show, computed once: summaries, CIs, ranks and paired tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bench.reports.aggregate import (
    BASELINE,
    Experiment,
    Planned,
    client_scores,
    experiments,
    label_rows,
    method_order,
    pair_scores,
    summarise,
)
from bench.reports.stats import bootstrap_ci, paired_test

DECIMALS = 3


@dataclass
class Analysis:
    rows: pd.DataFrame  # labelled rows
    experiments: list[Experiment]
    pairs: pd.DataFrame  # (experiment, variant, n_labeled, client, fold) -> dice
    clients: pd.DataFrame
    summary: (
        pd.DataFrame
    )  # (experiment, variant, n_labeled) -> mean, std, n_clients, n_pairs, ci, rank, tests
    class_clients: pd.DataFrame
    class_summary: (
        pd.DataFrame
    )  # (experiment, variant, n_labeled, class_name) -> mean, std, ..., rank
    planned: list[Planned] = field(default_factory=list)

    def _siblings(self, experiment: Experiment) -> pd.DataFrame:
        slugs = [e.slug for e in self.experiments if e.group == experiment.group]
        return self.summary[self.summary["experiment"].isin(slugs)]

    def methods(self, experiment: Experiment) -> list[str]:
        """Rows of the experiment's tables: methods with results in any mode of the same run
        configuration, and methods the run was asked for (run.yaml), finished or not."""
        present = set(self._siblings(experiment)["variant"])
        names = {v.split(" [")[0] for v in present}
        asked = {
            m
            for p in self.planned
            if p.group == experiment.group
            for m in p.methods
            if m not in names
        }
        return method_order(present | asked)

    def n_values(self, experiment: Experiment) -> list[int]:
        """Columns: N with results in any mode of the same configuration, and the configured N."""
        asked = {int(n) for p in self.planned if p.group == experiment.group for n in p.n_values}
        return sorted({int(n) for n in self._siblings(experiment)["n_labeled"]} | asked)

    def has_results(self, experiment: Experiment) -> bool:
        return bool((self.summary["experiment"] == experiment.slug).any())

    def classes(self, experiment: Experiment) -> list[str]:
        rows = self.rows[self.rows["experiment"] == experiment.slug]
        return list(dict.fromkeys(rows["class_name"]))


def _add_ci(summary: pd.DataFrame, clients: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    cis = {key: bootstrap_ci(group["dice"]) for key, group in clients.groupby(keys)}
    summary["ci_low"] = [
        cis.get(tuple(key), (float("nan"),) * 2)[0] for key in summary[keys].itertuples(index=False)
    ]
    summary["ci_high"] = [
        cis.get(tuple(key), (float("nan"),) * 2)[1] for key in summary[keys].itertuples(index=False)
    ]
    return summary


def _add_rank(summary: pd.DataFrame, column_keys: list[str]) -> pd.DataFrame:
    """Dense rank of the displayed (rounded) mean within each column: 1 best, 2 second."""
    rounded = summary["mean"].round(DECIMALS)
    summary["rank"] = rounded.groupby([summary[k] for k in column_keys]).rank(
        method="dense", ascending=False
    )
    return summary


def _add_partial(summary: pd.DataFrame) -> pd.DataFrame:
    expected = summary.groupby("experiment")["n_pairs"].transform("max")
    summary["partial"] = summary["n_pairs"] < expected
    return summary


def _baseline(variants: list[str]) -> str | None:
    if BASELINE in variants:
        return BASELINE
    candidates = [v for v in variants if v.startswith(BASELINE + " ")]
    return candidates[0] if candidates else None


def _add_tests(summary: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    columns = {
        c: []
        for c in (
            "best",
            "p_vs_random",
            "test_vs_random",
            "pairs_vs_random",
            "p_vs_best",
            "test_vs_best",
            "pairs_vs_best",
        )
    }
    indexed = pairs.set_index(["experiment", "n_labeled", "variant", "client", "fold"])[
        "dice"
    ].sort_index()
    best_of = (
        summary.sort_values("mean", ascending=False, kind="stable")
        .groupby(["experiment", "n_labeled"])["variant"]
        .first()
    )
    for row in summary.itertuples(index=False):
        column = indexed.loc[(row.experiment, row.n_labeled)]
        variants = method_order(column.index.get_level_values("variant"))
        best, baseline = best_of[(row.experiment, row.n_labeled)], _baseline(variants)
        own = column.loc[row.variant]
        columns["best"].append(best)
        for name, other in (("random", baseline), ("best", best)):
            result = (
                paired_test(own, column.loc[other]) if other not in (None, row.variant) else None
            )
            columns[f"p_vs_{name}"].append(result.p if result else float("nan"))
            columns[f"test_vs_{name}"].append(result.test if result else "")
            columns[f"pairs_vs_{name}"].append(result.n_pairs if result else 0)
    for name, values in columns.items():
        summary[name] = values
    return summary


def analyse(rows: pd.DataFrame, planned: list[Planned] = ()) -> Analysis:
    rows = label_rows(rows)
    pairs = pair_scores(rows)
    clients = client_scores(pairs)
    keys = ["experiment", "variant", "n_labeled"]
    summary = summarise(clients, pairs)
    summary = _add_tests(
        _add_partial(_add_rank(_add_ci(summary, clients, keys), ["experiment", "n_labeled"])), pairs
    )
    class_pairs = pair_scores(rows, by_class=True)
    class_clients = client_scores(class_pairs)
    class_keys = [*keys, "class_name"]
    class_summary = summarise(class_clients, class_pairs)
    class_summary = _add_rank(
        _add_ci(class_summary, class_clients, class_keys), ["experiment", "n_labeled", "class_name"]
    )
    return Analysis(
        rows,
        experiments(rows, planned),
        pairs,
        clients,
        summary,
        class_clients,
        class_summary,
        list(planned),
    )
