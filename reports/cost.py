"""Accuracy against cost: what each method's pretraining costs one client, and what it gains.

Per run and method, per client over the whole pretraining:

- ``steps``: optimiser steps actually taken per client (the ``steps`` recorded per round in
  ``pretrain_loss/``, else rounds recorded × ``pretrain.local_steps``; 0 for random init,
  which does not pretrain);
- ``flops_per_step``: from the run's profile (``bench profile --run``), scaled to the run's
  batch (slices per step = ``volumes_per_batch × partitions``) when the profile used another;
- ``tflops``: ``flops_per_step × steps`` / 1e12;
- ``device_s``: the measured pretraining time (``timings.jsonl``) divided by the number of
  clients, which the simulation trains one after another on one device;
- ``mb_sent``: bytes each client uploaded (weights and payload), summed over the rounds as
  the engine recorded them (``bytes_*`` columns of ``pretrain_loss/``), else the profile's
  ``bytes_per_round`` × rounds (marked as an estimate).

A method is on the Pareto front of a cost when no other method has a Dice at least as high
for a cost at most as high, one of the two strictly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.reports.aggregate import BASELINE, Experiment
from bench.reports.analysis import Analysis
from bench.reports.names import registry_id
from bench.reports.runs import Run

COSTS = {
    "tflops": "pretraining compute per client (TFLOP)",
    "device_s": "pretraining device time per client (s)",
    "mb_sent": "sent per client over the run (MB)",
}
DICE_N = (1, 8)


def _profile_steps(run: Run) -> pd.DataFrame:
    frames = [f for _, f in sorted(run.profiles.items()) if {"method", "flops_per_step"} <= set(f)]
    if not frames:
        return pd.DataFrame(columns=["method", "flops_per_step", "batch", "bytes_per_round"])
    frame = pd.concat(frames, ignore_index=True)
    if "phase" in frame:
        frame = frame[frame["phase"].astype(str) == "pretrain"]
    frame = frame.dropna(subset=["flops_per_step"])
    return frame.drop_duplicates("method", keep="last").set_index("method")  # the newest profile


def run_costs(run: Run) -> pd.DataFrame:
    """One row per method the run pretrained (or fine-tuned from random init)."""
    config = run.config or {}
    pretrain = config.get("pretrain") or {}
    clients = int((config.get("split") or {}).get("clients") or 1)
    local_steps = int(pretrain.get("local_steps") or 0)
    batch = int(pretrain.get("volumes_per_batch") or 0) * int(pretrain.get("partitions") or 1)
    profile = _profile_steps(run)
    timings = run.timings
    methods = {registry_id(m) for m in run.rows["method"].unique()} if not run.rows.empty else set()
    methods |= set(run.losses["method"].unique()) if not run.losses.empty else set()
    records = []
    for method in sorted(methods):
        losses = (
            run.losses[run.losses["method"] == method] if not run.losses.empty else pd.DataFrame()
        )
        rounds = int(losses.groupby("client")["round"].nunique().max()) if len(losses) else 0
        if "steps" in losses and losses["steps"].notna().any():  # recorded per round
            steps = int(losses.groupby("client")["steps"].sum().max())
        else:
            steps = rounds * local_steps
        flops, estimated_bytes = math.nan, False
        if method in profile.index:
            flops = float(profile.loc[method, "flops_per_step"])
            profiled_batch = profile.loc[method].get("batch", math.nan)
            if batch and pd.notna(profiled_batch) and profiled_batch:
                flops *= batch / float(profiled_batch)
        if method == BASELINE or steps == 0:
            flops = 0.0 if method == BASELINE else flops
        sent = [c for c in losses.columns if c.startswith("bytes_")]
        if method == BASELINE:
            mb = 0.0  # random init does not pretrain: nothing sent
        elif sent and len(losses):
            mb = losses[sent].sum(axis=1).groupby(losses["client"]).sum().mean() / 1e6
        elif method in profile.index and "bytes_per_round" in profile:
            mb, estimated_bytes = float(profile.loc[method, "bytes_per_round"]) * rounds / 1e6, True
        else:
            mb = math.nan
        seconds = math.nan
        if not timings.empty and {"phase", "method", "seconds"} <= set(timings):
            own = timings[(timings["phase"] == "pretrain") & (timings["method"] == method)]
            seconds = own["seconds"].sum() / clients if len(own) else math.nan
        records.append(
            {
                "run": str(run.path),
                "method": method,
                "rounds": rounds,
                "steps": steps,
                "flops_per_step": flops if steps else (0.0 if method == BASELINE else math.nan),
                "tflops": flops * steps / 1e12
                if steps
                else (0.0 if method == BASELINE else math.nan),
                "device_s": seconds,
                "mb_sent": mb,
                "bytes_estimated": estimated_bytes,
            }
        )
    return pd.DataFrame(records)


def pareto(dice: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Whether each point is on the front (higher Dice, lower cost); NaN points never are."""
    ok = ~(np.isnan(dice) | np.isnan(cost))
    front = np.zeros(len(dice), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & (np.arange(len(dice)) != i)
        dominated = (
            others & (dice >= dice[i]) & (cost <= cost[i]) & ((dice > dice[i]) | (cost < cost[i]))
        )
        front[i] = not dominated.any()
    return front


def accuracy_cost(analysis: Analysis, experiment: Experiment, runs: list[Run]) -> pd.DataFrame:
    """Per method of the experiment: its costs, Dice at N = 1 and 8, and Pareto flags."""
    rows = analysis.rows[analysis.rows["experiment"] == experiment.slug]
    paths = set(rows["run"]) if "run" in rows else set()
    costs = pd.concat([run_costs(run) for run in runs if str(run.path) in paths], ignore_index=True)
    if costs.empty:
        return costs
    costs = costs.drop_duplicates("method").set_index("method")
    summary = analysis.summary[analysis.summary["experiment"] == experiment.slug]
    wide = summary.pivot(index="variant", columns="n_labeled", values="mean")
    # Variants (``fcl [local]``, ``fcl [unverified]``) take their registry method's costs.
    variants = [v for v in analysis.methods(experiment) if registry_id(v) in costs.index]
    out = costs.loc[[registry_id(v) for v in variants]].set_axis(variants)
    for n in DICE_N:
        out[f"dice_n{n}"] = wide[n].reindex(out.index) if n in wide else math.nan
        for cost in COSTS:
            out[f"front_n{n}_{cost}"] = pareto(
                out[f"dice_n{n}"].to_numpy(float), out[cost].to_numpy(float)
            )
    return out.reset_index(names="method")
