"""The report's tables, as ``document.Table`` objects (formats are the renderers' job)."""

from __future__ import annotations

import math

import pandas as pd

from bench.reports.aggregate import Experiment
from bench.reports.analysis import DECIMALS, Analysis
from bench.reports.document import MISSING, Cell, Table
from bench.reports.published import CHAITANYA, FCL_TITLES, WU, chaitanya_numbers, fcl_table
from bench.reports.stats import ALPHA, MIN_TTEST, MIN_WILCOXON

VS_RANDOM, VS_BEST, PARTIAL = "†", "‡", "*"
LEGEND = (
    f"{VS_RANDOM} differs from random init, {VS_BEST} differs from the best method of the column "
    f"(two-sided p < {ALPHA}; paired over (client, fold): Wilcoxon signed-rank test with at least "
    f"{MIN_WILCOXON} pairs, paired t-test with {MIN_TTEST} to {MIN_WILCOXON - 1}, no test below)."
)
CELL_NOTE = (
    "Mean Dice ± std across clients; each client's Dice is its mean over folds of the mean over "
    "its test "
    "volumes (patients × frames) and foreground classes. Bold: best of the column, underlined: "
    "second."
)
MISSING_NOTE = f"{MISSING}: no result (not run, or not finished); nothing is filled in."
PARTIAL_NOTE = (
    f"{PARTIAL} computed from fewer (client, fold) pairs than the other cells (partial run)."
)
ONE_CLIENT_NOTE = "The std is left out where only one client has a result."


def num(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:+.{DECIMALS}f}" if signed else f"{value:.{DECIMALS}f}"


