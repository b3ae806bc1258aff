"""Timing paired with the fp32 matmul peak taken right before it (shared by the U-Net studies).

A machine shared with other jobs makes wall-clock times drift; each timing is
paired with a matmul timing taken right before it, so the ratio compares the two
under the same load.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch

from bench.profile.timing import Contention, summarize


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
