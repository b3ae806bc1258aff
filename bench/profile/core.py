"""``bench profile``: throughput, step-time split, FLOPs, memory and bytes per round.

``run_profile`` measures, in one process and one device set-up:

- the device's dense fp32 matmul peak (best of several ``torch.mm``), before
  and after the steps, the better of the two being the reference;
- each method's pretraining step, the fine-tuning step and inference;
- the samplers' throughput against the steps' consumption;

and returns a ``ProfileResult`` whose ``frame`` is one tidy row per step
(see ``COLUMNS``). ``write`` stores it as CSV and JSON stamped with the
environment; ``bench.profile.records.load_profile`` reads a folder of them back.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from bench.profile.env import environment, load_average
from bench.profile.records import COLUMNS
from bench.profile.steps import (
    StepResult,
    StepSettings,
    profile_finetune_step,
    profile_inference,
    profile_pretrain_step,
    profile_samplers,
    with_oom_retry,
)
from bench.profile.timing import matmul_peak, summarize
from bench.registry import get_method

PHASES = ("pretrain", "finetune", "inference", "data")


@dataclass
class ProfileResult:
    frame: pd.DataFrame
    environment: dict
    settings: dict
    matmul: dict
    files: list[Path] = field(default_factory=list)

    def write(self, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"profile-{self.settings['profile_id']}"
        csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
        self.frame.to_csv(csv_path, index=False)
        env = self.environment
        document = {
            "device": {
                key: env.get(key)
                for key in (
                    "device",
                    "device_name",
                    "cpu_model",
                    "threads",
                    "torch",
                    "cuda_build",
                    "cuda_runtime",
                    "driver",
                )
                if env.get(key) is not None
            },
            "environment": self.environment,
            "settings": self.settings,
            "matmul_peak": self.matmul,
            "rows": json.loads(self.frame.to_json(orient="records")),
        }
        json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        self.files = [csv_path, json_path]
        return self.files


def derived(
    step_times: list[float], batch: int, flops_per_step: int, peak_flops_per_s: float
) -> dict:
    """The figures computed from the measured ones; they agree with each other by construction:
    ``slices_per_s = batch / step_s``, ``achieved = flops_per_step * steps_per_s``,
    ``peak_ratio = achieved / peak``."""
    summary = summarize(step_times)
    step = summary.median
    steps_per_s = 1.0 / step if step > 0 else math.nan
    achieved = flops_per_step * steps_per_s if flops_per_step else math.nan
    return {
        "step_s": step,
        "step_s_q1": summary.q1,
        "step_s_q3": summary.q3,
        "step_s_iqr": summary.iqr,
        "step_s_min": summary.min,
        "step_s_max": summary.max,
        "repeats": summary.n,
        "steps_per_s": steps_per_s,
        "slices_per_s": batch * steps_per_s,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak_flops_per_s,
        "peak_ratio": achieved / peak_flops_per_s if peak_flops_per_s else math.nan,
    }


def _median(values) -> float:
    return summarize(list(values)).median if values else math.nan


def result_row(
    result: StepResult,
    peak_flops_per_s: float,
    base: dict,
    peak_thread_flops_per_s: float = math.nan,
) -> dict:
    """A ``StepResult`` as a row of ``COLUMNS`` (missing figures NaN)."""
    row = dict.fromkeys(COLUMNS, math.nan)
    row.update(base)
    row.update(
        phase=result.phase,
        method=result.name,
        batch=result.batch,
        flops_per_step=result.flops_per_step or math.nan,
        peak_memory_bytes=result.peak_memory_bytes or math.nan,
        memory_growth_bytes=result.memory_growth_bytes if result.memory_kind else math.nan,
        memory_kind=result.memory_kind or "",
        params=result.params or math.nan,
        trainable_params=result.trainable_params if result.params else math.nan,
        note="; ".join(result.notes),
    )
    row.update(derived(result.step_times, result.batch, result.flops_per_step, peak_flops_per_s))
    row["step_ms"] = 1e3 * row["step_s"]
    if result.memory_kind:
        memory = (
            result.peak_memory_bytes
            if result.memory_kind == "cuda_max_allocated"
            else result.memory_growth_bytes
        )
        row["peak_mem_mb"] = memory / 2**20
    if result.phase == "data":
        for key in ("flops_per_step", "achieved_flops_per_s", "peak_ratio"):
            row[key] = math.nan
    row["achieved_flops"] = row["achieved_flops_per_s"]
    shares = [x for x in result.others_shares if not math.isnan(x)]
    row["others_cpu_share"] = _median(shares)
    threads = [x for x in result.thread_times if not math.isnan(x)]
    if threads and result.phase != "data" and str(base.get("device", "cpu")).startswith("cpu"):
        row["step_thread_s"] = _median(threads)
        row["peak_thread_flops_per_s"] = peak_thread_flops_per_s
        if result.flops_per_step:
            row["achieved_thread_flops_per_s"] = result.flops_per_step / row["step_thread_s"]
            row["peak_ratio_thread"] = row["achieved_thread_flops_per_s"] / peak_thread_flops_per_s
    s = result.sections
    row["forward_s"] = _median(s.get("forward", []))
    if "backward" in s:
        row["backward_s"] = _median(s["backward"])
        row["optimizer_s"] = _median(
            [
                a + b
                for a, b in zip(
                    s.get("zero_grad", [0.0] * len(s["optimizer"])), s["optimizer"], strict=False
                )
            ]
        )
    if "after_step" in s:
        row["after_step_s"] = _median(s["after_step"])
    payload_out, payload_in = _median(s.get("payload_out", [])), _median(s.get("payload_in", []))
    row["payload_out_s"], row["payload_in_s"] = payload_out, payload_in
    if result.phase == "pretrain":
        per_round = sum(x for x in (payload_out, payload_in) if not math.isnan(x))
        row["extras_per_step_s"] = row["after_step_s"] + per_round / max(
            1, result.extra.get("local_steps", 1)
        )
    if "bytes_weights" in result.extra and result.phase == "pretrain":
        row["bytes_weights"] = result.extra["bytes_weights"]
        row["bytes_payload"] = result.extra["bytes_payload"]
        row["bytes_per_round"] = result.extra["bytes_weights"] + result.extra["bytes_payload"]
    return row


def attach_data_pipeline(frame: pd.DataFrame) -> pd.DataFrame:
    """Sampler throughput against each step's consumption; a step whose sampler is slower is
    data-bound.

    The training loops sample synchronously, between steps, so ``data_ratio`` (sampler slices/s
    over step slices/s) below 1 means the data takes longer than the model.
    """
    frame = frame.copy()
    frame["data_bound"] = frame["data_bound"].astype(object)
    rates = frame[frame.phase == "data"].set_index("method")["slices_per_s"]
    consumers = {"pretrain": "pretrain_sampler", "finetune": "finetune_sampler"}
    for phase, sampler in consumers.items():
        if sampler not in rates:
            continue
        rows = frame.phase == phase
        frame.loc[rows, "data_slices_per_s"] = rates[sampler]
        frame.loc[rows, "data_ratio"] = rates[sampler] / frame.loc[rows, "slices_per_s"]
        frame.loc[rows, "data_bound"] = [bool(r < 1.0) for r in frame.loc[rows, "data_ratio"]]
        consuming = frame.loc[rows, "slices_per_s"]
        if len(consuming):
            data_row = (frame.phase == "data") & (frame.method == sampler)
            # The most demanding consumer: the fastest step of that phase.
            frame.loc[data_row, "consumer_slices_per_s"] = consuming.max()
            frame.loc[data_row, "data_ratio"] = rates[sampler] / consuming.max()
            frame.loc[data_row, "data_bound"] = bool(rates[sampler] < consuming.max())
    return frame


def _mb(x) -> str:
    return "-" if pd.isna(x) else f"{x / 2**20:.1f}"


def format_table(frame: pd.DataFrame) -> str:
    """The profile as a fixed-width table (times in ms, FLOP/s in GFLOP/s, memory in MiB)."""

    def ms(x):
        return "-" if pd.isna(x) else f"{1e3 * x:.1f}"

    def num(x, fmt="{:.1f}"):
        return "-" if pd.isna(x) else fmt.format(x)

    table = pd.DataFrame(
        {
            "phase": frame.phase,
            "method": frame.method,
            "batch": frame.batch,
            "step ms": frame.step_s.map(ms),
            "IQR ms": frame.step_s_iqr.map(ms),
            "slices/s": frame.slices_per_s.map(num),
            "fwd ms": frame.forward_s.map(ms),
            "bwd ms": frame.backward_s.map(ms),
            "opt ms": frame.optimizer_s.map(ms),
            "extra ms": frame.after_step_s.map(ms),
            "pay out/in ms": [
                f"{ms(a)}/{ms(b)}" if not (pd.isna(a) and pd.isna(b)) else "-"
                for a, b in zip(frame.payload_out_s, frame.payload_in_s, strict=False)
            ],
            "GFLOP/step": (frame.flops_per_step / 1e9).map(lambda x: num(x, "{:.2f}")),
            "GFLOP/s": (frame.achieved_flops_per_s / 1e9).map(num),
            "% peak": (100 * frame.peak_ratio).map(num),
            "% peak thr": (100 * frame.peak_ratio_thread).map(num),
            "others %": (100 * frame.others_cpu_share).map(lambda x: num(x, "{:.0f}")),
            # CUDA: the allocator's peak; CPU: the peak growth of the process's RSS.
            "mem MiB": [
                _mb(p) if k == "cuda_max_allocated" else _mb(g)
                for p, g, k in zip(
                    frame.peak_memory_bytes,
                    frame.memory_growth_bytes,
                    frame.memory_kind,
                    strict=False,
                )
            ],
            "params": frame.params.map(lambda x: num(x, "{:,.0f}")),
            "MiB/round": frame.bytes_per_round.map(
                lambda x: "-" if pd.isna(x) else f"{x / 2**20:.2f}"
            ),
            "data x": frame.data_ratio.map(lambda x: num(x, "{:.1f}")),
            "note": [
                ("DATA-BOUND " if b is True else "") + (n if isinstance(n, str) else "")
                for b, n in zip(frame.data_bound, frame.note, strict=False)
            ],
        }
    )
    return table.to_string(index=False)


def run_profile(
    methods: list[str],
    config: dict,
    settings: StepSettings,
    *,
    phases: tuple[str, ...] = PHASES,
    batch: int | None = None,
    preset: str | None = None,
    matmul_size: int | None = None,
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> ProfileResult:
    """Profiles ``methods`` (and the fine-tuning/inference steps and samplers) under ``config``.

    ``batch``: slices per step for every phase (pretraining rounds it down to
    whole volumes of ``pretrain.partitions`` slices); default the config's
    (``volumes_per_batch x partitions``, ``finetune.batch_size``) and 32 for
    inference (``predict_volume``'s batch).
    """
    threads = torch.get_num_threads()
    if config["run"]["threads"]:
        torch.set_num_threads(int(config["run"]["threads"]))
    try:
        return _run_profile(
            methods,
            config,
            settings,
            phases=phases,
            batch=batch,
            preset=preset,
            matmul_size=matmul_size,
            log=log,
        )
    finally:
        torch.set_num_threads(threads)


def _run_profile(
    methods, config, settings, *, phases, batch, preset, matmul_size, log
) -> ProfileResult:
    device = torch.device(settings.device)
    partitions = config["pretrain"]["partitions"]
    volumes = max(1, batch // partitions) if batch else config["pretrain"]["volumes_per_batch"]
    finetune_batch = batch or config["finetune"]["batch_size"]
    inference_batch = batch or 32
    env = environment(device)
    profile_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = {
        "profile_id": profile_id,
        "timestamp": env["timestamp"],
        "preset": preset or "default",
        "device": str(device),
        "device_name": env["device_name"],
        "threads": torch.get_num_threads(),
        "amp": settings.amp,
        "channels_last": settings.channels_last,
        "compile": settings.compile,
        "norm_impl": settings.norm_impl,
        "image_size": config["data"]["preprocess"]["size"],
        "malloc_tuned": bool(
            env.get("malloc_tuned") or env.get("malloc_env") or env.get("preloaded_allocator")
        ),
    }
    log(
        f"profile {profile_id}: device {device} ({env['device_name']}), {torch.get_num_threads()} "
        "threads, "
        f"load average {env['load_average']}"
    )
    before = matmul_peak(device, size=matmul_size)
    log(f"fp32 matmul peak (n={before['size']}): {before['flops_per_s'] / 1e9:.1f} GFLOP/s")

    results: list[StepResult] = []
    if "pretrain" in phases:
        for name in methods:
            if not get_method(name).needs_pretraining:
                log(f"{name}: no pretraining step (skipped)")
                continue
            log(f"pretrain step: {name}")
            results.append(
                with_oom_retry(
                    lambda v, name=name: profile_pretrain_step(
                        name, config, settings, volumes_per_batch=v
                    ),
                    volumes,
                    device,
                    log=log,
                )
            )
    if "finetune" in phases:
        log("fine-tuning step")
        results.append(
            with_oom_retry(
                lambda b: profile_finetune_step(config, settings, batch=b),
                finetune_batch,
                device,
                log=log,
            )
        )
    if "inference" in phases:
        log("inference")
        results.append(
            with_oom_retry(
                lambda b: profile_inference(config, settings, batch=b),
                inference_batch,
                device,
                log=log,
            )
        )
    if "data" in phases:
        log("samplers")
        results.extend(
            profile_samplers(
                config, settings, volumes_per_batch=volumes, finetune_batch=finetune_batch
            )
        )

    after = matmul_peak(device, size=matmul_size)
    log(f"fp32 matmul peak again: {after['flops_per_s'] / 1e9:.1f} GFLOP/s")
    busy = [x for x in (before["others_cpu_share"], after["others_cpu_share"]) if not math.isnan(x)]
    if busy and max(busy) > 0.2:
        log(
            f"note: other processes used {100 * max(busy):.0f}% of the CPU while measuring; wall "
            "times are "
            "inflated -- see the *_thread columns (busiest-thread run time), and run with "
            "OMP_WAIT_POLICY=PASSIVE on a shared machine"
        )
    peak = max(before["flops_per_s"], after["flops_per_s"])
    peak_thread = max(before["thread_flops_per_s"], after["thread_flops_per_s"])
    frame = pd.DataFrame([result_row(r, peak, base, peak_thread) for r in results], columns=COLUMNS)
    frame = attach_data_pipeline(frame)
    env["load_average_end"] = load_average()
    settings_doc = {
        **base,
        "methods": methods,
        "phases": list(phases),
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "volumes_per_batch": volumes,
        "partitions": partitions,
        "finetune_batch": finetune_batch,
        "inference_batch": inference_batch,
        "model": config["model"],
        "config_preset": config.get("preset"),
    }
    matmul = {
        "before": before,
        "after": after,
        "peak_flops_per_s": peak,
        "peak_thread_flops_per_s": peak_thread,
    }
    return ProfileResult(frame=frame, environment=env, settings=settings_doc, matmul=matmul)
