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


def paper_analysis():
    rows = make_runs.make_rows(
        methods=("random", "simclr", "fcl"), n_values=(1, 2, 4, 8), preset="paper", clients=3
    )
    transfer = make_runs.transfer_rows(preset="paper")
    return analyse(normalise_rows(pd.concat([rows, transfer], ignore_index=True)))


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="the shared reference folder is not on this machine"
)
def test_embedded_numbers_equal_the_reference_files():
    assert FCL_MICCAI2021_CSV == (SHARED / "fcl_miccai2021.csv").read_text()
    assert CHAITANYA_NEURIPS2020_ACDC_CSV == (SHARED / "chaitanya_neurips2020_acdc.csv").read_text()


def test_matching_needs_the_paper_preset():
    analysis = paper_analysis()
    matched = {e.slug: matching_table(e) for e in analysis.experiments}
    assert sorted(matched.values()) == [
        "table1_local_finetune",
        "table2_federated_finetune",
        "transfer_acdc_to_hvsmr",
    ]
    tiny = analyse(normalise_rows(make_runs.standard_rows()))
    assert all(matching_table(e) is None for e in tiny.experiments)


def test_comparison_beside_measured_with_difference():
    analysis = paper_analysis()
    exp = next(e for e in analysis.experiments if matching_table(e) == "table1_local_finetune")
    table = comparison_table(analysis, exp, "table1_local_finetune")
    assert WU in table.title and f"N=1 {WU}" in table.columns and "N=1 Δ" in table.columns
    published = fcl_table("table1_local_finetune").set_index(["method", "n"])
    summary = analysis.summary[analysis.summary.experiment == exp.slug].set_index(
        ["variant", "n_labeled"]
    )
    rows = {row[0].text: row for row in table.rows}
    assert set(rows) >= {
        "FCL (fcl)",
        "FedSimCLR (simclr)",
        "Random init (random)",
        "FedCA (no counterpart)",
    }
    for label, method in (
        ("FCL (fcl)", "fcl"),
        ("FedSimCLR (simclr)", "simclr"),
        ("Random init (random)", "random"),
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
    assert (
        rows["FedRotation (fedrotation)"][1].text == "—"
        and rows["FedRotation (fedrotation)"][2].text != "—"
    )


def test_measured_table_never_holds_published_numbers():
    analysis = paper_analysis()
    published = {f"{v:.3f}" for v in fcl_numbers()["dice_mean"]}
    for exp in analysis.experiments:
        table = measured_table(analysis, exp)
        assert "published" not in table.title
        shown = {row[0].text for row in table.rows}
        assert shown == {"random", "simclr", "fcl"} or shown == {"random", "simclr"}
        for row in table.rows:
            for cell in row[1:]:
                mean = float(cell.text.split(" ")[0])
                measured = analysis.summary.query(
                    "experiment == @exp.slug and variant == @row[0].text"
                )["mean"]
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
    exp = next(e for e in analysis.experiments if matching_table(e) == "table2_federated_finetune")
    text = table_latex(comparison_table(analysis, exp, "table2_federated_finetune"))
    depth = 0
    for char in text.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0
    assert r"\resizebox{\linewidth}{!}{%" in text and text.count(r"\cmidrule(lr)") == 4
    assert r"\multicolumn{3}{c}{N=1}" in text and "published (Wu et al. 2021)" in text
    body = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 7 and all(line.count(" & ") == 12 for line in body)
