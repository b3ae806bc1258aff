"""``bench run --dry-run``: the plan's step counts, the projection from a recorded profile."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.cli import main
from bench.config import load_config
from bench.projection import SLICES_PER_VOLUME, plan_run, project


def _profile(folder, device: str, size: int, pretrain_s: float, finetune_s: float):
    folder.mkdir(parents=True)
    rows = [
        {
            "profile_id": "20260101-000000",
            "phase": "pretrain",
            "method": "simclr",
            "batch": 16,
            "step_s": pretrain_s,
        },
        {
            "profile_id": "20260101-000000",
            "phase": "finetune",
            "method": "unet",
            "batch": 4,
            "step_s": finetune_s,
        },
    ]
    for row in rows:
        row.update(device=device, device_name="recorded device", image_size=size)
    pd.DataFrame(rows).to_csv(folder / "profile-20260101-000000.csv", index=False)
    return folder


def test_plan_counts_rounds_local_steps_and_clients():
    config = load_config(
        "tiny",
        [
            "split.clients=3",
            "run.seeds=[0,1]",
            "split.folds=2",
            "pretrain.local_steps=5",
            "finetune.local_steps=20",
        ],
    )
    plans = {(p.phase, p.method): p for p in plan_run(config, ["simclr", "random"])}
    pre, fine = config["pretrain"], config["finetune"]
    simclr = plans[("pretrain", "simclr")]
    assert simclr.runs == 2 and simclr.clients == 3
    assert simclr.steps == 2 * pre["rounds"] * pre["local_steps"] * 3
    assert ("pretrain", "random") not in plans  # random init does not pretrain
    units = 2 * len(fine["modes"]) * len(config["split"]["n_values"]) * 2
    assert plans[("finetune", "random")].runs == units
    assert plans[("finetune", "random")].steps_per_run == fine["rounds"] * fine["local_steps"] * 3


def test_budgets_in_epochs_are_estimated_from_slices_per_volume():
    config = load_config("tiny", ["split.clients=2"])  # tiny: 12 training patients, ED only
    plans = {(p.phase, p.method): p for p in plan_run(config, ["simclr"])}
    pre, fine = config["pretrain"], config["finetune"]
    pool = 6 * SLICES_PER_VOLUME  # 6 patients per client, one frame each
    assert plans[("pretrain", "simclr")].local_steps == math.ceil(
        pre["epochs_per_round"] * pool / (pre["volumes_per_batch"] * pre["partitions"])
    )
    labeled = max(config["split"]["n_values"]) * SLICES_PER_VOLUME
    assert plans[("finetune", "simclr")].local_steps == math.ceil(
        fine["epochs_per_round"] * labeled / fine["batch_size"]
    )


def test_projection_uses_the_recorded_profile_scaled_to_the_batch(tmp_path):
    config = load_config("tiny", ["finetune.batch_size=8"])
    folder = _profile(tmp_path / "p", "cpu", config["data"]["preprocess"]["size"], 0.5, 0.1)
    result = project(config, ["simclr"], profile_paths=[folder])
    by_phase = {e["plan"].phase: e for e in result["entries"]}
    assert by_phase["pretrain"]["step"].seconds == pytest.approx(0.5)
    assert by_phase["finetune"]["step"].seconds == pytest.approx(0.2)  # batch 4 -> 8
    plan = by_phase["pretrain"]["plan"]
    assert by_phase["pretrain"]["hours"] == pytest.approx(0.5 * plan.steps / 3600)
    assert result["device"] == "cpu" and not result["notes"]


def test_a_cuda_config_gets_gpu_hours_only_from_a_cuda_profile(tmp_path):
    config = load_config("tiny", ["run.device=cuda"])
    size = config["data"]["preprocess"]["size"]
    cpu = _profile(tmp_path / "cpu", "cpu", size, 0.5, 0.1)
    result = project(config, ["simclr"], profile_paths=[cpu])
    assert result["device"] == "cpu" and "no GPU hours" in result["notes"][0]
    gpu = _profile(tmp_path / "gpu", "cuda:0", size, 0.05, 0.01)
    result = project(config, ["simclr"], profile_paths=[cpu, gpu])
    assert result["device"] == "cuda"
    assert result["entries"][0]["step"].seconds == pytest.approx(0.05)


def test_cli_dry_run_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = load_config("tiny", [])
    folder = _profile(tmp_path / "p", "cpu", config["data"]["preprocess"]["size"], 0.5, 0.1)
    code = main(
        [
            "run",
            "--dry-run",
            "--preset",
            "tiny",
            "--methods",
            "simclr",
            "--device",
            "cuda",
            "--profile",
            str(folder),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "fine-tuning units" in out and "projected:" in out and "this CPU" in out
    assert not (tmp_path / "runs").exists()
    assert main(["run", "--dry-run", "--methods", "simclr", "--profile", "missing"]) == 2
    assert "bench: error: --profile missing" in capsys.readouterr().err


def _forbid_work(monkeypatch):
    """Makes every way to data or a training step raise: preparing or loading data, building
    the U-Net, a method's step, a backward pass, the step profiler."""
    import torch

    import bench.backbone
    import bench.data
    import bench.profile.steps
    import bench.sampling
    from bench.registry import available_methods

    def forbidden(*args, **kwargs):
        raise AssertionError("the dry run touched data or ran a step")

    for module, name in [
        (bench.data, "prepare_data"),
        (bench.data, "preprocess"),
        (bench.backbone, "build_unet"),
        (bench.profile.steps, "profile_pretrain_step"),
        (bench.profile.steps, "profile_finetune_step"),
        (bench.sampling.SliceStack, "__init__"),
        (torch.Tensor, "backward"),
        (torch.autograd, "backward"),
    ]:
        monkeypatch.setattr(module, name, forbidden)
    for cls in available_methods().values():
        monkeypatch.setattr(cls, "training_step", forbidden)


