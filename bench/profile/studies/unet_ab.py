"""``bench profile --study unet-ab``: the recommended U-Net settings against the defaults,
interleaved A/B on the same machine.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch

from bench.profile.env import environment, load_average
from bench.profile.studies.unet import segmentation_step
from bench.profile.timing import Contention, summarize

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
    built = [segmentation_step(config, v, batch) for v in variants]
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
