"""Run data reaches the report as text: identifiers never read as numbers, markup escaped."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from bench.reports.build import build_report
from bench.reports.runs import RunFolderError, load_runs

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)

E_HASH = "7451316007e79229"  # digits and one "e": the float inf if read as a number
HOSTILE = 'x"><img src=x onerror=alert(2)>'


def _run(root: Path, name: str, **rows) -> Path:
    frame = make_runs.make_rows(
        methods=("random", "simclr"), modes=("local",), n_values=(1,), folds=1, **rows
    )
    return make_runs.write_run(root / name, frame, losses=False, profile=False)


def test_identifiers_are_read_back_as_text(tmp_path):
    first = _run(tmp_path, "a", split_hash=E_HASH, config_hash="1e10", preset="tiny")
    second = _run(tmp_path, "b", split_hash="1234567e12345678", preset="tiny")
    _, rows, _ = load_runs([first, second])
    assert set(rows["split_hash"]) == {E_HASH, "1234567e12345678"}
    assert "1e10" in set(rows["config_hash"])
    assert rows["patient"].str.startswith("patient").all()


def test_hostile_values_are_escaped_in_html_markdown_and_file_names(tmp_path):
    run = _run(tmp_path, "evil", split_hash=E_HASH, preset=HOSTILE)
    written = build_report([run], tmp_path / "out", qualitative=False, quiet=True)
    page = written.files["html"].read_text()
    assert "<img src=x" not in page and "onerror=alert(2)>" not in page
    assert "split inf" not in page and "-inf" not in page
    ids = re.findall(r'(?:id|data-slug)="([^"]*)"', page)
    assert ids and all(re.fullmatch(r"[A-Za-z0-9._-]+", i) for i in ids), ids
    markdown = written.files["markdown"].read_text()
    prose = re.sub(r"(`{3,})\n.*?\n\1", "", markdown, flags=re.S)  # code blocks show text as is
    assert "<img" not in prose
    for path in (tmp_path / "out").rglob("*"):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", path.name), path.name
    assert any(E_HASH[:8] in path.name for path in (tmp_path / "out" / "tables").iterdir())


def test_a_report_refuses_unverified_units_unless_asked_to_flag_them(tmp_path):
    run = _run(tmp_path, "r", split_hash=E_HASH, preset="tiny")
    unit = sorted((run / "results").glob("method-simclr*.csv"))[0]
    unit.write_text("".join(unit.read_text().splitlines(keepends=True)[:-1]))  # one row lost
    with pytest.raises(RunFolderError, match=f"{unit.name}.*SHA-256.*--show-unverified"):
        load_runs([run])
    _, rows, notes = load_runs([run], show_unverified=True)
    assert "simclr [unverified]" in set(rows["method"]) and "random" in set(rows["method"])
    assert any("unverified" in note for note in notes)
