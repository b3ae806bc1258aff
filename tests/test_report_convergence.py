"""The report marks cells whose fine-tuning did not converge; the share stopped by the rule."""

import importlib.util
from pathlib import Path

import pandas as pd

from bench.reports.analysis import analyse
from bench.reports.convergence import UNCONVERGED, convergence_table
from bench.reports.runs import normalise_rows
from bench.reports.tables import measured_table

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)


def analysis_with(converged):
    rows = make_runs.make_rows(methods=("random", "fcl"), modes=("local",), n_values=(1, 4))
    rows["converged"] = converged(rows)
    return analyse(normalise_rows(rows))


def cell(table, method, n, analysis):
    column = table.columns.index(f"N={n}")
    row = next(r for r in table.rows if r[0].text == analysis.name(method))
    return row[column]


def test_a_cell_with_a_unit_that_hit_its_maximum_is_marked():
    # FCL at N = 4: client 0 of every fold hit the maximum.
    analysis = analysis_with(
        lambda r: ~((r["method"] == "fcl") & (r["n_labeled"] == 4) & (r["client"] == 0))
    )
    (experiment,) = analysis.experiments
    measured = measured_table(analysis, experiment)
    assert cell(measured, "fcl", 4, analysis).suffix.endswith(UNCONVERGED)
    assert UNCONVERGED not in cell(measured, "fcl", 1, analysis).suffix
    assert UNCONVERGED not in cell(measured, "random", 4, analysis).suffix
    table = convergence_table(analysis, experiment)
    rows = analysis.rows
    models = rows.drop_duplicates(["method", "n_labeled", "seed", "fold", "client"])
    fcl4 = models[(models["method"] == "fcl") & (models["n_labeled"] == 4)]
    by_rule = int((fcl4["client"] != 0).sum())
    assert cell(table, "fcl", 4, analysis).text == f"{by_rule}/{len(fcl4)}"
    assert cell(table, "fcl", 4, analysis).suffix == UNCONVERGED
    total = len(models)
    assert f"Overall: {total - (len(fcl4) - by_rule)} of {total}" in table.notes[0]


def test_runs_without_convergence_records_get_no_table():
    analysis = analysis_with(lambda r: pd.Series([None] * len(r), index=r.index))
    (experiment,) = analysis.experiments
    assert convergence_table(analysis, experiment) is None
    measured = measured_table(analysis, experiment)
    assert all(UNCONVERGED not in c.suffix for row in measured.rows for c in row)
