"""A report a paper can use: display names, marks, published beside real data only, accuracy
against cost, every figure in PNG (300 dpi), PDF and SVG, report.tex including them."""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.reports.analysis import analyse
from bench.reports.build import build_report
from bench.reports.cost import pareto
from bench.reports.document import MISSING
from bench.reports.names import DISPLAY, display_name
from bench.reports.published import fcl_table
from bench.reports.runs import normalise_rows
from bench.reports.tables import measured_table

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)

REAL, SYNTHETIC, TRANSFER = (
    "acdc-local-paper-11111111",
    "acdc-local-paper-22222222",
    ("hvsmr-from-acdc-local-paper-33333333"),
)
IDS = re.compile(r"\b(" + "|".join(sorted(DISPLAY, key=len, reverse=True)) + r")\b")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    runs = make_runs.acceptance_runs(root)
    return build_report(list(runs.values()), root / "out", quiet=True, qualitative=False)


def table(written, slug: str) -> pd.DataFrame:
    return pd.read_csv(written.out / "tables" / f"{slug}.csv", dtype=str, keep_default_na=False)


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_display_names_in_every_table_and_figure(written):
    methods = {display_name(m) for m in make_runs.ACCEPTANCE_METHODS}
    for t in written.report.tables():
        if t.slug.startswith(("dice-", "stats-", "compare-", "cost-")):
            shown = {row[0].text.split(" (paper:")[0] for row in t.rows}
            assert not {m for m in shown if IDS.fullmatch(m)}, (t.slug, shown)
            assert shown & methods, t.slug
            assert any("Registry ids" in n and "Local CL = local_cl" in n for n in t.notes), t.slug
    for figure in written.report.figures():
        texts = svg_texts(written.out / f"figures/{figure.slug}.svg")
        assert texts, figure.slug
        assert not [t for t in texts if IDS.search(t)], (figure.slug, texts)
    dice = svg_texts(written.out / f"figures/dice-vs-n-{REAL}.svg")
    assert {"FCL", "SimCLR", "Local CL", "Random init (reference)"} <= set(dice)
    assert sum(t.endswith("Dice vs N") for t in dice) == 1  # one title, no doubled one


def test_no_published_value_beside_synthetic_cells(written):
    slugs = {t.slug for t in written.report.tables()}
    assert f"compare-{SYNTHETIC}" not in slugs
    summary = pd.read_csv(written.out / "summary.csv", dtype={"split_hash": str})
    synthetic = summary[summary["split_hash"] == "2" * 64]
    assert len(synthetic) and synthetic["published_wu2021_mean"].isna().all()
    assert "published" not in " ".join(
        svg_texts(written.out / f"figures/dice-vs-n-{SYNTHETIC}.svg")
    )


def test_published_beside_matching_cells_of_real_data(written):
    compare = table(written, f"compare-{REAL}")
    published = fcl_table("table1_local_finetune").set_index(["method", "n"])
    summary = pd.read_csv(written.out / "summary.csv", dtype={"split_hash": str})
    real = summary[summary["split_hash"] == "1" * 64].set_index(["variant", "n_labeled"])
    rows = compare.set_index("Method")
    for method, label in (("fcl", "FCL"), ("simclr", "SimCLR (paper: FedSimCLR)")):
        for n in (1, 8):
            assert rows.loc[label, f"N={n} measured"].startswith(
                f"{real.loc[(method, n), 'mean']:.3f}"
            )
            mean, std = published.loc[(method, n), ["mean", "std"]]
            assert rows.loc[label, f"N={n} published (Wu et al. 2021)"] == f"{mean:.3f} ± {std:.3f}"
        assert rows.loc[label, "N=2 measured"] == MISSING  # not run: nothing filled in
    notes = next(t for t in written.report.tables() if t.slug == f"compare-{REAL}").notes
    assert any("3 clients, 1-fold, 1.367 mm in-plane, 192×192 px, preset paper" in n for n in notes)
    assert any("Not the same protocol" in n for n in notes)  # 3 clients, not the paper's 10
    assert "published" in " ".join(svg_texts(written.out / f"figures/dice-vs-n-{REAL}.svg"))


