"""docs/API.md's example, end to end on the tiny preset; the exported encoder in a fresh
process equals bench's own model; `bench run` logs stay plain text when redirected."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def blocks() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "API.md").read_text()
    return re.findall(r"```(python|sh)\n(.*?)```", text, re.DOTALL)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The documented example, run block after block in one folder."""
    folder = tmp_path_factory.mktemp("api-example")
    outputs = []
    for language, code in blocks():
        if language == "python":
            outputs.append(run([sys.executable, "-c", code], folder))
        else:
            for line in code.strip().splitlines():
                assert line.startswith("bench "), line
                outputs.append(run([sys.executable, "-m", "bench.cli", *line.split()[1:]], folder))
    return folder, outputs


def test_the_documented_example_runs_and_returns_tidy_rows(example):
    folder, outputs = example
    assert len(outputs) == 3
    assert "fcl" in outputs[0].stdout and "N=1" in outputs[0].stdout
    assert (folder / "fcl-encoder.safetensors").is_file()
    assert (folder / "fcl-encoder.json").is_file()
    assert "features:" in outputs[2].stdout


def test_exported_encoder_in_a_fresh_process_equals_benchs_own_model(example, tmp_path):
    import yaml

    from bench.backbone import build_unet
    from bench.config import as_config
    from bench.registry import get_method
    from bench.runner import Runner

    folder, _ = example
    run_dir = folder / "runs" / "api-example"
    config = as_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    runner = Runner(config, run_dir, progress=False)
    fcl = get_method("fcl")
    parts = runner.tasks.read_pretrained(run_dir / "pretrained" / "fcl-seed0.safetensors", fcl)
    own = build_unet(config["model"], out_channels=1).encoder
    own.load_state_dict(parts[0]["encoder"])
    batch = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "batch.npy", batch.numpy())
    probe = f"""
import numpy as np, torch
from bench import load_pretrained
encoder = load_pretrained({str(folder / "fcl-encoder.safetensors")!r}, part="encoder").eval()
with torch.no_grad():
    features = encoder(torch.from_numpy(np.load({str(tmp_path / "batch.npy")!r})))
np.savez({str(tmp_path / "theirs.npz")!r}, *[f.numpy() for f in features])
"""
    run([sys.executable, "-c", probe], tmp_path)
    theirs = np.load(tmp_path / "theirs.npz")
    with torch.no_grad():
        mine = [f.numpy() for f in own.eval()(batch)]
    assert len(theirs.files) == len(mine) == len(config["model"]["widths"])
    for k, features in enumerate(mine):
        np.testing.assert_allclose(theirs[f"arr_{k}"], features, rtol=0, atol=1e-6)
    fresh = build_unet(config["model"], out_channels=1).encoder.eval()
    with torch.no_grad():
        assert not np.allclose(fresh(batch)[-1].numpy(), mine[-1])  # not random init


def test_redirected_run_logs_plain_lines_and_quiet_prints_only_the_table(example):
    folder, _ = example
    overrides = re.findall(r'"([a-z_.]+=[^"]+)"', blocks()[0][1])
    args = [sys.executable, "-m", "bench.cli", "run", "--methods", "random", "--preset", "tiny"]
    args += ["--out", "runs/api-example"] + [f"--set={o}" for o in overrides]
    logged = run(args, folder)  # one more method into the same folder: same config
    assert "\x1b" not in logged.stderr and "\r" not in logged.stderr
    assert re.search(r"unit 1/1 done: random local N=1 fold 0", logged.stderr)
    quiet = run([*args, "--quiet"], folder)
    assert quiet.stderr == "" and "random" in quiet.stdout and "fcl" not in quiet.stdout
