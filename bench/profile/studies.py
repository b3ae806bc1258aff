"""The measurements behind docs/PERFORMANCE.md (``bench profile --study ...``).

- ``unet_study``: what keeps the U-Net's training step below the fp32 matmul
  peak, and which settings raise it (variants measured paired with the peak);
- ``engine_overhead_study``: K-client federated pretraining against the same
  number of optimiser steps on one client, with a cProfile breakdown;
- ``client_state_study``: how much state a client keeps (memory and disk)
  and what K clients need.

A machine shared with other jobs makes wall-clock times drift; each
timing here is paired with a matmul timing taken right before it, so the
ratio compares the two under the same load, and both the paired and the
conventional ratio (median step vs best matmul of the run) are reported.
"""

from __future__ import annotations

import contextlib
import copy
import cProfile
import io
import math
import os
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.backbone import build_unet
from bench.profile.env import environment, load_average
from bench.profile.flops import conv2d_flops, count_flops
from bench.profile.memory import PeakMemory, current_rss
from bench.profile.steps import (
    StepSettings,
    compile_blocks,
    instance_to_group_norm,
    synthetic_volumes,
    tensor_bytes,
)
from bench.profile.timing import Contention, summarize

# ---------------------------------------------------------------- paired timing


def paired_timing(
    step: Callable[[], object],
    flops: int,
    *,
    repeats: int = 4,
    mm_size: int = 2048,
    mm_calls: int = 3,
    quiet_share: float = 0.1,
) -> dict:
    """Alternates a matmul measurement with one timed step, ``repeats`` times.

    Per repeat: wall time, CPU time and busiest-thread run time of the step
    and of ``mm_calls`` fp32 ``torch.mm`` of side ``mm_size``, and the share of
    the machine other processes used meanwhile (``Contention``). Ratios
    (achieved FLOP/s of the step over the matmul's FLOP/s):

    - ``ratio``: median step wall time against the best matmul wall time of the
      measurement (the profile's definition);
    - ``ratio_paired``: per repeat, against the matmul measured just before it;
      median over repeats;
    - ``ratio_quiet``: ``ratio_paired`` over the repeats where other processes
      used less than ``quiet_share`` of the machine (NaN if none);
    - ``ratio_thread``: with busiest-thread run times instead of wall times,
      per repeat, median: what the ratio is on an idle machine, estimated on a
      busy one (time slices given to other processes do not count).
    """
    a, b = torch.randn(mm_size, mm_size), torch.randn(mm_size, mm_size)
    out = torch.empty(mm_size, mm_size)
    torch.mm(a, b, out=out)
    mm_flops = 2 * mm_size**3
    pairs = []
    for _ in range(repeats):
        mm_wall, mm_thread, mm_others = math.inf, math.inf, []
        for _ in range(mm_calls):
            with Contention() as load:
                torch.mm(a, b, out=out)
            mm_wall, mm_thread = min(mm_wall, load.wall_s), min(mm_thread, load.busiest_thread_s)
            mm_others.append(load.others_share)
        with Contention() as load:
            step()
        pairs.append(
            {
                "step_s": load.wall_s,
                "step_cpu_s": load.cpu_s,
                "step_thread_s": load.busiest_thread_s,
                "peak": mm_flops / mm_wall,
                "peak_thread": mm_flops / mm_thread,
                "others_step": load.others_share,
                "others_mm": statistics.median(mm_others),
                "preempted": load.involuntary_switches,
            }
        )
    steps = [p["step_s"] for p in pairs]
    summary = summarize(steps)
    best_peak = max(p["peak"] for p in pairs)
    ratios = [flops / p["step_s"] / p["peak"] for p in pairs]
    quiet = [
        r
        for r, p in zip(ratios, pairs, strict=False)
        if max(p["others_step"], p["others_mm"]) < quiet_share
    ]
    thread_ratios = [flops / p["step_thread_s"] / p["peak_thread"] for p in pairs]
    thread_steps = [p["step_thread_s"] for p in pairs]
    return {
        "step_s": summary.median,
        "step_s_iqr": summary.iqr,
        "step_s_min": summary.min,
        "pairs": pairs,
        "peak_best": best_peak,
        "achieved_flops_per_s": flops / summary.median,
        "ratio": flops / summary.median / best_peak,
        "ratio_paired": statistics.median(ratios),
        "ratio_quiet": statistics.median(quiet) if quiet else math.nan,
        "quiet_pairs": len(quiet),
        "step_thread_s": statistics.median(thread_steps),
        "step_thread_s_iqr": summarize(thread_steps).iqr,
        "peak_thread": statistics.median(p["peak_thread"] for p in pairs),
        "ratio_thread": statistics.median(thread_ratios),
        "others_share_median": statistics.median(
            max(p["others_step"], p["others_mm"]) for p in pairs
        ),
    }


def thread_peak(mm_size: int = 2048, calls: int = 5) -> dict:
    """fp32 matmul FLOP/s at the current thread count: best wall time and best busiest-thread
    time."""
    a, b = torch.randn(mm_size, mm_size), torch.randn(mm_size, mm_size)
    out = torch.empty(mm_size, mm_size)
    torch.mm(a, b, out=out)
    wall, thread = math.inf, math.inf
    for _ in range(calls):
        with Contention() as load:
            torch.mm(a, b, out=out)
        wall, thread = min(wall, load.wall_s), min(thread, load.busiest_thread_s)
    flops = 2 * mm_size**3
    return {"wall": flops / wall, "thread": flops / thread}


