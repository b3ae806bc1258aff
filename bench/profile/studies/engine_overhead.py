"""``bench profile --study engine``: K-client federated pretraining against the same number of
optimiser steps on one client, with a cProfile breakdown of the engine's work.
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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.convergence import steps_per_round
from bench.profile.env import environment, load_average
from bench.profile.steps import (
    synthetic_volumes,
)


def engine_config(
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
    pre = config["pretrain"]
    # One round's steps as the config sets them, on this study's pools of 10-slice volumes.
    local_steps = local_steps or steps_per_round(
        pre,
        volumes_per_client * 10,
        (volumes_per_batch or pre["volumes_per_batch"]) * pre["partitions"],
    )
    cfg_fed = engine_config(config, rounds, local_steps, volumes_per_batch)
    cfg_cen = engine_config(config, rounds, local_steps * clients, volumes_per_batch)
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
