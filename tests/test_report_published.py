"""Published numbers: beside measured ones only when the protocol matches, always labelled, never
mixed."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pandas as pd
import pytest

from bench.reports.analysis import analyse
from bench.reports.published import WU, fcl_numbers, fcl_table, matching_table
from bench.reports.reference_data import CHAITANYA_NEURIPS2020_ACDC_CSV, FCL_MICCAI2021_CSV
from bench.reports.runs import normalise_rows
from bench.reports.tables import comparison_table, measured_table, published_table

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)
SHARED = Path("/work/shared/reference")


def paper_analysis(data_source="folder"):
    rows = make_runs.make_rows(
        methods=("random", "simclr", "fcl"), n_values=(1, 2, 4, 8), preset="paper", clients=3
    )
    transfer = make_runs.transfer_rows(preset="paper")
    rows = pd.concat([rows, transfer], ignore_index=True)
    if data_source is not None:
        rows["data_source"] = data_source
    return analyse(normalise_rows(rows))


def compare(analysis, name):
    exp = next(e for e in analysis.experiments if matching_table(e, True) == name)
    return exp, comparison_table(analysis, exp, name, "3 clients, preset paper", False)


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="the shared reference folder is not on this machine"
)
def test_embedded_numbers_equal_the_reference_files():
    assert FCL_MICCAI2021_CSV == (SHARED / "fcl_miccai2021.csv").read_text()
    assert CHAITANYA_NEURIPS2020_ACDC_CSV == (SHARED / "chaitanya_neurips2020_acdc.csv").read_text()


def test_matching_needs_real_data_not_a_preset():
    analysis = paper_analysis()
    matched = {e.slug: matching_table(e, analysis.real_data(e)) for e in analysis.experiments}
    assert sorted(matched.values()) == [
        "table1_local_finetune",
        "table2_federated_finetune",
        "transfer_acdc_to_hvsmr",
    ]
    tiny_rows = make_runs.standard_rows().assign(data_source="folder")
    tiny = analyse(normalise_rows(tiny_rows))  # preset tiny on real data: beside, not like-for-like
    assert all(matching_table(e, tiny.real_data(e)) for e in tiny.experiments)
    for source in ("synthetic:acdc", None):  # synthetic, or rows from before the column existed
        synthetic = paper_analysis(source)
        assert not any(synthetic.real_data(e) for e in synthetic.experiments)
        assert all(matching_table(e, False) is None for e in synthetic.experiments)


def test_comparison_beside_measured_with_difference():
    analysis = paper_analysis()
    exp, table = compare(analysis, "table1_local_finetune")
    assert WU in table.title and f"N=1 {WU}" in table.columns and "N=1 Δ" in table.columns
    published = fcl_table("table1_local_finetune").set_index(["method", "n"])
    summary = analysis.summary[analysis.summary.experiment == exp.slug].set_index(
        ["variant", "n_labeled"]
    )
    rows = {row[0].text: row for row in table.rows}
    assert set(rows) >= {
        "FCL",
        "SimCLR (paper: FedSimCLR)",
        "Random init",
        "FedCA (paper only; no counterpart here)",
    }
    for label, method in (
        ("FCL", "fcl"),
        ("SimCLR (paper: FedSimCLR)", "simclr"),
        ("Random init", "random"),
    ):
        for i, n in enumerate((1, 2, 4, 8)):
            measured, pub, delta = rows[label][1 + 3 * i : 4 + 3 * i]
            mean = summary.loc[(method, n), "mean"]
            assert measured.text.startswith(f"{mean:.3f}")
            assert (
                pub.text == f"{published.loc[(method, n), 'mean']:.3f} ± "
                f"{published.loc[(method, n), 'std']:.3f}"
            )
            assert delta.text == f"{mean - published.loc[(method, n), 'mean']:+.3f}"
    # Methods not measured here stay missing on the measured side.
    assert rows["FedRotation"][1].text == "—" and rows["FedRotation"][2].text != "—"
    assert any("3 clients, preset paper" in n for n in table.notes)
    assert any("Not the same protocol" in n for n in table.notes)


def test_measured_table_never_holds_published_numbers():
    analysis = paper_analysis()
    published = {f"{v:.3f}" for v in fcl_numbers()["dice_mean"]}
    for exp in analysis.experiments:
        table = measured_table(analysis, exp)
        assert "published" not in table.title
        ids = {"Random init": "random", "SimCLR": "simclr", "FCL": "fcl"}
        shown = {row[0].text for row in table.rows}
        assert shown == set(ids) or shown == {"Random init", "SimCLR"}
        for row in table.rows:
            variant = ids[row[0].text]
            for cell in row[1:]:
                if cell.text == "—":
                    continue  # a transfer table's M = 4, 8, not run here
                mean = float(cell.text.split(" ")[0])
                summary = analysis.summary
                measured = summary.loc[
                    (summary["experiment"] == exp.slug) & (summary["variant"] == variant), "mean"
                ]
                assert any(abs(mean - m) < 6e-4 for m in measured)
    assert published  # the check above compared against measured numbers only


def test_published_alone_is_labelled():
    table = published_table("transfer_acdc_to_hvsmr")
    assert table.title.startswith(WU) and "not measured here" in table.title
    assert table.columns == ["Method (registry name)", "M=1", "M=2", "M=4", "M=8"]
    csv = pd.read_csv(io.StringIO(FCL_MICCAI2021_CSV))
    fcl = csv[(csv.experiment == "transfer_acdc_to_hvsmr") & (csv.method == "FCL")]
    row = next(r for r in table.rows if r[0].text == "FCL (fcl)")
    assert [c.text for c in row[1:]] == [
        f"{m:.3f} ± {s:.3f}" for m, s in zip(fcl.dice_mean, fcl.dice_std, strict=False)
    ]


def test_comparison_latex_is_well_formed():
    from bench.reports.latex import table_latex

    analysis = paper_analysis()
    _, table = compare(analysis, "table2_federated_finetune")
    text = table_latex(table)
    depth = 0
    for char in text.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0
    assert r"\resizebox{\linewidth}{!}{%" in text and text.count(r"\cmidrule(lr)") == 4
    assert r"\multicolumn{3}{c}{N=1}" in text and "published (Wu et al. 2021)" in text
    body = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 7 and all(line.count(" & ") == 12 for line in body)