def test_transfer_table_has_every_method_and_m_1_to_8_beside_published(written):
    measured = table(written, f"dice-{TRANSFER}")
    assert list(measured.columns) == ["Method", "M=1", "M=2", "M=4", "M=8"]
    assert set(measured["Method"]) == {display_name(m) for m in make_runs.ACCEPTANCE_METHODS}
    assert (measured[["M=4", "M=8"]] == MISSING).all().all()
    compare = table(written, f"compare-{TRANSFER}").set_index("Method")
    assert compare.loc["FCL", "M=8 published (Wu et al. 2021)"] == "0.872 ± 0.033"
    assert compare.loc["FCL", "M=8 measured"] == MISSING


def test_accuracy_against_cost(written):
    cost = table(written, f"cost-{REAL}").set_index("Method")
    assert (written.out / "figures" / f"cost-{REAL}.png").exists()
    # Steps: FCL records 5 per round (3 rounds); the others: 3 rounds x pretrain.local_steps 5.
    # FLOPs per step: the profile's, at batch 16 = the run's 4 volumes x 4 partitions.
    assert cost.loc["FCL", "steps per client"] == "15"
    # The fixture's profile: FCL 2e10, Local CL 4e10, SimCLR 6e10 FLOPs per step.
    assert float(cost.loc["FCL", "FLOPs per step"]) == pytest.approx(2e10, rel=1e-3)
    assert float(cost.loc["SimCLR", "TFLOP per client"]) == pytest.approx(0.9, rel=1e-3)
    assert float(cost.loc["SimCLR", "device-s per client"]) == pytest.approx(12.5 / 3, rel=1e-2)
    assert float(cost.loc["FCL", "MB sent per client"]) == pytest.approx(3 * 0.92, rel=1e-3)
    assert cost.loc["Random init", "TFLOP per client"] == "0"
    assert cost.loc["Random init", "MB sent per client"] == "0"
    assert "FLOPs" in cost.loc["Random init", "Pareto N=1"]  # nothing costs less


def test_pareto_front_on_hand_made_points():
    dice = np.array([0.5, 0.6, 0.55, 0.7, np.nan])
    cost = np.array([0.0, 1.0, 2.0, 3.0, 0.5])
    assert pareto(dice, cost).tolist() == [True, True, False, True, False]


def test_every_figure_in_three_formats_and_in_latex(written):
    latex = (written.out / "report.tex").read_text()
    figures = written.report.figures()
    assert len(figures) >= 8
    for figure in figures:
        png, pdf, svg = (written.out / f"figures/{figure.slug}.{k}" for k in ("png", "pdf", "svg"))
        dpi = Image.open(png).info["dpi"]
        assert round(dpi[0]) == round(dpi[1]) == 300, figure.slug
        assert pdf.read_bytes()[:5] == b"%PDF-" and svg.stat().st_size > 0
        assert f"{{figures/{figure.slug}.pdf}}" in latex and f"fig:{figure.slug}" in latex


def test_bold_needs_three_methods_and_a_significant_lead():
    two = analyse(normalise_rows(make_runs.make_rows(methods=("random", "fcl"), modes=("local",))))
    for row in measured_table(two, two.experiments[0]).rows:
        assert not any(c.bold or c.underline for c in row[1:])
    rows = make_runs.make_rows(methods=("random", "simclr", "fcl"), modes=("local",), folds=2)
    clear = analyse(normalise_rows(rows))  # FCL 0.1 above SimCLR on 6 pairs: Wilcoxon p = 0.03
    shown = {r[0].text: r for r in measured_table(clear, clear.experiments[0]).rows}
    assert shown["FCL"][1].bold and not shown["SimCLR"][1].bold and shown["SimCLR"][1].underline
    rows.loc[rows["method"] == "simclr", "dice"] = rows.loc[rows["method"] == "fcl", "dice"].values
    tied = analyse(normalise_rows(rows))
    shown = {r[0].text: r for r in measured_table(tied, tied.experiments[0]).rows}
    assert shown["FCL"][1].bold and shown["SimCLR"][1].bold and not shown["Random init"][1].bold


