"""The report's tables, as ``document.Table`` objects (formats are the renderers' job)."""

from __future__ import annotations

import math

import pandas as pd

from bench.reports.aggregate import BASELINE, Experiment
from bench.reports.analysis import DECIMALS, MIN_METHODS_FOR_MARKS, Analysis
from bench.reports.convergence import mark_unconverged
from bench.reports.document import MISSING, Cell, Table
from bench.reports.names import registry_id, registry_note
from bench.reports.published import (
    CHAITANYA,
    FCL_TITLES,
    WU,
    WU_PROTOCOL,
    chaitanya_numbers,
    fcl_table,
    published_mean,
)
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
    "volumes (patients × frames) and foreground classes."
)
MARKS_NOTE = (
    "Bold: the best mean of the column, alone when a paired test against the second is "
    f"significant (p < {ALPHA}; the second is then underlined); otherwise every cell not "
    "significantly below the "
    f"best shares the bold. No marks in columns with fewer than {MIN_METHODS_FOR_MARKS} methods."
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
        mean_std(row.mean, row.std),
        bold=bool(row.bold),
        underline=bool(row.underline),
        suffix=suffix,
    )


def _grid(
    analysis: Analysis, summary: pd.DataFrame, methods: list[str], n_values: list[int], marks: bool
) -> list[list[Cell]]:
    lookup = {(r.variant, r.n_labeled): r for r in summary.itertuples(index=False)}
    return [
        [Cell(analysis.name(method))]
        + [
            _summary_cell(lookup[(method, n)], marks) if (method, n) in lookup else Cell(MISSING)
            for n in n_values
        ]
        for method in methods
    ]


def _untested(tests: pd.Series) -> bool:
    """Every test made in the column was impossible (too few pairs)."""
    made = tests[tests.astype(str) != ""]
    return bool(len(made)) and bool((made == "n/a").all())


def untested_notes(summary: pd.DataFrame, methods: list[str]) -> list[str]:
    """Why a test column (or mark) stays empty: random init not run, or too few pairs."""
    notes = []
    few = f"fewer than {MIN_TTEST} (client, fold) pairs per cell"
    if not any(registry_id(m) == BASELINE for m in methods):
        notes.append(
            f"No test against random init ({VS_RANDOM}, p vs random): random init was not run in "
            "this experiment (add `random` to --methods)."
        )
    elif _untested(summary["test_vs_random"]):
        notes.append(f"No test against random init ({VS_RANDOM}, p vs random): {few}.")
    if _untested(summary["test_vs_best"]):
        notes.append(f"No test against the best method ({VS_BEST}, p vs best): {few}.")
    return notes


def _notes(analysis: Analysis, summary: pd.DataFrame, methods: list[str], marks: bool) -> list[str]:
    notes = [CELL_NOTE, MARKS_NOTE] + ([LEGEND] if marks else []) + [MISSING_NOTE]
    if marks:
        notes += untested_notes(summary, methods)
    if marks and summary["partial"].any():
        notes.append(PARTIAL_NOTE)
    if (summary["n_clients"] == 1).any():
        notes.append(ONE_CLIENT_NOTE)
    notes.append(registry_note(methods))
    return notes


TRANSFER_M = (1, 2, 4, 8)  # the columns of Wu et al. 2021's transfer table


def measured_table(analysis: Analysis, experiment: Experiment) -> Table:
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    n_values = analysis.n_values(experiment)
    if experiment.transfer:
        n_values = sorted(set(n_values) | set(TRANSFER_M))
    methods = analysis.methods(experiment)
    table = Table(
        slug=f"dice-{experiment.slug}",
        title=f"{experiment.title}: mean Dice, measured ({experiment.detail})",
        columns=["Method"] + [f"{experiment.n_symbol}={n}" for n in n_values],
        rows=_grid(analysis, summary, methods, n_values, marks=True),
        notes=_notes(analysis, summary, methods, marks=True),
    )
    return mark_unconverged(table, analysis, experiment, methods, n_values)


def class_table(analysis: Analysis, experiment: Experiment, class_name: str) -> Table:
    frame = analysis.class_summary
    summary = frame[(frame["experiment"] == experiment.slug) & (frame["class_name"] == class_name)]
    n_values = analysis.n_values(experiment)
    return Table(
        slug=f"dice-{experiment.slug}-{class_name.lower()}",
        title=f"{experiment.title}: {class_name} Dice, measured ({experiment.detail})",
        columns=["Method"] + [f"{experiment.n_symbol}={n}" for n in n_values],
        rows=_grid(analysis, summary, analysis.methods(experiment), n_values, marks=False),
        notes=[
            CELL_NOTE.replace("and foreground classes", f"for class {class_name}"),
            MARKS_NOTE,
            MISSING_NOTE,
        ]
        + ([ONE_CLIENT_NOTE] if (summary["n_clients"] == 1).any() else [])
        + [registry_note(analysis.methods(experiment))],
    )


