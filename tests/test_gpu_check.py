"""scripts/gpu_check.sh on the CPU (--device cpu --quick): every step runs or says it is skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_skips_the_gpu_only_steps(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"},
        timeout=1800,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for gpu_only in (
        "bf16 matmul peak",
        "profile: compile and channels_last on",
        "Flower simulation, 4 clients on one GPU",
    ):
        assert f"== {gpu_only}: skipped (GPU only; --device cpu)" in out
    for ran in ("profile: compile and channels_last off", "tiny bench run end to end"):
        assert f"== {ran}: ok" in out
    assert "MFU skipped (GPU only)" in out and "pretrain  simclr" in out
    assert list((tmp_path / "profile-off").glob("profile-*.csv"))
    assert (tmp_path / "run-tiny" / "results").exists() or list((tmp_path / "run-tiny").iterdir())


def test_gpu_check_refuses_an_unknown_device():
    done = subprocess.run(
        ["bash", str(SCRIPT), "--device", "tpu"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--device must be cuda or cpu" in done.stderr