def test_empty_test_column_says_why():
    rows = make_runs.make_rows(methods=("simclr", "fcl", "local_cl"), modes=("local",))
    analysis = analyse(normalise_rows(rows))
    notes = " ".join(measured_table(analysis, analysis.experiments[0]).notes)
    assert "random init was not run" in notes


def test_fcl_loss_figure_splits_the_terms_and_marks_the_bank(written):
    figure = next(f for f in written.report.figures() if f.slug == "pretrain-loss-acdc-real")
    assert "not divergence" in figure.caption
    texts = svg_texts(written.out / f"figures/{figure.slug}.svg")
    assert {"bank term", "local term", "banks full", "local bank filled"} <= set(texts)


def test_profile_figure_is_readable(written):
    figure = next(f for f in written.report.figures() if f.slug == "profile-acdc-real-cpu")
    texts = svg_texts(written.out / f"figures/{figure.slug}.svg")
    assert "Data samplers" in texts and "12.0% of matmul peak" in texts
    assert "fine-tuning step" in texts and "pretraining sampler" in texts
    assert not [t for t in texts if "_" in t or re.search(r"\bnan\b", t)]  # no raw names


def test_learning_curves_from_the_units_curves(written):
    figure = next(f for f in written.report.figures() if f.slug == "curves-acdc-real-local")
    texts = svg_texts(written.out / f"figures/{figure.slug}.svg")
    assert {"FCL", "Local CL", "N=1", "N=8", "validation Dice"} <= set(texts)


def test_each_method_keeps_one_distinct_colour_in_every_figure():
    from bench.reports.figures import METHOD_COLOURS, palette

    everything = list(DISPLAY)
    assert len(set(palette(everything).values())) == len(DISPLAY) == 12
    some = palette(["vicreg", "fcl", "random"])  # another figure, another order
    assert {m: some[m] for m in some} == {m: METHOD_COLOURS[m] for m in some}
    twice = palette(["gcl", "gcl [centralized]", "swav"])  # two variants: two colours
    assert len(set(twice.values())) == 3 and twice["gcl"] == METHOD_COLOURS["gcl"]


def test_profile_under_contention_reads_the_busiest_threads_time():
    """A profile timed while other processes took 96% of the CPU: the figure's throughput and
    share of the peak come from the busiest thread's run time, and the caption says so."""
    from bench.reports.figures import profile_caption, profile_figure

    frame = make_runs.profile_frame(("simclr", "fcl")).assign(
        others_cpu_share=0.96, step_thread_s=0.08, peak_ratio_thread=0.45
    )
    frame.loc[frame["phase"] == "data", ["step_thread_s", "peak_ratio_thread"]] = np.nan
    figure = profile_figure(frame, "contended", display_name)
    speed = figure.axes[0]
    texts = [t.get_text() for t in speed.texts]
    assert texts and all(t == "45.0% of matmul peak" for t in texts)
    widths = sorted(round(p.get_width(), 6) for p in speed.patches)
    assert widths == [100.0, 200.0, 200.0]  # batch 8 and 16 over 0.08 s
    assert "busiest-thread" in speed.get_xlabel()
    assert "96% of the CPU" in profile_caption(frame)
    assert "busiest" not in profile_caption(frame.assign(others_cpu_share=0.05))


def test_the_split_protocol_labels_the_comparison_and_decides_like_for_like():
    from bench.reports.published import like_for_like, run_protocol

    split = {"protocol": "fcl", "clients": 10, "folds": 5}
    config = {"split": split, "data": {"preprocess": {"spacing_mm": 1.367, "size": 192}}}
    assert run_protocol(config, "paper") == (
        "split protocol fcl, 10 clients, 5-fold, 1.367 mm in-plane, 192×192 px, preset paper"
    )
    assert like_for_like(config, "paper") and not like_for_like(config, "small")
    assert not like_for_like({"split": {**split, "protocol": "own"}}, "paper")
