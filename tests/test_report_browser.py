"""The HTML page rendered in headless Chromium is not blank (skipped without chromium)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.reports.build import build_report

_spec = importlib.util.spec_from_file_location(
    "report_make_runs", Path(__file__).parent / "fixtures" / "report" / "make_runs.py"
)
make_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_runs)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it in .ci/run)")
def test_html_page_renders_in_headless_chromium(tmp_path):
    run = make_runs.write_run(
        tmp_path / "run", make_runs.make_rows(modes=("local",), n_values=(1, 4), clients=2)
    )
    page = build_report([run], tmp_path / "out", quiet=True, qualitative=False).files["html"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200)
    assert (
        pixels.var() > 100 and (pixels < 128).mean() > 0.005
    )  # text and figures, not a blank page
