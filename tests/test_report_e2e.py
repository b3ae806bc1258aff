"""End to end: tiny synthetic ACDC pretraining, HVSMR-layout transfer fine-tuning, then `bench
report`."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

SMALL = [
    "--preset",
    "tiny",
    "--methods",
    "simclr,random",
    "--no-progress",
    "--n-values",
    "1",
    "--folds",
    "1",
    "--modes",
    "local",
    "--set",
    "pretrain.rounds=1",
    "--set",
    "pretrain.local_steps=2",
    "--set",
    "finetune.rounds=1",
    "--set",
    "finetune.local_steps=2",
    "--set",
    "data.synthetic.train=6",
    "--set",
    "data.synthetic.test=2",
    "--set",
    "model.widths=[4,8]",
]


def bench(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def report(run_dirs, out) -> None:
    from bench import cli

    parser = cli.build_parser()
    hooked = any("report" in (getattr(action, "choices", None) or {}) for action in parser._actions)
    if hooked:
        assert cli.main(["report", *map(str, run_dirs), "--out", str(out), "--quiet"]) == 0
    else:  # until bench/cli.py calls add_report_command
        import argparse

        from bench.reports.cli import add_report_command

        root = argparse.ArgumentParser(prog="bench")
        add_report_command(root.add_subparsers(dest="command", required=True))
        args = root.parse_args(["report", *map(str, run_dirs), "--out", str(out), "--quiet"])
        assert args.func(args) == 0


@pytest.mark.slow
def test_pretrain_transfer_and_report(tmp_path):
    acdc, hvsmr, out = tmp_path / "acdc", tmp_path / "hvsmr", tmp_path / "report"
    bench("run", *SMALL, "--clients", "2", "--out", str(acdc))
    bench(
        "run",
        *SMALL,
        "--clients",
        "1",
        "--out",
        str(hvsmr),
        "--set",
        "data.synthetic.layout=hvsmr",
        "--set",
        f"pretrain.from_run={acdc}",
    )
    report([acdc, hvsmr], out)

    page = (out / "report.html").read_text()
    slugs = [p.stem for p in (out / "tables").glob("dice-*.csv")]
    assert any(s.startswith("dice-acdc-local-tiny-") for s in slugs)
    transfer = next(
        s for s in slugs if s.startswith("dice-hvsmr-from-acdc-local-tiny-") and s.count("-") == 6
    )
    table = pd.read_csv(out / "tables" / f"{transfer}.csv", keep_default_na=False)
    assert list(table.columns) == ["Method", "M=1", "M=2", "M=4", "M=8"]
    assert set(table["Method"]) == {"Random init", "SimCLR"}
    assert {"qualitative-acdc-local-n1", "qualitative-hvsmr-local-n1", "pretrain-loss-acdc"} <= {
        p.stem for p in (out / "figures").glob("*.png")
    }
    assert str(acdc) in page and "published (Wu et al. 2021)" in page

    rows = pd.concat([pd.read_csv(p) for p in sorted((hvsmr / "results").glob("*.csv"))])
    assert set(rows["pretrain_dataset"]) == {"acdc"} and set(rows["dataset"]) == {"hvsmr"}
    volume = rows.groupby(["method", "client", "fold", "patient", "phase"])["dice"].mean()
    client = (
        volume.groupby(["method", "client", "fold"]).mean().groupby(["method", "client"]).mean()
    )
    expected = client.groupby("method").mean()
    summary = pd.read_csv(out / "summary.csv")
    got = summary[summary["dataset"] == "hvsmr"].set_index("variant")["mean"]
    for method, value in expected.items():
        assert got[method] == pytest.approx(value)
