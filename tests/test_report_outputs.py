"""The written report: HTML page holding every table and figure, real images, LaTeX, Markdown,
CSV."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.reports.build import build_report
from bench.reports.document import MISSING

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runs = make_runs.fixture_runs(root)
    return build_report(runs, root / "out", quiet=True)


def braces_balanced(text: str) -> bool:
    depth = 0
    for char in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def assert_real_image(image: Image.Image) -> None:
    """Larger than an icon, not blank, more than ten colours."""
    rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape[0] > 100 and rgb.shape[1] > 100
    # One integer per colour: np.unique over rows (axis=0) takes seconds on a 300-dpi figure.
    colours = (
        (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    )
    assert rgb.std(dtype=np.float64) > 5 and len(np.unique(colours)) > 10


def test_files_written(written):
    out = written.out
    for name in (
        "report.html",
        "report.md",
        "report.tex",
        "summary.csv",
        "summary_per_class.csv",
        "client_fold_scores.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    slugs = {t.slug for t in written.report.tables()}
    assert {p.stem for p in (out / "tables").glob("*.csv")} == slugs
    assert {p.stem for p in (out / "tables").glob("*.tex")} == slugs


def test_html_embeds_every_table_and_figure(written):
    page = (written.out / "report.html").read_text()
    tables, figures = written.report.tables(), written.report.figures()
    assert len(figures) >= 8  # Dice vs N and boxes for 3 experiments, loss curves, profile
    for table in tables:
        assert f'data-slug="{table.slug}"' in page
    embedded = re.findall(
        r'<figure id="([^"]+)" data-slug="[^"]+"><img alt="[^"]*" '
        r'src="data:image/png;base64,([^"]+)"',
        page,
    )
    assert {slug for slug, _ in embedded} == {f.slug for f in figures}
    for slug, data in embedded:
        png = base64.b64decode(data)
        assert png == (written.out / "figures" / f"{slug}.png").read_bytes()
        assert_real_image(Image.open(io.BytesIO(png)))
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # self-contained: no outside files
    assert "<link" not in page and "<script" not in page


def test_figures_are_real_images(written):
    for figure in written.report.figures():
        png, pdf, svg = (written.out / f for f in figure.files)
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert_real_image(Image.open(png))
        root = ET.parse(svg).getroot()
        assert (
            root.tag.endswith("svg")
            and len(list(root.iter("{http://www.w3.org/2000/svg}path"))) > 10
        )


def test_published_numbers_labelled_and_apart(written):
    page = (written.out / "report.html").read_text()
    markdown = (written.out / "report.md").read_text()
    for text in (page, markdown):
        assert text.count("published (Wu et al. 2021): Table 1") == 1
        assert "published (Wu et al. 2021): Table 2" in text
        assert "published (Wu et al. 2021): transfer ACDC → HVSMR 2016" in text
        assert "published (Chaitanya et al. 2020)" in text
        assert "measured beside" not in text  # no paper-preset run here


def test_missing_cells_shown_as_missing(written):
    table = pd.read_csv(
        written.out / "tables" / "dice-acdc-federated-tiny-aaaaaaaa.csv", keep_default_na=False
    )
    assert table.set_index("Method").loc["FCL", "N=4"] == MISSING
    markdown = (written.out / "report.md").read_text()
    assert re.search(
        rf"^\| FCL \| \*\*0\.\d{{3}} ± 0\.\d{{3}}\*\*†?\*? \| {MISSING} \|$", markdown, re.MULTILINE
    )
    summary = pd.read_csv(written.out / "summary.csv")
    assert not (
        (summary.variant == "fcl") & (summary["mode"] == "federated") & (summary.n_labeled == 4)
    ).any()


def test_csv_tables_equal_rendered_cells(written):
    for table in written.report.tables():
        frame = pd.read_csv(
            written.out / "tables" / f"{table.slug}.csv", dtype=str, keep_default_na=False
        )
        assert list(frame.columns) == table.columns
        assert frame.to_numpy().tolist() == [[c.plain for c in row] for row in table.rows]


def test_latex_well_formed(written):
    for path in sorted((written.out / "tables").glob("*.tex")):
        text = path.read_text()
        assert braces_balanced(text), path.name
        assert (
            text.count(r"\toprule") == text.count(r"\midrule") == text.count(r"\bottomrule") == 1
        ), path.name
        assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") == 1
        body = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
        ncols = int(re.search(r"\\begin\{tabular\}\{l(c*)\}", text)[1].__len__()) + 1
        for line in body:
            assert line.endswith(r"\\") and line.count(" & ") == ncols - 1, (path.name, line)
        assert "_" not in re.sub(r"\\_|\\label\{[^}]*\}", "", text), path.name
    document = (written.out / "report.tex").read_text()
    assert braces_balanced(document) and document.count(r"\begin{table}") == len(
        written.report.tables()
    )
    measured = (written.out / "tables" / "dice-acdc-local-tiny-aaaaaaaa.tex").read_text()
    assert r"\textbf{" in measured and r"\underline{" in measured and r"$^{\dagger}$" in measured


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed")
def test_latex_compiles(written, tmp_path):
    """report.tex with the figures it includes (figures/<slug>.pdf, relative to the report)."""
    folder = shutil.copytree(written.out, tmp_path / "report")
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert (folder / "report.pdf").stat().st_size > 0
    assert "not found" not in done.stdout and written.report.figures()


def test_markdown_holds_every_table_and_figure(written):
    markdown = (written.out / "report.md").read_text()
    for table in written.report.tables():
        assert f"### {table.title}" in markdown
    for figure in written.report.figures():
        assert f"]({figure.files[0]})" in markdown


def test_provenance(written):
    page = (written.out / "report.html").read_text()
    for text in (
        "aaaaaaaa",
        "v0-test",
        "cccccccccccccccc",
        "synthetic, seed 0",
        "report code version",
        "Total: 31.5 s over 4 recorded steps",
        "Configuration of",
        "torch_threads",
        "acdc: profile cpu.json",
        "Hardware recorded by the runs",
    ):
        assert text in page, text
    assert "No fine-tuned models saved" in page or "no fine-tuned models saved" in page


def test_report_tolerates_absent_extras(tmp_path):
    run = make_runs.write_run(
        tmp_path / "bare",
        make_runs.make_rows(modes=("local",), n_values=(1,), clients=2),
        losses=False,
        profile=False,
    )
    (run / "timings.jsonl").unlink()
    written = build_report([run], tmp_path / "out", quiet=True, qualitative=False)
    page = (written.out / "report.html").read_text()
    for text in (
        "No profiles",
        "No pretraining losses recorded",
        "No durations recorded",
        "turned off",
    ):
        assert text in page


def test_report_of_runs_without_results(tmp_path):
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    (empty / "config.yaml").write_text("preset: tiny\n")
    nan_rows = make_runs.make_rows(modes=("local",), n_values=(1,), clients=2).assign(
        dice=float("nan")
    )
    nan_run = make_runs.write_run(tmp_path / "nan", nan_rows, losses=False, profile=False)
    written = build_report([empty, nan_run], tmp_path / "out", quiet=True, qualitative=False)
    page = (written.out / "report.html").read_text()
    assert "no Dice value" in page and "published (Wu et al. 2021): Table 1" in page
    written = build_report([empty], tmp_path / "out2", quiet=True, qualitative=False)
    assert "No result rows" in (written.out / "report.html").read_text()


def test_unfinished_work_shows_as_missing(tmp_path):
    """Configured N, modes and methods (run.yaml) without results appear as — cells."""
    import yaml

    rows = make_runs.make_rows(methods=("simclr",), modes=("local",), n_values=(1,), clients=2)
    config = {
        "preset": "tiny",
        "split": {"n_values": [1, 4]},
        "finetune": {"modes": ["local", "federated"]},
    }
    run = make_runs.write_run(tmp_path / "run", rows, config=config, losses=False, profile=False)
    meta = yaml.safe_load((run / "run.yaml").read_text())
    (run / "run.yaml").write_text(yaml.safe_dump({**meta, "methods": ["simclr", "random"]}))
    written = build_report([run], tmp_path / "out", quiet=True, qualitative=False)
    local = pd.read_csv(
        written.out / "tables" / "dice-acdc-local-tiny-aaaaaaaa.csv", keep_default_na=False
    )
    assert list(local.columns) == ["Method", "N=1", "N=4"] and list(local["Method"]) == [
        "Random init",
        "SimCLR",
    ]
    assert local.set_index("Method").loc["Random init"].tolist() == [MISSING, MISSING]
    assert local.set_index("Method").loc["SimCLR", "N=4"] == MISSING
    federated = pd.read_csv(
        written.out / "tables" / "dice-acdc-federated-tiny-aaaaaaaa.csv", keep_default_na=False
    )
    assert (federated[["N=1", "N=4"]] == MISSING).all().all()
    assert "No results yet" in (written.out / "report.html").read_text()
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    (empty / "config.yaml").write_text(yaml.safe_dump(config))
    (empty / "run.yaml").write_text(
        yaml.safe_dump({"dataset": "acdc", "split_hash": "f" * 64, "methods": ["fcl"]})
    )
    written = build_report([empty], tmp_path / "out2", quiet=True, qualitative=False)
    table = pd.read_csv(
        written.out / "tables" / "dice-acdc-local-tiny-ffffffff.csv", keep_default_na=False
    )
    assert table.to_numpy().tolist() == [["FCL", MISSING, MISSING]]


def test_runs_with_the_same_folder_name_keep_their_own_figures(tmp_path):
    first = make_runs.write_run(
        tmp_path / "a" / "run",
        make_runs.make_rows(modes=("local",), n_values=(1,), clients=2),
        profile=False,
    )
    second = make_runs.write_run(
        tmp_path / "b" / "run",
        make_runs.make_rows(modes=("local",), n_values=(1,), clients=2, split_hash="e" * 64),
        profile=False,
    )
    written = build_report([first, second], tmp_path / "out", quiet=True, qualitative=False)
    slugs = [f.slug for f in written.report.figures()]
    assert len(slugs) == len(set(slugs)) and {"pretrain-loss-run-1", "pretrain-loss-run-2"} <= set(
        slugs
    )


def test_html_tags_nest(written):
    from html.parser import HTMLParser

    void = {"meta", "img", "br", "hr", "link", "input"}

    class Nesting(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.errors = [], []

        def handle_starttag(self, tag, attrs):
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            if not self.stack or self.stack.pop() != tag:
                self.errors.append(tag)

    parser = Nesting()
    parser.feed((written.out / "report.html").read_text())
    assert parser.errors == [] and parser.stack == []
