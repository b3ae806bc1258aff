"""``bench profile --study unet``: what keeps the U-Net's training step below the fp32 matmul
peak, and which settings raise it (variants measured paired with the peak).

Both the paired and the conventional ratio (median step vs best matmul of the
run) are reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from bench.backbone import build_unet
from bench.profile.env import environment, load_average
from bench.profile.flops import conv2d_flops, count_flops
from bench.profile.steps import (
    StepSettings,
    compile_blocks,
    instance_to_group_norm,
)
from bench.profile.studies.paired import paired_timing, thread_peak
from bench.profile.timing import Contention


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


def segmentation_step(config: dict, variant: dict, batch: int, seed: int = 0):
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
            step, flops, _ = segmentation_step(config, variant, vbatch)
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
        step, _, _ = segmentation_step(config, {}, batch)
        step()
        report["op_breakdown_baseline"] = op_breakdown(step)
        step, _, _ = segmentation_step(config, {"norm_impl": "group"}, batch)
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
