"""``bench run --dry-run``: what a run would do and how long it would take, without running it.

The plan follows ``Runner``: one pretraining per (method, seed) for methods that
pretrain (``rounds x local_steps`` steps on each pretraining client, one
client when ``pretrain.setting`` is centralized), then one fine-tuning per
unit (method, seed, mode, N, fold): ``rounds x local_steps`` steps on each
client, in both modes. These are the step counts of the configured budget:
where a unit may stop early they are its maximum. Budgets in epochs
(``local_steps: null``) are estimated without reading data: ``SLICES_PER_VOLUME``
slices per volume, N labeled patients per fine-tuning client, and the training
patients (``data.synthetic.train``, or ACDC's 100) shared by the clients for
pretraining, one volume per configured phase.

Per-step times come from a recorded ``bench profile`` (its CSV rows: the
newest for each phase and method at the configured image size and device,
scaled linearly when its batch differs; where other processes took more
than ``LOADED`` of the CPUs while it was recorded, its busiest-thread run
time instead of the wall time); then nothing is built, no data is
read and no step runs (only pandas reads the CSVs). For steps no profile
has, no time is given (a dry run times nothing: on a shared 2-core machine
a step timed once was off by several times, and timing 12 methods took
minutes); the output names the one command that records a profile. Times
are never invented for a device this machine does not have: a CUDA config
without a recorded CUDA profile gets the CPU projection, labelled as such.
Data preparation, validation and the evaluation's inference are not
projected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.config import as_section
from bench.config_schema import Config
from bench.convergence import steps_per_round
from bench.registry import get_method

SLICES_PER_VOLUME = 10  # ACDC short-axis volumes hold 6-21 slices
# Above this share of the CPUs taken by other processes while a profile was recorded, its
# steps' busiest-thread run time (the time on an idle CPU) replaces their wall time.
LOADED = 0.25


@dataclass
class PhasePlan:
    phase: str  # pretrain | finetune
    method: str
    runs: int  # pretrainings (method x seed) or fine-tuning units
    rounds: int
    local_steps: int
    clients: int
    batch: int

    @property
    def steps_per_run(self) -> int:
        return self.rounds * self.local_steps * self.clients

    @property
    def steps(self) -> int:
        return self.runs * self.steps_per_run


def plan_run(config: dict, methods: list[str]) -> list[PhasePlan]:
    """The phases of ``bench run`` for ``methods`` under ``config`` (no data read)."""
    config = as_section(Config, config)
    pre, fine, split = config.pretrain, config.finetune, config.split
    seeds = len(config.run.seeds)
    clients = int(split.clients)
    units_per_method = seeds * len(fine.modes) * len(split.n_values) * int(split.folds)
    phases = len(config.data.phases)
    patients = config.data.synthetic.train if config.data.root is None else 100
    pool = max(1, patients // clients) * phases * SLICES_PER_VOLUME
    labeled = max(split.n_values) * phases * SLICES_PER_VOLUME
    pre_batch = int(pre.volumes_per_batch) * int(pre.partitions)
    plans = []
    for method in methods:
        if get_method(method).needs_pretraining and pre.get("from_run") is None:
            plans.append(
                PhasePlan(
                    "pretrain",
                    method,
                    seeds,
                    int(pre.rounds),
                    steps_per_round(pre, pool, pre_batch),
                    1 if pre.setting == "centralized" else clients,
                    int(pre.volumes_per_batch) * int(pre.partitions),
                )
            )
        plans.append(
            PhasePlan(
                "finetune",
                method,
                units_per_method,
                int(fine.rounds),
                steps_per_round(fine, labeled, int(fine.batch_size)),
                clients,
                int(fine.batch_size),
            )
        )
    return plans


def recorded_rows(config: dict, device_type: str, paths: list[Path]) -> pd.DataFrame:
    """Profile rows of ``paths`` (profile or run folders) for this image size and device type."""
    from bench.profile.records import load_profile

    config = as_section(Config, config)

    frames = [load_profile(p) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["step_s"].notna() & (rows["phase"].isin(["pretrain", "finetune"]))]
    rows = rows[rows["device"].astype(str).str.split(":").str[0] == device_type]
    rows = rows[rows["image_size"] == config.data.preprocess.size]
    return rows.sort_values("profile_id").drop_duplicates(["phase", "method"], keep="last")


def default_profile_paths() -> list[Path]:
    """Where ``bench profile`` writes by default: ``runs/profile-*``."""
    root = Path("runs")
    return sorted(root.glob("profile-*")) if root.is_dir() else []


@dataclass
class StepTime:
    seconds: float
    source: str


def project(
    config: dict,
    methods: list[str],
    *,
    profile_paths: list[Path] | None = None,
) -> dict:
    """The plan with per-step times and projected hours; see the module docstring."""
    config = as_section(Config, config)
    plans = plan_run(config, methods)
    configured = str(config.run.device)
    paths = default_profile_paths() if profile_paths is None else list(profile_paths)
    notes = []
    device_type = configured
    rows = recorded_rows(config, configured, paths)
    if configured == "cuda" and rows.empty:
        notes.append(
            "the config's device is cuda and no recorded CUDA profile was found "
            "(bench profile --device cuda --preset ... on the GPU machine, then --profile DIR): "
            "no GPU hours are projected; the times below are for this CPU"
        )
        device_type = "cpu"
        rows = recorded_rows(config, "cpu", paths)
    times: dict[tuple[str, str], StepTime] = {}
    for plan in plans:
        name = plan.method if plan.phase == "pretrain" else "unet"
        match = rows[(rows["phase"] == plan.phase) & (rows["method"] == name)] if len(rows) else []
        if len(match):
            row = match.iloc[-1]
            scale = plan.batch / float(row["batch"])
            source = f"profile {row['profile_id']} ({row['device_name']})"
            step_s = float(row["step_s"])
            others = float(row.get("others_cpu_share", float("nan")))
            thread_s = float(row.get("step_thread_s", float("nan")))
            if others > LOADED and thread_s == thread_s:
                # Recorded on a loaded machine: the wall clock counts other jobs' time slices.
                step_s = thread_s
                source += f", busiest-thread time (others used {others:.0%})"
            if scale != 1:
                source += f", batch {int(row['batch'])} scaled"
            times[(plan.phase, plan.method)] = StepTime(step_s * scale, source)
    missing = {(p.phase, p.method) for p in plans} - set(times)
    if missing:
        size = config["data"]["preprocess"]["size"]
        notes.append(
            f"no recorded {device_type.upper()} profile at {size} px for "
            + ", ".join(sorted(f"{phase} {method}" for phase, method in missing))
            + ": no step is timed by a dry run and no time is guessed; record one (later dry "
            "runs find it in runs/profile-*): "
            + f"bench profile --preset {config.get('preset') or 'default'} --device "
            f"{device_type} --phases pretrain,finetune --repeats 3"
        )
    entries, total = [], 0.0
    for plan in plans:
        step = times.get((plan.phase, plan.method))
        hours = step.seconds * plan.steps / 3600 if step else float("nan")
        if step:
            total += hours
        entries.append({"plan": plan, "step": step, "hours": hours})
    return {
        "entries": entries,
        "total_hours": total,
        "complete": not missing,
        "device": device_type,
        "configured_device": configured,
        "notes": notes,
    }


def format_projection(config: dict, methods: list[str], projection: dict) -> str:
    config = as_section(Config, config)
    split, fine = config.split, config.finetune
    seeds = len(config.run.seeds)
    units = seeds * len(methods) * len(fine.modes) * len(split.n_values) * split.folds
    lines = [
        f"dry run: preset {config.get('preset') or 'default'}, {len(methods)} method(s), "
        f"{seeds} seed(s), {split.clients} clients; nothing is run",
        f"units: {len(methods)} methods x {seeds} seeds x {len(fine.modes)} modes "
        f"({', '.join(fine.modes)}) x {len(split.n_values)} N ({split.n_values}) x "
        f"{split.folds} folds = {units} fine-tuning units",
        "",
        f"{'phase':9s} {'method':13s} {'runs':>5s} {'steps per run (max)':>26s} "
        f"{'batch':>5s} {'s/step':>8s} {'hours':>9s}  source",
    ]
    for entry in projection["entries"]:
        plan, step = entry["plan"], entry["step"]
        per_run = f"{plan.rounds}x{plan.local_steps}x{plan.clients}={plan.steps_per_run}"
        seconds = f"{step.seconds:8.3f}" if step else f"{'?':>8s}"
        lines.append(
            f"{plan.phase:9s} {plan.method:13s} {plan.runs:5d} {per_run:>26s} {plan.batch:5d} "
            f"{seconds} {entry['hours']:9.1f}  {step.source if step else 'none'}"
        )
    incomplete = "incomplete (the steps without a time are left out): "
    lines.append(
        f"\nprojected: {'' if projection['complete'] else incomplete}"
        f"{projection['total_hours']:.1f} hours of steps on "
        f"{'this CPU' if projection['device'] == 'cpu' else 'the profiled GPU'} "
        "(rounds x local steps x clients per run: the maximum where a unit may stop early; "
        "data preparation, validation and evaluation not included)"
    )
    lines += [f"note: {note}" for note in projection["notes"]]
    return "\n".join(lines)
