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
from bench.reports.names import display_name
from bench.reports.stats import bootstrap_ci, paired_test

DECIMALS = 3
MIN_METHODS_FOR_MARKS = 3  # with two methods "best" is just "the other one is worse"


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
    method_hparams: dict[str, dict] = field(default_factory=dict)  # registry id -> hparams
    configs: dict[str, dict] = field(default_factory=dict)  # run folder -> its config.yaml

    def real_data(self, experiment: Experiment) -> bool:
        """Whether every row of the experiment was computed on data read from a dataset folder
        (``data_source``; rows written before that column existed count as synthetic)."""
        rows = self.rows[self.rows["experiment"] == experiment.slug]
        if rows.empty or "data_source" not in rows:
            return False
        source = rows["data_source"].astype("string").fillna("")
        return bool((~source.str.startswith("synthetic") & ~source.isin(["", "nan"])).all())

    def config(self, experiment: Experiment) -> dict | None:
        """The configuration of the (first) run folder holding the experiment's rows."""
        rows = self.rows[self.rows["experiment"] == experiment.slug]
        runs = rows["run"].unique() if "run" in rows else []
        return next((self.configs[r] for r in runs if r in self.configs), None)

    def name(self, variant: str) -> str:
        """The display name of a variant (GCL with its strategies)."""
        return display_name(variant, self.method_hparams.get("gcl"))

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


def _add_marks(summary: pd.DataFrame, pairs: pd.DataFrame, column_keys: list[str]) -> pd.DataFrame:
    """Bold and underline per column: nothing with fewer than 3 methods; otherwise the best mean
    alone in bold when a paired test against the second is significant (and the second
    underlined), else every cell not significantly below the best shares the bold."""
    summary["bold"], summary["underline"] = False, False
    summary["p_best_vs_second"] = float("nan")
    indexed = pairs.set_index([*column_keys, "variant", "client", "fold"])["dice"].sort_index()
    for key, column in summary.dropna(subset=["mean"]).groupby(column_keys):
        if len(column) < MIN_METHODS_FOR_MARKS:
            continue
        ranked = column.sort_values("mean", ascending=False, kind="stable")
        scores = indexed.loc[key if isinstance(key, tuple) else (key,)]
        best, second = ranked["variant"].iloc[0], ranked["variant"].iloc[1]
        versus_second = paired_test(scores.loc[best], scores.loc[second])
        summary.loc[ranked.index[0], "p_best_vs_second"] = versus_second.p
        if versus_second.significant:
            summary.loc[ranked.index[0], "bold"] = True
            summary.loc[ranked.index[1], "underline"] = True
            continue
        for index, variant in zip(ranked.index, ranked["variant"], strict=False):
            tied = (
                variant == best
                or not paired_test(scores.loc[variant], scores.loc[best]).significant
            )
            summary.loc[index, "bold"] = tied
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


def analyse(
    rows: pd.DataFrame,
    planned: list[Planned] = (),
    method_hparams: dict | None = None,
    configs: dict | None = None,
) -> Analysis:
    rows = label_rows(rows)
    pairs = pair_scores(rows)
    clients = client_scores(pairs)
    keys = ["experiment", "variant", "n_labeled"]
    summary = summarise(clients, pairs)
    summary = _add_tests(
        _add_partial(_add_rank(_add_ci(summary, clients, keys), ["experiment", "n_labeled"])), pairs
    )
    summary = _add_marks(summary, pairs, ["experiment", "n_labeled"])
    class_pairs = pair_scores(rows, by_class=True)
    class_clients = client_scores(class_pairs)
    class_keys = [*keys, "class_name"]
    class_summary = summarise(class_clients, class_pairs)
    class_columns = ["experiment", "n_labeled", "class_name"]
    class_summary = _add_rank(_add_ci(class_summary, class_clients, class_keys), class_columns)
    class_summary = _add_marks(class_summary, class_pairs, class_columns)
    return Analysis(
        rows,
        experiments(rows, planned),
        pairs,
        clients,
        summary,
        class_clients,
        class_summary,
        list(planned),
        dict(method_hparams or {}),
        dict(configs or {}),
    )