# ---------------------------------------------------------------- the U-Net study


def _swap(
    module: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if match(child):
            setattr(module, name, make(child))
            count += 1
        else:
            count += _swap(child, match, make)
    return count


def _segmentation_step(config: dict, variant: dict, batch: int, seed: int = 0):
    """(step function, FLOPs per step, model) for the fine-tuning step under ``variant``."""
    from monai.losses import DiceCELoss

    model_cfg = dict(config["model"])
    if variant.get("norm") in ("batch", "group"):
        model_cfg["norm"] = variant["norm"]
    torch.manual_seed(seed)
    model = build_unet(model_cfg, out_channels=4)
    if variant.get("norm") == "none":
        _swap(model, lambda m: isinstance(m, nn.InstanceNorm2d), lambda m: nn.Identity())
    if variant.get("norm_impl") == "group":
        instance_to_group_norm(model)
    if variant.get("act") == "relu":
        _swap(model, lambda m: isinstance(m, nn.LeakyReLU), lambda m: nn.ReLU(inplace=True))
    settings = StepSettings(
        amp=variant.get("amp", "none"), channels_last=variant.get("channels_last", False)
    )
    device = settings.device_settings()
    model = device.module(model)
    size = config["data"]["preprocess"]["size"]
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, size, size, generator=generator)
    labels = torch.randint(0, 4, (batch, 1, size, size), generator=generator)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    criterion = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def forward_backward():
        with device.autocast():
            loss = criterion(model(images), labels)
        loss.backward()

    flops, _ = count_flops(forward_backward)
    optimizer.zero_grad(set_to_none=True)
    if variant.get("compile"):
        compile_blocks(model)

    def step():
        with device.autocast():
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, flops, model


UNET_VARIANTS = [
    {"name": "baseline (instance norm, LeakyReLU, fp32, NCHW)"},
    {"name": "channels_last", "channels_last": True},
    {"name": "norm: GroupNorm(C, C) kernel (identical function)", "norm_impl": "group"},
    {"name": "norm: GroupNorm(C, C) + channels_last", "norm_impl": "group", "channels_last": True},
    {"name": "attribution: no normalisation", "norm": "none"},
    {"name": "attribution: batch norm", "norm": "batch"},
    {"name": "attribution: ReLU instead of LeakyReLU", "act": "relu"},
    {"name": "bf16 autocast", "amp": "bf16"},
    {
        "name": "bf16 autocast + GroupNorm(C, C) + channels_last",
        "amp": "bf16",
        "norm_impl": "group",
        "channels_last": True,
    },
    {"name": "bf16 autocast + GroupNorm(C, C)", "amp": "bf16", "norm_impl": "group"},
    {"name": "threads=1", "threads": 1},
    {"name": "batch / 2", "batch_factor": 0.5},
    {"name": "batch / 2 + GroupNorm(C, C)", "batch_factor": 0.5, "norm_impl": "group"},
    {"name": "batch x2", "batch_factor": 2},
    {"name": "batch x4", "batch_factor": 4},
    {"name": "batch x4 + GroupNorm(C, C)", "batch_factor": 4, "norm_impl": "group"},
    {"name": "torch.compile (per block)", "compile": True},
    {"name": "torch.compile (per block) + GroupNorm(C, C)", "compile": True, "norm_impl": "group"},
]


