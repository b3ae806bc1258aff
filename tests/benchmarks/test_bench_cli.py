"""CLI start-up: `bench --help` and `bench run --help` in a fresh interpreter (target: < 1 s).

Each round starts a new process, as a user's shell does; the import of torch, MONAI and
the profiler is deferred to the commands that need them (bench/cli.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]], ids=["help", "run-help"])
def test_cli_startup(benchmark, argv):
    command = [sys.executable, "-m", "bench.cli", *argv]
    result = benchmark.pedantic(
        subprocess.run,
        args=(command,),
        kwargs={"capture_output": True, "text": True, "check": True},
        rounds=5,
        warmup_rounds=1,
    )
    assert "examples:" in result.stdout
