"""Builds the example method of docs/ADDING_A_METHOD.md and trains it through the engine."""

import re
from pathlib import Path

import numpy as np

from bench import registry
from bench.config import load_config
from bench.federated.engine import run_in_process
from bench.pretrain import PretrainTask

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "ADDING_A_METHOD.md"


def test_the_guides_example_registers_and_trains(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL).group(1)
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    exec(
        compile(code, str(GUIDE), "exec"), {"__name__": "bench.methods.denoise_example"}
    )  # the guide's own code
    assert "denoise_example" in registry._METHODS

    monkeypatch.setattr(registry, "_import_all_methods", lambda: None)
    config = load_config("tiny", ["pretrain.rounds=2", "pretrain.local_steps=3"])
    rng = np.random.default_rng(0)
    volumes = [[rng.random((6, 64, 64), dtype=np.float32) for _ in range(2)] for _ in range(2)]
    task = PretrainTask(
        config=config, method="denoise_example", seed=0, work_dir=tmp_path, client_volumes=volumes
    )
    final = run_in_process(task)
    losses = [m["loss_mean"] for entry in final["history"] for m in entry["train"].values()]
    assert len(losses) == 4 and all(np.isfinite(losses))
    parts = task.pretrained_parts(final)
    assert set(parts[0]) == {"encoder", "decoder"}
