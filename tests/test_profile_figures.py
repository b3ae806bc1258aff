"""The profile's figures agree with each other and with the engine's accounting.

One small profile (a 2-level U-Net at 16 px) is measured once per module and
checked for internal consistency: slices/s = batch / step time, achieved
FLOP/s = FLOPs per step x steps per second, ratio = achieved / peak, bytes per
round = shared tensors' nbytes + payload nbytes. No wall-clock asserts.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.backbone import build_unet
from bench.config import load_config
from bench.federated.serialization import arrays_to_record, record_bytes, state_to_record
from bench.profile import COLUMNS, load_profile, run_profile
from bench.profile.core import attach_data_pipeline, derived
from bench.profile.steps import StepSettings, profile_pretrain_step, tensor_bytes
from bench.registry import get_method

# One thread: on a machine shared with other jobs, two OpenMP threads on two cores wait on
# each other; the figures checked here do not depend on speed.
SMALL = [
    "run.threads=1",
    "model.widths=[4,8]",
    "data.preprocess.size=16",
    "pretrain.volumes_per_batch=2",
    "pretrain.local_steps=3",
    "finetune.batch_size=2",
    "split.clients=3",
]


@pytest.fixture(scope="module")
def config():
    return load_config("tiny", SMALL)


@pytest.fixture(scope="module")
def profile(config):
    settings = StepSettings(warmup=0, repeats=2)
    return run_profile(
        ["simclr", "fcl", "random"],
        config,
        settings,
        preset="tiny",
        matmul_size=96,
        log=lambda text: None,
    )


def test_rows_and_columns(profile):
    frame = profile.frame
    assert list(frame.columns) == COLUMNS
    assert set(zip(frame.phase, frame.method, strict=False)) == {
        ("pretrain", "simclr"),
        ("pretrain", "fcl"),
        ("finetune", "unet"),
        ("inference", "unet"),
        ("data", "pretrain_sampler"),
        ("data", "finetune_sampler"),
        ("data", "pretrain_augment"),
    }
    assert (frame.step_s > 0).all()
    assert (frame[frame.phase != "data"].repeats == 2).all()
    assert profile.environment["torch"] == torch.__version__
    assert profile.environment["threads"] == 1  # the config's run.threads, restored afterwards
    assert profile.environment["cpu_model"]


def test_figures_agree(profile):
    frame = profile.frame
    peak = profile.matmul["peak_flops_per_s"]
    assert peak == max(
        profile.matmul["before"]["flops_per_s"], profile.matmul["after"]["flops_per_s"]
    )
    np.testing.assert_allclose(frame.slices_per_s, frame.batch / frame.step_s, rtol=1e-12)
    np.testing.assert_allclose(frame.steps_per_s, 1 / frame.step_s, rtol=1e-12)
    models = frame[frame.phase != "data"]
    assert (models.flops_per_step > 0).all()
    np.testing.assert_allclose(
        models.achieved_flops_per_s, models.flops_per_step * models.steps_per_s, rtol=1e-12
    )
    np.testing.assert_allclose(models.peak_ratio, models.achieved_flops_per_s / peak, rtol=1e-12)
    assert (models.peak_flops_per_s == peak).all()
    # The step is the sum of its sections (medians of sums vs sums of medians differ; bounds hold).
    pre = frame[frame.phase == "pretrain"]
    parts = pre.forward_s + pre.backward_s + pre.optimizer_s + pre.after_step_s
    assert ((parts > 0.5 * pre.step_s) & (parts < 2 * pre.step_s)).all()
    assert (models.memory_kind.isin(["rss_hwm", "rss_sampled"])).all()
    assert (models.memory_growth_bytes >= 0).all()


def test_derived_figures_by_hand():
    row = derived([0.5, 0.25, 1.0], batch=8, flops_per_step=1e9, peak_flops_per_s=1e10)
    assert row["step_s"] == 0.5 and row["slices_per_s"] == 16
    assert row["achieved_flops_per_s"] == 2e9 and row["peak_ratio"] == 0.2


def test_bytes_per_round_are_the_shared_tensors_and_payload(config, profile):
    frame = profile.frame.set_index("method")
    for name in ("simclr", "fcl"):
        torch.manual_seed(0)
        method = get_method(name)(
            build_unet(config["model"], out_channels=1), {}, num_clients=3, client_id=0
        )
        shared = method.shared_state()
        assert frame.loc[name, "bytes_weights"] == sum(
            v.numel() * v.element_size() for v in shared.values()
        )
        # What the strategy records as bytes_up["weights"].
        assert frame.loc[name, "bytes_weights"] == record_bytes(state_to_record(shared))
        assert (
            frame.loc[name, "bytes_per_round"]
            == frame.loc[name, "bytes_weights"] + frame.loc[name, "bytes_payload"]
        )
    assert frame.loc["simclr", "bytes_payload"] == 0
    # FCL sends its local bank: after 3 steps of 8 slices, 24 features of 128 float32 + int32
    # partitions.
    assert frame.loc["fcl", "bytes_payload"] == 24 * (128 * 4 + 4)
    assert frame.loc["fcl", "payload_out_s"] > 0 and frame.loc["fcl", "payload_in_s"] > 0


def test_payload_bytes_match_the_flower_record(config):
    result = profile_pretrain_step(
        "fcl", config, StepSettings(warmup=0, repeats=1), volumes_per_batch=2
    )
    torch.manual_seed(0)
    method = get_method("fcl")(build_unet(config["model"], out_channels=1), {}, num_clients=3)
    method.enqueue(torch.randn(24, 128), torch.zeros(24, dtype=torch.long))
    payload = method.outgoing_payload()
    assert (
        result.extra["bytes_payload"]
        == tensor_bytes(payload)
        == record_bytes(arrays_to_record(payload))
    )


def test_data_pipeline_flags_a_slow_sampler():
    rows = []
    for phase, method, rate in [
        ("pretrain", "a", 100.0),
        ("pretrain", "b", 50.0),
        ("finetune", "unet", 10.0),
        ("data", "pretrain_sampler", 80.0),
        ("data", "finetune_sampler", 60.0),
    ]:
        row = dict.fromkeys(COLUMNS, math.nan)
        row.update(phase=phase, method=method, slices_per_s=rate)
        rows.append(row)
    frame = attach_data_pipeline(pd.DataFrame(rows, columns=COLUMNS)).set_index("method")
    assert frame.loc["a", "data_bound"] is True and frame.loc["b", "data_bound"] is False
    assert frame.loc["a", "data_ratio"] == pytest.approx(0.8)
    assert frame.loc["pretrain_sampler", "consumer_slices_per_s"] == 100.0
    assert frame.loc["pretrain_sampler", "data_bound"] is True
    assert frame.loc["finetune_sampler", "data_ratio"] == pytest.approx(6.0)
    assert frame.loc["finetune_sampler", "data_bound"] is False


def test_written_files_load_back_for_reports(profile, tmp_path):
    run = tmp_path / "run"
    files = profile.write(run / "profile")
    assert [f.suffix for f in files] == [".csv", ".json"]
    loaded = load_profile(run)
    assert len(loaded) == len(profile.frame)
    assert list(loaded.columns) == COLUMNS
    # A second profile of the same steps supersedes the first unless all rows are asked for.
    later = profile.frame.copy()
    later["profile_id"] = "99999999-999999"
    later.to_csv(run / "profile" / "profile-99999999-999999.csv", index=False)
    assert (load_profile(run).profile_id == "99999999-999999").all()
    assert len(load_profile(run / "profile", latest_only=False)) == 2 * len(profile.frame)
    assert load_profile(tmp_path / "missing").empty


def test_cli_writes_csv_json_and_prints_a_table(tmp_path, capsys):
    from bench.profile.cli import add_profile_command

    parser = argparse.ArgumentParser(prog="bench")
    add_profile_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            "profile",
            "--methods",
            "moco",
            "--threads",
            "1",
            "--preset",
            "tiny",
            "--size",
            "16",
            "--set",
            "model.widths=[4,8]",
            "--batch",
            "8",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--amp",
            "bf16",
            "--channels-last",
            "--phases",
            "pretrain,data",
            "--matmul-size",
            "64",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "moco" in printed and "fp32 matmul peak" in printed
    frame = load_profile(out)
    assert set(frame.phase) == {"pretrain", "data"}
    row = frame[frame.phase == "pretrain"].iloc[0]
    assert row.amp == "bf16" and bool(row.channels_last) and row.batch == 8 and row.image_size == 16