def mean_std(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return MISSING
    return num(mean) if std is None or math.isnan(std) else f"{num(mean)} ± {num(std)}"


def p_text(p: float, test: str, pairs: int) -> str:
    if not test:
        return ""
    return f"n/a ({pairs} pairs)" if math.isnan(p) else f"{p:.3g} ({test}, {pairs} pairs)"


def _summary_cell(row, marks: bool) -> Cell:
    suffix = ""
    if marks:
        suffix += VS_RANDOM if row.p_vs_random < ALPHA else ""
        suffix += VS_BEST if row.p_vs_best < ALPHA else ""
        suffix += PARTIAL if row.partial else ""
    return Cell(
        mean_std(row.mean, row.std), bold=row.rank == 1, underline=row.rank == 2, suffix=suffix
    )


def _grid(
    summary: pd.DataFrame, methods: list[str], n_values: list[int], marks: bool
) -> list[list[Cell]]:
    lookup = {(r.variant, r.n_labeled): r for r in summary.itertuples(index=False)}
    return [
        [Cell(method)]
        + [
            _summary_cell(lookup[(method, n)], marks) if (method, n) in lookup else Cell(MISSING)
            for n in n_values
        ]
        for method in methods
    ]


def _notes(summary: pd.DataFrame, marks: bool) -> list[str]:
    notes = [CELL_NOTE] + ([LEGEND] if marks else []) + [MISSING_NOTE]
    if marks and summary["partial"].any():
        notes.append(PARTIAL_NOTE)
    if (summary["n_clients"] == 1).any():
        notes.append(ONE_CLIENT_NOTE)
    return notes


def measured_table(analysis: Analysis, experiment: Experiment) -> Table:
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    n_values = analysis.n_values(experiment)
    return Table(
        slug=f"dice-{experiment.slug}",
        title=f"{experiment.title}: mean Dice, measured ({experiment.detail})",
        columns=["Method"] + [f"{experiment.n_symbol}={n}" for n in n_values],
        rows=_grid(summary, analysis.methods(experiment), n_values, marks=True),
        notes=_notes(summary, marks=True),
    )


def class_table(analysis: Analysis, experiment: Experiment, class_name: str) -> Table:
    frame = analysis.class_summary
    summary = frame[(frame["experiment"] == experiment.slug) & (frame["class_name"] == class_name)]
    n_values = analysis.n_values(experiment)
    return Table(
        slug=f"dice-{experiment.slug}-{class_name.lower()}",
        title=f"{experiment.title}: {class_name} Dice, measured ({experiment.detail})",
        columns=["Method"] + [f"{experiment.n_symbol}={n}" for n in n_values],
        rows=_grid(summary, analysis.methods(experiment), n_values, marks=False),
        notes=[CELL_NOTE.replace("and foreground classes", f"for class {class_name}"), MISSING_NOTE]
        + ([ONE_CLIENT_NOTE] if (summary["n_clients"] == 1).any() else []),
    )


def detail_table(analysis: Analysis, experiment: Experiment) -> Table:
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    order = {m: i for i, m in enumerate(analysis.methods(experiment))}
    summary = summary.sort_values(
        ["n_labeled", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s
    )
    rows = [
        [
            Cell(r.variant),
            Cell(str(r.n_labeled)),
            Cell(num(r.mean)),
            Cell(num(r.std)),
            Cell(MISSING if math.isnan(r.ci_low) else f"[{num(r.ci_low)}, {num(r.ci_high)}]"),
            Cell(str(r.n_clients)),
            Cell(str(r.n_pairs)),
            Cell(p_text(r.p_vs_random, r.test_vs_random, r.pairs_vs_random)),
            Cell(p_text(r.p_vs_best, r.test_vs_best, r.pairs_vs_best)),
            Cell(r.best),
        ]
        for r in summary.itertuples(index=False)
    ]
    return Table(
        slug=f"stats-{experiment.slug}",
        title=f"{experiment.title}: confidence intervals and paired tests ({experiment.detail})",
        columns=[
            "Method",
            experiment.n_symbol,
            "mean",
            "std",
            "95% CI",
            "clients",
            "pairs",
            "p vs random",
            "p vs best",
            "best",
        ],
        rows=rows,
        notes=[
            (
                "95% CI: percentile bootstrap of the mean over clients (2000 resamples, seed 0; "
                f"{MISSING} with one client)."
            ),
            (
                "p-values: two-sided, paired over (client, fold), the test in brackets (identical: "
                "all "
                "differences zero; n/a: too few pairs). Best: the method with the highest mean."
            ),
        ],
    )


def comparison_table(analysis: Analysis, experiment: Experiment, name: str) -> Table:
    """Measured beside published (Wu et al. 2021), with the difference; never mixed."""
    published = fcl_table(name)
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    measured = {(r.variant, r.n_labeled): r for r in summary.itertuples(index=False)}
    n_values = sorted(published["n"].unique())
    sym = experiment.n_symbol
    rows = []
    for printed, group in published.groupby("printed", sort=False):
        method = group["method"].iloc[0] if isinstance(group["method"].iloc[0], str) else None
        label = f"{printed} ({method})" if method else f"{printed} (no counterpart)"
        cells = [Cell(label)]
        for n in n_values:
            pub = group[group["n"] == n]
            pub_mean = pub["mean"].iloc[0] if len(pub) else math.nan
            mine = measured.get((method, n))
            cells += [
                Cell(mean_std(mine.mean, mine.std) if mine else MISSING),
                Cell(mean_std(pub_mean, pub["std"].iloc[0] if len(pub) else math.nan)),
                Cell(num(mine.mean - pub_mean, signed=True) if mine else MISSING),
            ]
        rows.append(cells)
    columns = ["Method"]
    for n in n_values:
        columns += [f"{sym}={n} measured", f"{sym}={n} {WU}", f"{sym}={n} Δ"]
    return Table(
        slug=f"compare-{experiment.slug}",
        title=f"{experiment.title}: measured beside {WU}, {FCL_TITLES[name]}",
        columns=columns,
        rows=rows,
        groups=[("", 1)] + [(f"{sym}={n}", 3) for n in n_values],
        group_columns=["Method"] + ["measured", WU, "Δ"] * len(n_values),
        notes=[
            (
                f"Measured: this benchmark ({experiment.detail}). Published: copied from Wu et al. "
                "2021, "
                f"{FCL_TITLES[name]}; not measured here. Δ = measured − published (mean Dice)."
            ),
            MISSING_NOTE,
        ],
    )


def published_table(name: str) -> Table:
    published = fcl_table(name)
    n_values = sorted(published["n"].unique())
    sym = "M" if name.startswith("transfer") else "N"
    rows = []
    for printed, group in published.groupby("printed", sort=False):
        method = group["method"].iloc[0] if isinstance(group["method"].iloc[0], str) else None
        by_n = {r.n: mean_std(r.mean, r.std) for r in group.itertuples(index=False)}
        rows.append(
            [Cell(f"{printed} ({method or 'no counterpart'})")]
            + [Cell(by_n.get(n, MISSING)) for n in n_values]
        )
    return Table(
        slug=f"published-wu2021-{name.replace('_', '-')}",
        title=f"{WU}: {FCL_TITLES[name]} — not measured here",
        columns=["Method (registry name)"] + [f"{sym}={n}" for n in n_values],
        rows=rows,
        notes=[
            (
                "Mean Dice ± std across clients, as printed in the paper (Wu et al. 2021). No run "
                "of this "
                "report follows the matching protocol (preset 'paper'), so they stand alone."
            )
        ],
    )


def chaitanya_table() -> Table:
    frame = chaitanya_numbers()
    n_values = sorted(frame["labeled_volumes"].unique())
    pivot = frame.pivot(
        index="encoder_init/decoder_init", columns="labeled_volumes", values="dice_mean"
    )
    order = list(dict.fromkeys(frame["encoder_init/decoder_init"]))
    rows = [[Cell(init)] + [Cell(num(pivot.loc[init, n])) for n in n_values] for init in order]
    return Table(
        slug="published-chaitanya2020-acdc",
        title=f"{CHAITANYA}: ACDC, mean Dice over RV, Myo, LV — not measured here",
        columns=["Encoder / decoder init"] + [f"N={n}" for n in n_values],
        rows=rows,
        notes=[
            (
                "Fixed 20-patient test set and other preprocessing: a different protocol from "
                "every preset, "
                "so shown alone, never beside measured numbers."
            )
        ],
    )


def frame_table(
    frame: pd.DataFrame, slug: str, title: str, notes: list[str] | None = None
) -> Table:
    """Any data frame as a table (profiles, timings), numbers in a compact form."""

    def fmt(value) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return MISSING
            if value.is_integer() and abs(value) < 1e7:
                return str(int(value))
            return (
                f"{value:.3e}"
                if value and (abs(value) >= 1e6 or abs(value) < 1e-3)
                else f"{value:.4g}"
            )
        return str(value)

    rows = [[Cell(fmt(v)) for v in record] for record in frame.itertuples(index=False)]
    return Table(
        slug=slug,
        title=title,
        columns=[str(c) for c in frame.columns],
        rows=rows,
        notes=notes or [],
    )
