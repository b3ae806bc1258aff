"""Convergence in the report: cells whose fine-tuning hit its maximum, and the share stopped
by the early-stopping rule (result rows' ``converged``, docs/FORMATS.md)."""

from __future__ import annotations

import pandas as pd

from bench.reports.aggregate import Experiment
from bench.reports.analysis import Analysis
from bench.reports.document import MISSING, Cell, Table

UNCONVERGED = "°"
UNCONVERGED_NOTE = (
    f"{UNCONVERGED} at least one fine-tuning unit of the cell hit its maximum of rounds before "
    "early stopping ended it (not converged; see the convergence table)."
)


def convergence_counts(analysis: Analysis, experiment: Experiment) -> pd.DataFrame:
    """Per (method, N): fine-tuned models and how many the early-stopping rule ended.

    A model is one (unit, client): under local fine-tuning each client stops on its
    own; under FedAvg the clients share the server's decision. Rows of runs made
    before convergence was recorded have no ``converged`` value and are left out.
    """
    rows = analysis.rows[analysis.rows["experiment"] == experiment.slug]
    if "converged" not in rows or rows["converged"].isna().all():
        return pd.DataFrame(columns=["variant", "n_labeled", "models", "by_rule"])
    rows = rows[rows["converged"].notna()]
    models = rows.drop_duplicates(["variant", "n_labeled", "seed", "fold", "client"])
    converged = models["converged"].map(lambda v: str(v).strip().lower() == "true")
    return (
        models.assign(by_rule=converged)
        .groupby(["variant", "n_labeled"], as_index=False)
        .agg(models=("by_rule", "size"), by_rule=("by_rule", "sum"))
    )


def unconverged_cells(analysis: Analysis, experiment: Experiment) -> frozenset:
    """(method, N) of the cells with at least one model that hit the maximum."""
    counts = convergence_counts(analysis, experiment)
    return frozenset(
        (r.variant, r.n_labeled) for r in counts.itertuples(index=False) if r.by_rule < r.models
    )


def mark_unconverged(table: Table, analysis: Analysis, experiment: Experiment, methods, n_values):
    """Adds the mark to a methods x N table's cells (rows in ``methods`` order)."""
    flags = unconverged_cells(analysis, experiment)
    for method, row in zip(methods, table.rows, strict=True):
        for n, cell in zip(n_values, row[1:], strict=True):
            if (method, n) in flags and cell.text != MISSING:
                cell.suffix += UNCONVERGED
    if flags:
        table.notes.append(UNCONVERGED_NOTE)
    return table


def convergence_table(analysis: Analysis, experiment: Experiment) -> Table | None:
    counts = convergence_counts(analysis, experiment)
    if counts.empty:
        return None
    n_values = analysis.n_values(experiment)
    lookup = {(r.variant, r.n_labeled): r for r in counts.itertuples(index=False)}
    rows = []
    for method in analysis.methods(experiment):
        cells = [Cell(analysis.name(method))]
        for n in n_values:
            r = lookup.get((method, n))
            cells.append(
                Cell(MISSING)
                if r is None
                else Cell(
                    f"{r.by_rule}/{r.models}", suffix=UNCONVERGED if r.by_rule < r.models else ""
                )
            )
        rows.append(cells)
    total, by_rule = int(counts["models"].sum()), int(counts["by_rule"].sum())
    return Table(
        slug=f"convergence-{experiment.slug}",
        title=f"{experiment.title}: fine-tuning stopped by the rule ({experiment.detail})",
        columns=["Method"] + [f"{experiment.n_symbol}={n}" for n in n_values],
        rows=rows,
        notes=[
            (
                "Fine-tuned models (one per unit and client) that early stopping ended, of all; "
                f"the others hit the maximum of rounds. Overall: {by_rule} of {total} "
                f"({by_rule / total:.0%}) stopped by the rule."
            ),
            f"{UNCONVERGED} at least one model of the cell did not converge.",
        ],
    )