def op_breakdown(step: Callable[[], object], steps: int = 2) -> dict[str, float]:
    """Share of self CPU time per kind of operator over ``steps`` steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    kinds = {
        "convolution": ("convolution", "conv2d", "conv_transpose"),
        "normalisation": ("batch_norm", "group_norm", "instance_norm", "layer_norm"),
        "activation": ("leaky_relu", "relu", "threshold"),
        "pooling": ("max_pool",),
        "copies (copy_, cat, pad, fill, as_strided)": (
            "copy_",
            "cat",
            "pad",
            "fill_",
            "zero_",
            "as_strided",
            "clone",
            "contiguous",
        ),
        "optimizer (Adam)": (
            "_foreach",
            "addcdiv",
            "addcmul",
            "lerp",
            "sqrt",
            "mul_",
            "add_",
            "div_",
        ),
        "loss (DiceCE)": (
            "softmax",
            "nll_loss",
            "one_hot",
            "scatter",
            "log_softmax",
            "sum",
            "mean",
        ),
    }
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::")
        kind = next((k for k, keys in kinds.items() if any(key in name for key in keys)), "other")
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def conv_layer_efficiency(config: dict, batch: int, repeats: int = 3) -> list[dict]:
    """Achieved FLOP/s of each distinct 3x3 convolution of the U-Net alone (forward + backward),
    timed by busiest-thread run time (best of ``repeats``)."""
    model = build_unet(config["model"], out_channels=4)
    shapes = []

    def hook(module, inputs, output):
        shapes.append((module, tuple(inputs[0].shape)))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    with torch.no_grad():
        model(
            torch.rand(
                1, 1, config["data"]["preprocess"]["size"], config["data"]["preprocess"]["size"]
            )
        )
    for h in handles:
        h.remove()
    rows, seen = [], set()
    for conv, shape in shapes:
        key = (conv.in_channels, conv.out_channels, shape[-1])
        if key in seen:
            continue
        seen.add(key)
        layer = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
        x = torch.rand(
            batch, conv.in_channels, shape[-2], shape[-1], requires_grad=conv.in_channels > 1
        )

        def run(layer=layer, x=x):
            layer(x).sum().backward()

        flops, _ = count_flops(run)
        run()
        best = math.inf
        for _ in range(repeats):
            with Contention() as load:
                run()
            best = min(
                best,
                load.busiest_thread_s if not math.isnan(load.busiest_thread_s) else load.wall_s,
            )
        rows.append(
            {
                "in": conv.in_channels,
                "out": conv.out_channels,
                "side": shape[-1],
                "batch": batch,
                "flops": flops,
                "seconds": best,
                "gflops_per_s": flops / best / 1e9,
                "forward_flops_formula": conv2d_flops(
                    batch, conv.in_channels, conv.out_channels, (3, 3), (shape[-2], shape[-1])
                ),
            }
        )
    return rows


def unet_study(
    config: dict,
    settings: StepSettings | None = None,
    *,
    batch: int | None = None,
    repeats: int = 4,
    variants: list[dict] | None = None,
    breakdown: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Achieved FLOP/s of the U-Net's training step (fine-tuning step: DiceCE, Adam) per variant."""
    batch = batch or config["finetune"]["batch_size"]
    variants = variants or UNET_VARIANTS
    threads = torch.get_num_threads()
    report = {
        "environment": environment("cpu"),
        "batch": batch,
        "model": config["model"],
        "image_size": config["data"]["preprocess"]["size"],
        "variants": [],
    }
    log(
        f"U-Net study: widths {config['model']['widths']}, {report['image_size']} px, batch "
        f"{batch}, "
        f"{threads} threads, load {load_average()}"
    )
    for variant in variants:
        vbatch = max(1, int(batch * variant.get("batch_factor", 1)))
        if variant.get("threads"):
            torch.set_num_threads(variant["threads"])
        try:
            step, flops, _ = _segmentation_step(config, variant, vbatch)
            for _ in range(2 if variant.get("compile") else 1):
                step()  # warm-up (compilation)
            measured = paired_timing(step, flops, repeats=repeats)
        except Exception as error:  # a variant that fails is a finding, not the end
            report["variants"].append(
                {"variant": variant["name"], "error": f"{type(error).__name__}: {error}"[:500]}
            )
            log(
                f"  {variant['name']:55s} failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}"
            )
            continue
        finally:
            torch.set_num_threads(threads)
        entry = {
            "variant": variant["name"],
            **{k: v for k, v in variant.items() if k != "name"},
            "batch": vbatch,
            "flops_per_step": flops,
            **measured,
            "load_average": load_average(),
        }
        if variant.get("threads"):
            # Against the device's peak (all threads), not the one-thread matmul paired with it.
            device = thread_peak()
            entry["ratio_vs_all_threads_peak"] = measured["achieved_flops_per_s"] / device["wall"]
            entry["ratio_thread_vs_all_threads_peak"] = (
                flops / measured["step_thread_s"] / device["thread"]
            )
        report["variants"].append(entry)
        log(
            f"  {variant['name']:55s} step {measured['step_s']:.3f}s  "
            f"{measured['achieved_flops_per_s'] / 1e9:6.1f} GFLOP/s  ratio {measured['ratio']:.1%} "
            " "
            f"paired {measured['ratio_paired']:.1%} quiet {measured['ratio_quiet']:.1%} "
            f"({measured['quiet_pairs']}/{repeats}) | busiest thread "
            f"{measured['step_thread_s']:.3f}s "
            f"ratio {measured['ratio_thread']:.1%} | others {measured['others_share_median']:.0%}"
        )
    if breakdown:
        step, _, _ = _segmentation_step(config, {}, batch)
        step()
        report["op_breakdown_baseline"] = op_breakdown(step)
        step, _, _ = _segmentation_step(config, {"norm_impl": "group"}, batch)
        step()
        report["op_breakdown_groupnorm"] = op_breakdown(step)
        report["conv_layers"] = conv_layer_efficiency(config, batch)
    lines = [
        (
            f"U-Net training step, widths {config['model']['widths']} at {report['image_size']} "
            "px, "
            f"batch {batch} ({threads} threads, {report['environment']['cpu_model']}):"
        ),
        (
            f"{'variant':58s} {'step s':>8s} {'GFLOP/s':>8s} {'%peak':>7s} {'paired':>7s} "
            f"{'quiet':>7s} "
            f"{'thread s':>8s} {'thread':>7s} {'others':>7s}"
        ),
    ]
    for v in report["variants"]:
        if "error" in v:
            lines.append(f"{v['variant']:58s} failed: {v['error'].splitlines()[0][:120]}")
            continue
        lines.append(
            f"{v['variant']:58s} {v['step_s']:8.3f} {v['achieved_flops_per_s'] / 1e9:8.1f} "
            f"{100 * v['ratio']:6.1f}% {100 * v['ratio_paired']:6.1f}% "
            f"{100 * v['ratio_quiet']:6.1f}% "
            f"{v['step_thread_s']:8.3f} {100 * v['ratio_thread']:6.1f}% "
            f"{100 * v['others_share_median']:6.0f}%"
        )
    if breakdown:
        lines.append(
            "self CPU time by operator kind (baseline): "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in report["op_breakdown_baseline"].items())
        )
        lines.append(
            "self CPU time by operator kind (GroupNorm): "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in report["op_breakdown_groupnorm"].items())
        )
        lines.append(
            "3x3 convolutions alone (forward + backward), GFLOP/s: "
            + ", ".join(
                f"{r['in']}->{r['out']}@{r['side']}: {r['gflops_per_s']:.0f}"
                for r in report["conv_layers"]
            )
        )
    report["summary"] = "\n".join(lines)
    return report