def test_dry_run_with_a_recorded_profile_touches_no_data_and_runs_no_step(
    tmp_path, monkeypatch, capsys
):
    from bench.registry import available_methods

    monkeypatch.chdir(tmp_path)
    size = load_config("paper", [])["data"]["preprocess"]["size"]
    rows = [
        {"phase": "pretrain", "method": name, "batch": 32, "step_s": 2.0}
        for name, cls in available_methods().items()
        if cls.needs_pretraining
    ] + [{"phase": "finetune", "method": "unet", "batch": 8, "step_s": 0.5}]
    folder = tmp_path / "runs" / "profile-default"
    folder.mkdir(parents=True)
    frame = pd.DataFrame(rows).assign(
        profile_id="20260101-000000", device="cpu", device_name="recorded CPU", image_size=size
    )
    frame.to_csv(folder / "profile-20260101-000000.csv", index=False)
    _forbid_work(monkeypatch)
    # The profile is found in runs/profile-* without --profile.
    assert main(["run", "--dry-run", "--preset", "paper", "--methods", "all"]) == 0
    out = capsys.readouterr().out
    assert "projected:" in out and "incomplete" not in out
    assert out.count("profile 20260101-000000 (recorded CPU)") == len(
        plan_run(load_config("paper", []), list(available_methods()))
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written


def test_dry_run_without_a_profile_guesses_no_time_and_names_the_command(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    _forbid_work(monkeypatch)
    assert main(["run", "--dry-run", "--preset", "tiny", "--methods", "simclr"]) == 0
    out = capsys.readouterr().out
    assert "projected: incomplete" in out and "no time is guessed" in out
    assert "bench profile --preset tiny --device cpu --phases pretrain,finetune" in out
    assert not any(tmp_path.iterdir())


def test_a_profile_recorded_on_a_loaded_machine_gives_its_busiest_thread_time(tmp_path):
    config = load_config("tiny", ["finetune.batch_size=4"])
    folder = _profile(tmp_path / "p", "cpu", config["data"]["preprocess"]["size"], 0.5, 0.1)
    csv = next(folder.glob("*.csv"))
    frame = pd.read_csv(csv).assign(others_cpu_share=[0.8, 0.1], step_thread_s=[0.2, 0.05])
    frame.to_csv(csv, index=False)
    result = project(config, ["simclr"], profile_paths=[folder])
    by_phase = {e["plan"].phase: e["step"] for e in result["entries"]}
    assert by_phase["pretrain"].seconds == pytest.approx(0.2)
    assert "busiest-thread time (others used 80%)" in by_phase["pretrain"].source
    assert by_phase["finetune"].seconds == pytest.approx(0.1)  # idle enough: wall time
