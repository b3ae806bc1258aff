"""`bench report` as a subcommand: add_report_command joins any argparse subparsers."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from bench.reports.cli import add_report_command

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)


def parser():
    root = argparse.ArgumentParser(prog="bench")
    add_report_command(root.add_subparsers(dest="command", required=True))
    return root


def test_report_command_writes_the_report(tmp_path, capsys):
    run = make_runs.write_run(
        tmp_path / "run",
        make_runs.make_rows(modes=("local",), n_values=(1,), clients=2),
        profile=False,
    )
    args = parser().parse_args(
        ["report", str(run), "--out", str(tmp_path / "out"), "--no-qualitative", "--quiet"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed and (tmp_path / "out" / "report.html").exists()


def test_report_command_rejects_a_missing_folder(tmp_path, capsys):
    args = parser().parse_args(
        ["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]
    )
    assert args.func(args) == 2
    assert "no such run folder" in capsys.readouterr().err