# ---------------------------------------------------------------- federated engine overhead


def _engine_config(
    config: dict, rounds: int, local_steps: int, volumes_per_batch: int | None
) -> dict:
    cfg = copy.deepcopy(config)
    cfg["pretrain"]["rounds"] = rounds
    cfg["pretrain"]["local_steps"] = local_steps
    cfg["pretrain"]["setting"] = "federated"
    if volumes_per_batch:
        cfg["pretrain"]["volumes_per_batch"] = volumes_per_batch
    cfg["run"]["device"] = "cpu"
    return cfg


class InMemoryPretrainTask:
    """Mixin for ``PretrainTask``: keeps each client's method and optimiser in memory between
    rounds.

    The change proposed for the in-process engine: ``restore`` takes the live
    objects instead of building the method and reading the previous round's
    state file, and only the last round's state is written to disk (for
    ``pretrained_parts`` and resumption at the end of pretraining). Made
    concrete by ``in_memory_task``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._live: dict[int, tuple[int, object, object]] = {}
        self._current: dict[int, tuple[object, object]] = {}

    def restore(self, client, round_index, shared):
        live = self._live.get(client)
        if live is not None and live[0] == round_index - 1:
            _, method, optimizer = live
            if self.aggregate and shared is not None:
                method.load_state_dict(shared, strict=False)
        else:
            method, optimizer = super().restore(client, round_index, shared)
        self._current[client] = (method, optimizer)
        return method, optimizer

    def save_client_state(self, client, round_index, state):
        method, optimizer = self._current.pop(client)
        self._live[client] = (round_index, method, optimizer)
        if round_index == self.num_rounds - 1:
            super().save_client_state(client, round_index, state)


def in_memory_task(**kwargs):
    from bench.pretrain import PretrainTask

    cls = type("InMemoryPretrainTask", (InMemoryPretrainTask, PretrainTask), {})
    return cls(**kwargs)


# Functions by (file name, function name); None: any file.
PROFILE_GROUPS = {
    "method construction (build_method: U-Net, heads, deep copies)": (
        ("pretrain.py", "build_method"),
    ),
    "optimizer construction": (("pretrain.py", "_optimizer"),),
    "client state load (torch.load)": (("task.py", "load_client_state"),),
    "load_state_dict (method, optimizer, shared weights)": (
        ("module.py", "load_state_dict"),
        ("optimizer.py", "load_state_dict"),
    ),
    "client state save (torch.save + fsync)": (("task.py", "save_client_state"),),
    "Flower records (state_to_record, record_to_state, payload records)": (
        ("records.py", "state_to_record"),
        ("records.py", "record_to_state"),
        ("records.py", "arrays_to_record"),
        ("records.py", "record_to_arrays"),
        ("records.py", "record_bytes"),
    ),
    "FedAvg aggregation": (("strategy.py", "aggregate_train"),),
    "server checkpoint": (("checkpoint.py", "save"), ("checkpoint.py", "finish")),
    "training_step (forward)": ((None, "training_step"),),
    "backward": (("_tensor.py", "backward"),),
    "optimizer step": (("adam.py", "step"),),
    "after_optimizer_step": ((None, "after_optimizer_step"),),
    "sampling": (("sampling.py", "sample"),),
}


def _cumulative(stats: pstats.Stats, needles) -> float:
    """Cumulative time of the functions matching ``needles``, counting only the outermost
    matching frames so that nested matches do not count twice."""
    matches = {}
    for (filename, line, func), (_cc, _nc, _tt, ct, callers) in stats.stats.items():
        base = os.path.basename(filename)
        if any(func == fn and (file is None or base == file) for file, fn in needles):
            matches[(filename, line, func)] = (ct, callers)
    return sum(
        ct
        for ct, callers in matches.values()
        if not (callers and all(c in matches for c in callers))
    )


def _breakdown(profiler: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    out = {label: _cumulative(stats, needles) for label, needles in PROFILE_GROUPS.items()}
    out["total"] = max(ct for (_, _, _), (_, _, _, ct, _) in stats.stats.items())
    return out


COMPUTE_GROUPS = (
    "training_step (forward)",
    "backward",
    "optimizer step",
    "after_optimizer_step",
    "sampling",
)


def attributed_overhead(profiles: dict[str, dict[str, float]], client_rounds: int) -> dict:
    """Engine overhead from the cProfile breakdowns alone: the engine's functions (everything
    but the step's compute) in each run, minus the centralized run's, over the centralized
    run's total. Compute time cancels, so drifts in the machine's speed matter less than
    in the wall-clock comparison."""

    def engine(profile):
        return sum(v for k, v in profile.items() if k not in COMPUTE_GROUPS and k != "total")

    base = profiles["centralized"]
    out = {"centralized": {"engine_s": engine(base), "total_s": base["total"]}}
    for name in ("federated", "in_memory"):
        if name in profiles:
            extra = engine(profiles[name]) - engine(base)
            out[name] = {
                "engine_s": engine(profiles[name]),
                "total_s": profiles[name]["total"],
                "overhead": extra / base["total"],
                "per_client_round_s": extra / client_rounds,
            }
    return out


def _top_functions(profiler: cProfile.Profile, limit: int = 25) -> str:
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(limit)
    return stream.getvalue()


def _run_engine(
    config: dict,
    method: str,
    client_volumes,
    work: Path,
    *,
    in_memory: bool = False,
    profiler: cProfile.Profile | None = None,
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of the engine on ``config``."""
    from bench.federated.engine import run_in_process
    from bench.pretrain import PretrainTask

    shutil.rmtree(work, ignore_errors=True)
    kwargs = {
        "config": config,
        "method": method,
        "seed": 0,
        "work_dir": work,
        "client_volumes": client_volumes,
        "spec": {"kind": "pretrain", "method": method},
    }
    task = in_memory_task(**kwargs) if in_memory else PretrainTask(**kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    with profiler if profiler is not None else contextlib.nullcontext():
        run_in_process(task)
    return time.perf_counter() - start, time.process_time() - cpu


def _bare_loop(
    config: dict, method_name: str, volumes, steps: int, profiler=None
) -> tuple[float, float]:
    """The same number of optimiser steps with no engine: one method, one optimiser, no files."""
    from bench.pretrain import PretrainTask

    task = PretrainTask(
        config=config,
        method=method_name,
        seed=0,
        work_dir=Path(tempfile.gettempdir()),
        client_volumes=[volumes],
    )
    start, cpu = time.perf_counter(), time.process_time()
    with profiler if profiler is not None else contextlib.nullcontext():
        method = task.build_method(0)
        optimizer = task._optimizer(method)
        method.begin_round(0, 1)
        method.train()
        draws = torch.Generator().manual_seed(0)
        vpb = config["pretrain"]["volumes_per_batch"]
        for _ in range(steps):
            batch = task.stacks[0].sample(vpb, draws, 0)
            loss = method.training_step(batch, draws)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_optimizer_step()
    return time.perf_counter() - start, time.process_time() - cpu


def engine_overhead_study(
    config: dict,
    method: str = "simclr",
    *,
    clients: int = 10,
    rounds: int = 3,
    local_steps: int | None = None,
    volumes_per_batch: int | None = None,
    volumes_per_client: int = 10,
    trials: int = 2,
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Wall time of K-client federated pretraining vs the same optimiser steps on one client.

    ``federated``: K clients x R rounds x L local steps through ``run_in_process``.
    ``centralized``: one client holding all K clients' volumes, R rounds x K*L
    local steps, through the same engine. ``bare``: the K*R*L steps in a plain
    loop. ``in_memory``: the federated run with ``InMemoryPretrainTask`` (the
    proposed change). Runs alternate and the fastest of ``trials`` counts; one
    further run of each under cProfile gives the breakdown.
    """
    local_steps = local_steps or config["pretrain"]["local_steps"]
    cfg_fed = _engine_config(config, rounds, local_steps, volumes_per_batch)
    cfg_cen = _engine_config(config, rounds, local_steps * clients, volumes_per_batch)
    size = config["data"]["preprocess"]["size"]
    per_client = [synthetic_volumes(volumes_per_client, 10, size, seed=k) for k in range(clients)]
    everything = [v for vols in per_client for v in vols]
    total_steps = clients * rounds * local_steps
    root = Path(work_dir or tempfile.mkdtemp(prefix="bench-engine-"))
    log(
        f"engine study: {method}, {clients} clients x {rounds} rounds x {local_steps} steps "
        f"({total_steps} steps), widths {config['model']['widths']} at {size} px, load "
        f"{load_average()}"
    )
    runs = {"federated": [], "centralized": [], "in_memory": [], "bare": []}
    for trial in range(trials):
        runs["federated"].append(_run_engine(cfg_fed, method, per_client, root / f"fed{trial}"))
        runs["centralized"].append(_run_engine(cfg_cen, method, [everything], root / f"cen{trial}"))
        runs["in_memory"].append(
            _run_engine(cfg_fed, method, per_client, root / f"mem{trial}", in_memory=True)
        )
        runs["bare"].append(_bare_loop(cfg_fed, method, everything, total_steps))
        log(
            f"  trial {trial} (wall/CPU s): "
            + ", ".join(f"{k} {v[-1][0]:.1f}/{v[-1][1]:.1f}" for k, v in runs.items())
            + f"; load {load_average()}"
        )
    times = {k: [w for w, _ in v] for k, v in runs.items()}
    cpu_times = {k: [c for _, c in v] for k, v in runs.items()}
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpu_times.items()}
    profiles = {}
    tops = {}
    for name, runner in (
        (
            "federated",
            lambda p: _run_engine(cfg_fed, method, per_client, root / "prof-fed", profiler=p),
        ),
        (
            "centralized",
            lambda p: _run_engine(cfg_cen, method, [everything], root / "prof-cen", profiler=p),
        ),
        (
            "in_memory",
            lambda p: _run_engine(
                cfg_fed, method, per_client, root / "prof-mem", in_memory=True, profiler=p
            ),
        ),
    ):
        profiler = cProfile.Profile()
        runner(profiler)
        profiles[name] = _breakdown(profiler)
        tops[name] = _top_functions(profiler)
    attributed = attributed_overhead(profiles, clients * rounds)
    disk = sum(f.stat().st_size for f in (root / "prof-fed").rglob("*") if f.is_file())
    shutil.rmtree(root, ignore_errors=True)
    step_s = best["bare"] / total_steps
    per_client_round = (best["federated"] - best["centralized"]) / (clients * rounds)
    report = {
        "environment": environment("cpu"),
        "method": method,
        "clients": clients,
        "rounds": rounds,
        "local_steps": local_steps,
        "total_steps": total_steps,
        "image_size": size,
        "model": config["model"],
        "volumes_per_batch": cfg_fed["pretrain"]["volumes_per_batch"],
        "times": times,
        "best": best,
        "cpu_times": cpu_times,
        "best_cpu": best_cpu,
        "cpu_overhead_vs_centralized": best_cpu["federated"] / best_cpu["centralized"] - 1,
        "cpu_overhead_vs_bare": best_cpu["federated"] / best_cpu["bare"] - 1,
        "cpu_in_memory_overhead_vs_centralized": best_cpu["in_memory"] / best_cpu["centralized"]
        - 1,
        "overhead_vs_centralized": best["federated"] / best["centralized"] - 1,
        "overhead_vs_bare": best["federated"] / best["bare"] - 1,
        "in_memory_overhead_vs_centralized": best["in_memory"] / best["centralized"] - 1,
        "in_memory_overhead_vs_bare": best["in_memory"] / best["bare"] - 1,
        "step_s": step_s,
        "overhead_per_client_round_s": per_client_round,
        "breakeven_local_steps_for_5pct": per_client_round / (0.05 * step_s)
        if step_s > 0
        else math.nan,
        "cprofile": profiles,
        "cprofile_top": tops,
        "attributed": attributed,
        "work_dir_bytes": disk,
        "load_average_end": load_average(),
    }
    lines = [
        (
            f"{method}: {clients} clients x {rounds} rounds x {local_steps} local steps = "
            f"{total_steps} steps, "
            f"widths {config['model']['widths']} at {size} px, batch {report['volumes_per_batch']} "
            "volumes"
        ),
        (
            f"  federated {best['federated']:.1f}s, centralized (1 client, same steps) "
            f"{best['centralized']:.1f}s, "
            f"plain loop {best['bare']:.1f}s, federated with clients kept in memory "
            f"{best['in_memory']:.1f}s"
        ),
        (
            f"  overhead: {100 * report['overhead_vs_centralized']:.1f}% vs centralized, "
            f"{100 * report['overhead_vs_bare']:.1f}% vs the plain loop; in memory: "
            f"{100 * report['in_memory_overhead_vs_centralized']:.1f}% / "
            f"{100 * report['in_memory_overhead_vs_bare']:.1f}%"
        ),
        (
            f"  CPU time: federated {best_cpu['federated']:.1f}s, centralized "
            f"{best_cpu['centralized']:.1f}s, plain "
            f"{best_cpu['bare']:.1f}s, in memory {best_cpu['in_memory']:.1f}s: overhead "
            f"{100 * report['cpu_overhead_vs_centralized']:.1f}% vs centralized, in memory "
            f"{100 * report['cpu_in_memory_overhead_vs_centralized']:.1f}%"
        ),
        (
            f"  per client-round: {1e3 * per_client_round:.0f} ms of engine work against "
            f"{1e3 * step_s:.1f} ms per step: "
            f"<= 5% needs >= {report['breakeven_local_steps_for_5pct']:.0f} local steps per round"
        ),
        (
            f"  attributed by cProfile (engine functions only, compute cancels): federated "
            f"{100 * attributed['federated']['overhead']:.1f}% over centralized "
            f"({1e3 * attributed['federated']['per_client_round_s']:.0f} ms per client-round), "
            "clients in memory "
            f"{100 * attributed['in_memory']['overhead']:.1f}% "
            f"({1e3 * attributed['in_memory']['per_client_round_s']:.0f} ms)"
        ),
        "  cProfile (cumulative s): "
        + "; ".join(
            f"{name}: "
            + ", ".join(f"{k.split(' (')[0]} {v:.2f}" for k, v in prof.items() if v >= 0.005)
            for name, prof in profiles.items()
        ),
    ]
    report["summary"] = "\n".join(lines)
    return report


# ---------------------------------------------------------------- per-client state


def _serialized_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def client_state_study(
    config: dict,
    method: str = "fcl",
    *,
    clients: int = 100,
    run_round: bool = True,
    round_clients: int | None = None,
    round_size: int = 64,
    budget_gib: float = 24.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Per-client state of ``method`` with ``clients`` clients, and what the engine holds at once.

    Measures, at the config's model: the method's state split into shared and
    client-only tensors, the optimiser state after a step, the size of a
    client's state file, the payload of a full bank; then (``run_round``) runs
    two rounds of ``round_clients`` (default ``clients``) clients at
    ``round_size`` px with one local step, measuring the process's peak RSS
    growth and the work folder's size.
    """
    from bench.pretrain import PretrainTask
    from bench.registry import get_method

    cls = get_method(method)
    cfg = copy.deepcopy(config)
    torch.manual_seed(0)
    instance = cls(
        build_unet(cfg["model"], out_channels=1),
        cfg["pretrain"]["methods"].get(method, {}),
        num_clients=clients,
        client_id=0,
    )
    optimizer = torch.optim.Adam(instance.optimizer_parameters(), lr=1e-3)
    # One step so that Adam's moments exist.
    size = cfg["data"]["preprocess"]["size"]
    from bench.sampling import SliceStack

    stack = SliceStack(synthetic_volumes(4, 6, min(size, 64), 0), cfg["pretrain"]["partitions"])
    draws = torch.Generator().manual_seed(0)
    instance.begin_round(0, 1)
    loss = instance.training_step(stack.sample(2, draws, 0), draws)["loss"]
    loss.backward()
    optimizer.step()
    state = instance.state_dict()
    shared = instance.shared_state()
    local = instance.local_state()
    by_prefix: dict[str, int] = {}
    for key, value in state.items():
        prefix = key.split(".")[0]
        by_prefix[prefix] = by_prefix.get(prefix, 0) + tensor_bytes({key: value})
    file_bytes = _serialized_bytes({"method": state, "optimizer": optimizer.state_dict()})
    defaults = {**cls.defaults, **cfg["pretrain"]["methods"].get(method, {})}
    dim = defaults.get("projection_dim", 0)
    bank = defaults.get("bank_size", 0)
    full_payload = bank * (dim * 4 + 4) if getattr(cls, "exchanges_features", False) else 0
    report = {
        "environment": environment("cpu"),
        "method": method,
        "clients": clients,
        "model": cfg["model"],
        "state_bytes": tensor_bytes(state),
        "shared_bytes": tensor_bytes(shared),
        "local_bytes": tensor_bytes(local),
        "state_by_prefix": by_prefix,
        "optimizer_bytes": tensor_bytes(
            {
                f"{i}.{k}": v
                for i, s in optimizer.state_dict()["state"].items()
                for k, v in s.items()
                if isinstance(v, torch.Tensor)
            }
        ),
        "client_file_bytes": file_bytes,
        "client_files_kept": 2,
        "payload_bytes_full_bank": full_payload,
    }
    report["disk_bytes_all_clients"] = clients * report["client_files_kept"] * file_bytes
    report["memory_if_all_clients_live"] = clients * (
        report["state_bytes"] + report["optimizer_bytes"]
    )
    report["server_payload_bytes"] = clients * full_payload
    log(
        f"{method} with {clients} clients: state {report['state_bytes'] / 2**20:.1f} MiB "
        f"(shared {report['shared_bytes'] / 2**20:.1f}, client-only "
        f"{report['local_bytes'] / 2**20:.1f}), "
        f"optimiser {report['optimizer_bytes'] / 2**20:.1f} MiB, file {file_bytes / 2**20:.1f} MiB"
    )
    if run_round:
        k = round_clients or clients
        rcfg = _engine_config(cfg, 2, 1, 2)
        rcfg["data"]["preprocess"]["size"] = round_size
        volumes = [synthetic_volumes(2, 6, round_size, seed=i) for i in range(k)]
        work = Path(tempfile.mkdtemp(prefix="bench-state-"))
        from bench.federated.engine import run_in_process

        task = PretrainTask(
            config=rcfg,
            method=method,
            seed=0,
            work_dir=work,
            client_volumes=volumes,
            spec={"kind": "pretrain", "method": method},
        )
        rss_before = current_rss()
        start = time.perf_counter()
        with PeakMemory("cpu") as peak:
            run_in_process(task)
        elapsed = time.perf_counter() - start
        files = [f for f in work.rglob("*") if f.is_file()]
        client_files = [f for f in files if "clients" in f.parts]
        report["round"] = {
            "clients": k,
            "rounds": 2,
            "image_size": round_size,
            "seconds": elapsed,
            "rss_before": rss_before,
            "peak_rss": peak.peak_bytes,
            "peak_rss_growth": peak.growth_bytes,
            "memory_kind": peak.kind,
            "work_dir_bytes": sum(f.stat().st_size for f in files),
            "client_file_bytes_mean": float(np.mean([f.stat().st_size for f in client_files]))
            if client_files
            else 0,
            "client_files": len(client_files),
        }
        shutil.rmtree(work, ignore_errors=True)
    budget = budget_gib * 2**30
    fits_live = report["memory_if_all_clients_live"] < budget
    lines = [
        f"{method}, {clients} clients, widths {cfg['model']['widths']}:",
        f"  per client: state {report['state_bytes'] / 2**20:.1f} MiB (shared "
        f"{report['shared_bytes'] / 2**20:.1f} MiB, "
        f"client-only {report['local_bytes'] / 2**20:.1f} MiB: "
        + ", ".join(
            f"{p} {b / 2**20:.1f}" for p, b in sorted(by_prefix.items(), key=lambda kv: -kv[1])
        )
        + f"), Adam moments {report['optimizer_bytes'] / 2**20:.1f} MiB, state file "
        f"{file_bytes / 2**20:.1f} MiB",
        (
            f"  all {clients} clients live in memory: "
            f"{report['memory_if_all_clients_live'] / 2**30:.2f} GiB "
            f"({'fits' if fits_live else 'does not fit'} in {budget_gib:g} GiB); on disk (2 files "
            "each): "
            f"{report['disk_bytes_all_clients'] / 2**30:.2f} GiB; server-held payloads "
            f"{report['server_payload_bytes'] / 2**20:.1f} MiB"
        ),
    ]
    if run_round:
        r = report["round"]
        lines.append(
            f"  measured: {r['clients']} clients x 2 rounds at {r['image_size']} px: peak RSS "
            "growth "
            f"{r['peak_rss_growth'] / 2**20:.0f} MiB (process peak {r['peak_rss'] / 2**30:.2f} "
            "GiB), work folder "
            f"{r['work_dir_bytes'] / 2**30:.2f} GiB, {r['seconds']:.0f} s"
        )
    report["summary"] = "\n".join(lines)
    return report


# ---------------------------------------------------------------- interleaved A/B of the U-Net
# settings

AB_VARIANTS = [
    {"name": "as built (InstanceNorm2d, glibc malloc defaults)"},
    {"name": "--tune-malloc", "malloc": True},
    {"name": "--norm-impl group", "norm_impl": "group"},
    {"name": "--tune-malloc --norm-impl group", "malloc": True, "norm_impl": "group"},
    {
        "name": "--tune-malloc --norm-impl group --compile",
        "malloc": True,
        "norm_impl": "group",
        "compile": True,
    },
    {
        "name": "--tune-malloc --norm-impl group --amp bf16",
        "malloc": True,
        "norm_impl": "group",
        "amp": "bf16",
    },
]

GLIBC_DEFAULTS = {"mmap_threshold": 128 * 1024, "trim_threshold": 128 * 1024, "top_pad": 128 * 1024}


def unet_ab_study(
    config: dict,
    *,
    batch: int | None = None,
    rounds: int = 6,
    variants: list[dict] | None = None,
    mm_size: int = 2048,
    log: Callable[[str], None] = print,
) -> dict:
    """The fine-tuning step under each setting, interleaved: every round visits every variant
    (in a rotated order) with a matmul measurement and then two steps back to back, the second
    timed, so that drifts in the machine's speed (other jobs, clock) fall on all variants alike.

    The allocator setting is switched per variant with ``mallopt`` (``--tune-malloc`` values,
    or back to glibc's static defaults). Ratio: median step against the best matmul of the
    whole study (the profile's definition), and paired per round.
    """
    from bench.allocator import tune_cpu_allocator

    batch = batch or config["finetune"]["batch_size"]
    variants = variants or AB_VARIANTS
    built = [_segmentation_step(config, v, batch) for v in variants]
    a, b = torch.randn(mm_size, mm_size), torch.randn(mm_size, mm_size)
    out = torch.empty(mm_size, mm_size)
    mm_flops = 2 * mm_size**3
    records = {v["name"]: [] for v in variants}
    for index, v in enumerate(variants):  # warm-up: allocator state and one step each
        tune_cpu_allocator() if v.get("malloc") else tune_cpu_allocator(**GLIBC_DEFAULTS)
        for _ in range(2 if v.get("compile") else 1):
            built[index][0]()
    log(
        f"U-Net A/B: widths {config['model']['widths']} at {config['data']['preprocess']['size']} "
        f"px, batch {batch}, "
        f"{torch.get_num_threads()} threads, {rounds} rounds, load {load_average()}"
    )
    for r in range(rounds):
        order = list(range(len(variants)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for index in order:
            v = variants[index]
            tune_cpu_allocator() if v.get("malloc") else tune_cpu_allocator(**GLIBC_DEFAULTS)
            mm_best = math.inf
            for _ in range(3):
                with Contention() as load:
                    torch.mm(a, b, out=out)
                mm_best = min(mm_best, load.wall_s)
            built[index][0]()  # back to back, as in training: the timed step finds warm caches
            with Contention() as load:
                built[index][0]()
            records[v["name"]].append(
                {
                    "step_s": load.wall_s,
                    "thread_s": load.busiest_thread_s,
                    "mm_s": mm_best,
                    "others": load.others_share,
                }
            )
    tune_cpu_allocator(**GLIBC_DEFAULTS)
    peak = max(mm_flops / rec["mm_s"] for recs in records.values() for rec in recs)
    rows = []
    for v, (_, flops, _) in zip(variants, built, strict=False):
        recs = records[v["name"]]
        step = statistics.median(rec["step_s"] for rec in recs)
        rows.append(
            {
                "variant": v["name"],
                "flops_per_step": flops,
                "step_s": step,
                "step_s_iqr": summarize([rec["step_s"] for rec in recs]).iqr,
                "achieved_flops_per_s": flops / step,
                "ratio": flops / step / peak,
                "ratio_paired": statistics.median(
                    flops / rec["step_s"] / (mm_flops / rec["mm_s"]) for rec in recs
                ),
                "step_thread_s": statistics.median(rec["thread_s"] for rec in recs),
                "others_share_max": max(rec["others"] for rec in recs),
                "records": recs,
            }
        )
    report = {
        "environment": environment("cpu"),
        "batch": batch,
        "rounds": rounds,
        "peak_flops_per_s": peak,
        "rows": rows,
        "load_average_end": load_average(),
    }
    lines = [
        (
            f"U-Net step (fine-tuning: DiceCE + Adam), widths {config['model']['widths']} at "
            f"{config['data']['preprocess']['size']} px, batch {batch}, {torch.get_num_threads()} "
            "threads; "
            f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (best of {3 * rounds * len(variants)})"
        ),
        f"{'setting':48s} {'step ms':>8s} {'IQR':>6s} {'GFLOP/s':>8s} {'%peak':>7s} {'paired':>7s} "
        f"{'others':>7s}",
    ]
    for row in rows:
        lines.append(
            f"{row['variant']:48s} {1e3 * row['step_s']:8.0f} {1e3 * row['step_s_iqr']:6.0f} "
            f"{row['achieved_flops_per_s'] / 1e9:8.1f} {100 * row['ratio']:6.1f}% "
            f"{100 * row['ratio_paired']:6.1f}% {100 * row['others_share_max']:6.0f}%"
        )
    report["summary"] = "\n".join(lines)
    log(report["summary"])
    return report
