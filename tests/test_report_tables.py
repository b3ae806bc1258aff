"""Report tables: every number against a direct pandas computation; emphasis, marks, missing
cells."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.reports.analysis import analyse
from bench.reports.document import MISSING
from bench.reports.html import table_html
from bench.reports.latex import table_latex
from bench.reports.markdown import table_markdown
from bench.reports.names import DISPLAY
from bench.reports.runs import load_runs, normalise_rows
from bench.reports.tables import class_table, detail_table, measured_table

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)

ID = {name: method for method, name in DISPLAY.items()}  # display name -> registry id
CELL = re.compile(r"^(\d\.\d{3})(?: ± (\d\.\d{3}))?([†‡*]*)$")


@pytest.fixture(scope="module")
def rows():
    return normalise_rows(
        pd.concat([make_runs.standard_rows(), make_runs.transfer_rows()], ignore_index=True)
    )


@pytest.fixture(scope="module")
def analysis(rows):
    return analyse(rows)


def by_hand(rows, method, mode, n, dataset="acdc", class_name=None):
    """Client Dice = mean over folds of the (client, fold) mean over volumes of the class mean."""
    sel = rows[
        (rows.method == method)
        & (rows.finetune_mode == mode)
        & (rows.n_labeled == n)
        & (rows.dataset == dataset)
    ]
    if class_name is not None:
        sel = sel[sel.class_name == class_name]
    volume = sel.groupby(["seed", "client", "fold", "patient", "phase"])["dice"].mean()
    client_fold = volume.groupby(["client", "fold"]).mean()
    client = client_fold.groupby("client").mean()
    return client.mean(), client.std(), client_fold


def experiment(analysis, dataset, mode):
    return next(e for e in analysis.experiments if e.dataset == dataset and e.mode == mode)


def parse(cell_text):
    match = CELL.match(cell_text)
    assert match, cell_text
    return float(match[1]), (float(match[2]) if match[2] else None), match[3]


@pytest.mark.parametrize("mode", ["local", "federated"])
def test_every_cell_equals_direct_computation(rows, analysis, mode):
    exp = experiment(analysis, "acdc", mode)
    table = measured_table(analysis, exp)
    assert table.columns == ["Method", "N=1", "N=4"]
    checked = 0
    for row in table.rows:
        method = ID[row[0].text]
        for cell, n in zip(row[1:], (1, 4), strict=False):
            mean, std, _ = by_hand(rows, method, mode, n)
            if math.isnan(mean):
                assert cell.text == MISSING
                continue
            shown_mean, shown_std, _ = parse(cell.plain)
            assert shown_mean == round(mean, 3) and shown_std == round(std, 3)
            exact = analysis.summary.query(
                "experiment == @exp.slug and variant == @method and n_labeled == @n"
            )
            assert exact["mean"].item() == pytest.approx(mean) and exact[
                "std"
            ].item() == pytest.approx(std)
            checked += 1
    assert checked == (6 if mode == "local" else 5)


def test_per_class_cells_equal_direct_computation(rows, analysis):
    exp = experiment(analysis, "acdc", "local")
    assert analysis.classes(exp) == ["RV", "Myo", "LV"]
    for class_name in ("RV", "Myo", "LV"):
        table = class_table(analysis, exp, class_name)
        for row in table.rows:
            for cell, n in zip(row[1:], (1, 4), strict=False):
                mean, std, _ = by_hand(rows, ID[row[0].text], "local", n, class_name=class_name)
                assert parse(cell.plain)[:2] == (round(mean, 3), round(std, 3))


def test_bold_best_alone_when_significant_second_underlined(analysis):
    """3 methods, 6 (client, fold) pairs: FCL leads SimCLR by 0.1, Wilcoxon p = 0.03."""
    exp = experiment(analysis, "acdc", "local")
    table = measured_table(analysis, exp)
    for row in table.rows:
        assert row[1].bold == (row[0].text == "FCL")
        assert row[1].underline == (row[0].text == "SimCLR")
    markdown = table_markdown(table)
    fcl_line = next(line for line in markdown.splitlines() if line.startswith("| FCL "))
    simclr_line = next(line for line in markdown.splitlines() if line.startswith("| SimCLR "))
    assert fcl_line.count("**") == 4 and "<u>" not in fcl_line
    assert simclr_line.count("<u>") == 2 and "**" not in simclr_line
    html = table_html(table)
    assert re.search(r"<td>FCL</td><td><b>0\.\d{3} ± 0\.\d{3}</b>", html)
    assert re.search(r"<td>SimCLR</td><td><u>0\.\d{3} ± 0\.\d{3}</u>", html)
    latex = table_latex(table)
    assert re.search(r"^FCL & \\textbf\{0\.\d{3} \$\\pm\$ 0\.\d{3}\}", latex, re.MULTILINE)
    assert re.search(r"^SimCLR & \\underline\{0\.\d{3} \$\\pm\$ 0\.\d{3}\}", latex, re.MULTILINE)
    assert any("Registry ids" in note and "FCL = fcl" in note for note in table.notes)


def test_no_marks_with_two_methods(analysis):
    exp = experiment(analysis, "hvsmr", "local")  # random and simclr only
    for row in measured_table(analysis, exp).rows:
        assert not any(cell.bold or cell.underline for cell in row[1:])


def test_ties_share_the_bold():
    rows = make_runs.make_rows(
        methods=("random", "simclr"), modes=("local",), n_values=(1,), clients=1
    )
    twin = rows[rows.method == "random"].assign(method="fcl")
    analysis = analyse(normalise_rows(pd.concat([rows, twin], ignore_index=True)))
    table = measured_table(analysis, analysis.experiments[0])
    flags = {row[0].text: (row[1].bold, row[1].underline) for row in table.rows}
    # 2 pairs: no test can separate SimCLR from the next, so every cell shares the bold.
    assert flags == {name: (True, False) for name in ("Random init", "SimCLR", "FCL")}


def test_missing_cell_shown_as_missing_in_every_format(analysis):
    exp = experiment(analysis, "acdc", "federated")
    table = measured_table(analysis, exp)
    fcl = next(row for row in table.rows if row[0].text == "FCL")
    assert fcl[2].text == MISSING and not fcl[2].bold and not fcl[2].underline
    assert "| FCL | " in table_markdown(table) and f" | {MISSING} |" in table_markdown(table)
    assert f"<td>{MISSING}</td>" in table_html(table)
    assert re.search(r"^FCL & .* & --- \\\\$", table_latex(table), re.MULTILINE)
    assert not analysis.summary.query(
        "experiment == @exp.slug and variant == 'fcl' and n_labeled == 4"
    ).shape[0]


def test_partial_cell_marked(analysis, rows):
    exp = experiment(analysis, "acdc", "local")
    table = measured_table(analysis, exp)
    simclr = next(row for row in table.rows if row[0].text == "SimCLR")
    assert simclr[1].suffix.endswith("*") and not simclr[2].suffix.endswith("*")
    assert any("partial" in note for note in table.notes)
    _, _, pairs = by_hand(rows, "simclr", "local", 1)
    assert len(pairs) == 5


def test_significance_marks_match_scipy(rows, analysis):
    """† vs random, ‡ vs the best method, paired over (client, fold), by hand with scipy."""
    for mode in ("local", "federated"):
        exp = experiment(analysis, "acdc", mode)
        table = measured_table(analysis, exp)
        for col, n in ((1, 1), (2, 4)):
            means = {m: by_hand(rows, m, mode, n)[0] for m in ("random", "simclr", "fcl")}
            best = max((m for m in means if not math.isnan(means[m])), key=means.get)
            for row in table.rows:
                method = ID[row[0].text]
                if row[col].text == MISSING:
                    continue
                own = by_hand(rows, method, mode, n)[2]
                for other, mark in (("random", "†"), (best, "‡")):
                    if other == method:
                        assert mark not in row[col].suffix
                        continue
                    joined = pd.concat(
                        [own, by_hand(rows, other, mode, n)[2]], axis=1, join="inner"
                    ).dropna()
                    a, b = joined.iloc[:, 0], joined.iloc[:, 1]
                    p = (
                        stats.wilcoxon(a, b).pvalue
                        if len(joined) >= 6
                        else stats.ttest_rel(a, b).pvalue
                    )
                    assert (mark in row[col].suffix) == (p < 0.05), (mode, n, method, other, p)


def test_detail_table_ci_and_p_values(analysis):
    exp = experiment(analysis, "acdc", "local")
    table = detail_table(analysis, exp)
    assert table.columns[4] == "95% CI"
    for row in table.rows:
        low, high = (float(x) for x in row[4].text.strip("[]").split(", "))
        assert low <= float(row[2].text) <= high
    clients = analysis.clients.query(
        "experiment == @exp.slug and variant == 'fcl' and n_labeled == 1"
    )["dice"]
    rng = np.random.default_rng(0)
    boot = clients.to_numpy()[rng.integers(0, len(clients), size=(2000, len(clients)))].mean(axis=1)
    expected = np.percentile(boot, [2.5, 97.5])
    got = analysis.summary.query("experiment == @exp.slug and variant == 'fcl' and n_labeled == 1")
    assert (got["ci_low"].item(), got["ci_high"].item()) == pytest.approx(tuple(expected))


def test_transfer_table(rows, analysis):
    exp = experiment(analysis, "hvsmr", "local")
    assert exp.transfer and exp.pretrain_dataset == "acdc"
    table = measured_table(analysis, exp)
    # Wu et al.'s columns, M = 1, 2, 4, 8, whether run or not.
    assert table.columns == ["Method", "M=1", "M=2", "M=4", "M=8"]
    assert "Transfer ACDC → HVSMR" in table.title
    assert all(cell.text == MISSING for row in table.rows for cell in row[3:])
    assert analysis.classes(exp) == ["Myocardium", "BloodPool"]
    for row in table.rows:
        for cell, m in zip(row[1:3], (1, 2), strict=False):
            mean, std, _ = by_hand(rows, ID[row[0].text], "local", m, dataset="hvsmr")
            assert parse(cell.plain)[:2] == (round(mean, 3), round(std, 3))


def test_one_client_leaves_std_out():
    rows = make_runs.make_rows(
        methods=("random", "simclr"), modes=("local",), n_values=(1,), clients=1
    )
    analysis = analyse(normalise_rows(rows))
    table = measured_table(analysis, analysis.experiments[0])
    assert all("±" not in row[1].text for row in table.rows)
    assert any("one client" in note for note in table.notes)
    assert all("†" not in row[1].suffix for row in table.rows)  # 2 pairs: too few for a test


def test_runs_concatenate_and_drop_copies(tmp_path):
    runs = make_runs.fixture_runs(tmp_path)
    _, rows, notes = load_runs(runs)
    assert set(rows["dataset"]) == {"acdc", "hvsmr"}
    copy = tmp_path / "copy"
    make_runs.write_run(copy, make_runs.standard_rows())
    _, again, notes = load_runs([*runs, copy, runs[0]])
    assert len(again) == len(rows) and any("more than one run folder" in n for n in notes)
    assert any("given twice" in n for n in notes)


def test_variants_kept_apart_when_settings_differ():
    rows = make_runs.make_rows(methods=("random", "simclr"), modes=("local",), n_values=(1,))
    local = rows[rows.method == "simclr"].assign(pretrain_setting="local", config_hash="e" * 16)
    analysis = analyse(normalise_rows(pd.concat([rows, local], ignore_index=True)))
    methods = analysis.methods(analysis.experiments[0])
    assert methods == ["random", "simclr [federated]", "simclr [local]"]