def detail_table(analysis: Analysis, experiment: Experiment) -> Table:
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    order = {m: i for i, m in enumerate(analysis.methods(experiment))}
    summary = summary.sort_values(
        ["n_labeled", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s
    )
    rows = [
        [
            Cell(analysis.name(r.variant)),
            Cell(str(r.n_labeled)),
            Cell(num(r.mean)),
            Cell(num(r.std)),
            Cell(MISSING if math.isnan(r.ci_low) else f"[{num(r.ci_low)}, {num(r.ci_high)}]"),
            Cell(str(r.n_clients)),
            Cell(str(r.n_pairs)),
            Cell(p_text(r.p_vs_random, r.test_vs_random, r.pairs_vs_random)),
            Cell(p_text(r.p_vs_best, r.test_vs_best, r.pairs_vs_best)),
            Cell(analysis.name(r.best)),
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
            *untested_notes(summary, analysis.methods(experiment)),
            registry_note(analysis.methods(experiment)),
        ],
    )


def comparison_table(
    analysis: Analysis, experiment: Experiment, name: str, protocol: str, same_protocol: bool
) -> Table:
    """Measured beside published (Wu et al. 2021) with the difference, never mixed: a row for
    every measured method and every published one, columns N (or M) = 1, 2, 4, 8."""
    published = fcl_table(name)
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    measured = {(r.variant, r.n_labeled): r for r in summary.itertuples(index=False)}
    n_values = sorted(published["n"].unique())
    sym = experiment.n_symbol
    known = published.dropna(subset=["method"])
    printed = dict(zip(known["method"], known["printed"], strict=False))
    methods = analysis.methods(experiment)
    methods += [m for m in published["method"].dropna().unique() if m not in methods]
    rows = []
    for method in methods:
        label = analysis.name(method)
        if printed.get(method) and printed[method] != label:
            label += f" (paper: {printed[method]})"
        cells = [Cell(label)]
        for n in n_values:
            pub = published_mean(name, registry_id(method), n) if " [" not in method else None
            mine = measured.get((method, n))
            cells += [
                Cell(mean_std(mine.mean, mine.std) if mine else MISSING),
                Cell(mean_std(*pub) if pub else MISSING),
                Cell(num(mine.mean - pub[0], signed=True) if mine and pub else MISSING),
            ]
        rows.append(cells)
    for paper_name in published.loc[published["method"].isna(), "printed"].unique():
        group = published[published["printed"] == paper_name].set_index("n")
        cells = [Cell(f"{paper_name} (paper only; no counterpart here)")]
        for n in n_values:
            pub = (group.loc[n, "mean"], group.loc[n, "std"]) if n in group.index else None
            cells += [Cell(MISSING), Cell(mean_std(*pub) if pub else MISSING), Cell(MISSING)]
        rows.append(cells)
    columns = ["Method"]
    for n in n_values:
        columns += [f"{sym}={n} measured", f"{sym}={n} {WU}", f"{sym}={n} Δ"]
    verdict = (
        "Same protocol: like-for-like."
        if same_protocol
        else "Not the same protocol (only preset 'paper' follows it): a reference, not a "
        "like-for-like comparison."
    )
    return Table(
        slug=f"compare-{experiment.slug}",
        title=f"{experiment.title}: measured beside {WU}, {FCL_TITLES[name]}",
        columns=columns,
        rows=rows,
        groups=[("", 1)] + [(f"{sym}={n}", 3) for n in n_values],
        group_columns=["Method"] + ["measured", WU, "Δ"] * len(n_values),
        notes=[
            (
                f"Measured: this benchmark on data read from a dataset folder ({protocol}; split "
                f"{experiment.split_hash[:8]})."
            ),
            (
                f"Published: {WU_PROTOCOL}; {FCL_TITLES[name]}, copied from the paper, not "
                "measured here. Δ = measured − published (mean Dice)."
            ),
            verdict,
            MISSING_NOTE,
            registry_note(methods),
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
                "of this report has results on real data of this dataset and mode, so they stand "
                "alone."
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


def accuracy_cost_table(analysis: Analysis, experiment: Experiment, frame: pd.DataFrame) -> Table:
    from bench.reports.cost import COSTS, DICE_N

    def big(value: float, digits: int = 3) -> str:
        return MISSING if pd.isna(value) else f"{value:.{digits}g}"

    rows = []
    for r in frame.itertuples(index=False):
        cells = [
            Cell(analysis.name(r.method)),
            Cell(str(r.steps)),
            Cell(big(r.flops_per_step)),
            Cell(big(r.tflops)),
            Cell(big(r.device_s)),
            Cell(big(r.mb_sent) + (" (est.)" if r.bytes_estimated else "")),
        ]
        for n in DICE_N:
            dice = getattr(r, f"dice_n{n}")
            on = [c for c in COSTS if getattr(r, f"front_n{n}_{c}")]
            cells.append(Cell(num(dice), bold=bool(on)))
            cells.append(
                Cell(
                    ", ".join(
                        {"tflops": "FLOPs", "device_s": "time", "mb_sent": "bytes"}[c] for c in on
                    )
                    or "—"
                )
            )
        rows.append(cells)
    columns = [
        "Method",
        "steps per client",
        "FLOPs per step",
        "TFLOP per client",
        "device-s per client",
        "MB sent per client",
    ]
    for n in DICE_N:
        columns += [f"Dice N={n}", f"Pareto N={n}"]
    return Table(
        slug=f"cost-{experiment.slug}",
        title=f"{experiment.title}: accuracy against pretraining cost per client",
        columns=columns,
        rows=rows,
        notes=[
            (
                "Steps: rounds recorded × local steps; FLOPs per step: from the run's profile "
                "(bench profile --run), scaled to the run's batch; TFLOP = FLOPs per step × steps; "
                "device-s: measured pretraining time / clients (the simulation trains them one "
                "after another on one device); MB sent: weights and payload each client uploaded, "
                "summed over the rounds (est.: profile bytes per round × rounds). Random init "
                "does not pretrain."
            ),
            (
                "Dice: mean over clients (— where N was not run). Pareto: the costs on whose front "
                "the method lies (no other method at least as accurate for at most that cost); "
                "bold: on at least one front."
            ),
            registry_note(list(frame["method"])),
        ],
    )
