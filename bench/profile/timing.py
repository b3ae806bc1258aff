"""Timers that synchronise the device around what they time, and robust summaries.

On CUDA, kernels run asynchronously: a timer must wait for the device before
reading the clock, or it measures the launch, not the work. ``Timer`` takes
the wait as a callable, ``torch.cuda.synchronize`` on CUDA and a no-op on the
CPU, so the same code path (and its tests) covers both.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Self

import numpy as np
import torch


def _no_sync() -> None:
    return None


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """``torch.cuda.synchronize`` for a CUDA device, else a no-op."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return _no_sync


class Timer:
    """Named wall-clock sections, with ``synchronize()`` called before each clock read.

    >>> timer = Timer()                      # CPU: synchronize is a no-op
    >>> with timer.section("forward"):
    ...     pass
    >>> timer.samples["forward"]             # one entry per time the section ran
    [...]
    """

    def __init__(
        self,
        synchronize: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.synchronize = synchronize or _no_sync
        self.clock = clock
        self.samples: dict[str, list[float]] = {}
        self.sync_calls = 0

    def _sync(self) -> None:
        self.sync_calls += 1
        self.synchronize()

    @contextlib.contextmanager
    def section(self, name: str):
        self._sync()
        start = self.clock()
        try:
            yield
        finally:
            self._sync()
            self.samples.setdefault(name, []).append(self.clock() - start)

    def measure(
        self, fn: Callable[[], object], *, name: str = "call", warmup: int = 1, repeats: int = 5
    ) -> list[float]:
        """Runs ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns the times."""
        for _ in range(warmup):
            fn()
            self._sync()
        before = len(self.samples.get(name, []))
        for _ in range(repeats):
            with self.section(name):
                fn()
        return self.samples[name][before:]

    def total(self, names: list[str]) -> list[float]:
        """Per repeat, the sum of the given sections (all must have run equally often)."""
        runs = [self.samples.get(name, []) for name in names]
        lengths = {len(r) for r in runs if r}
        if len(lengths) > 1:
            raise ValueError(
                f"sections {names} ran unequal numbers of times: {[len(r) for r in runs]}"
            )
        count = lengths.pop() if lengths else 0
        return [sum(r[i] for r in runs if r) for i in range(count)]


def _system_busy_seconds() -> tuple[float, int] | None:
    """(CPU seconds all processes spent busy since boot, CPUs counted) from ``/proc/stat``,
    or None off Linux. The seconds cover every CPU of the machine, not only this
    process's affinity, so the count returned is the machine's."""
    try:
        with open("/proc/stat") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    ticks = [int(x) for x in lines[0].split()[1:]]
    cpus = sum(1 for line in lines[1:] if re.match(r"cpu\d+ ", line)) or 1
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK"), cpus


def thread_run_seconds() -> dict[int, float]:
    """Seconds each thread of this process has run on a CPU (Linux ``schedstat``, ns resolution)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as handle:
                out[int(tid)] = int(handle.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return out


class Contention:
    """How much of the machine other processes used while a block ran, and how long it ran.

    ``others_share``: CPU seconds used by other processes over the block's
    wall time times the CPU count (0: the machine was ours; 1: others kept
    every core busy). ``cpu_s``: this process's CPU seconds (all threads).
    ``busiest_thread_s``: run time of this process's busiest thread, an
    estimate of the block's wall time on an idle machine when its threads
    share the work evenly and wait passively (``OMP_WAIT_POLICY=PASSIVE``);
    NaN where Linux's per-thread ``schedstat`` is missing.
    ``involuntary_switches``: times the scheduler preempted this process.
    """

    def __enter__(self) -> Self:
        import resource

        self._threads = thread_run_seconds()
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self._busy = _system_busy_seconds()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        import resource

        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.involuntary_switches = usage.ru_nivcsw - self._usage.ru_nivcsw
        threads = thread_run_seconds()
        deltas = [t - self._threads.get(tid, 0.0) for tid, t in threads.items()]
        self.busiest_thread_s = max(deltas) if deltas else float("nan")
        busy = _system_busy_seconds()
        if busy is None or self._busy is None or self.wall_s <= 0:
            self.others_share = float("nan")
        else:
            # /proc/stat counts in clock ticks (10 ms) and charges a tick to whoever runs
            # when it fires, so over a short block the difference can exceed what the
            # cores could do; a share is at most 1 (others kept every core busy).
            (busy_end, cpus), (busy_start, _) = busy, self._busy
            others = max(0.0, (busy_end - busy_start) - self.cpu_s)
            self.others_share = min(1.0, others / (self.wall_s * cpus))


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated timings (seconds)."""

    n: int
    median: float
    q1: float
    q3: float
    iqr: float
    min: float
    max: float

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{key}": value for key, value in asdict(self).items()}


def summarize(samples: list[float]) -> Summary:
    if not samples:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan)
    q1, q3 = (float(q) for q in np.percentile(samples, [25, 75]))
    return Summary(
        n=len(samples),
        median=float(statistics.median(samples)),
        q1=q1,
        q3=q3,
        iqr=q3 - q1,
        min=float(min(samples)),
        max=float(max(samples)),
    )


def default_matmul_size(device: torch.device | str) -> int:
    return 8192 if torch.device(device).type == "cuda" else 2048


def matmul_peak(
    device: torch.device | str = "cpu",
    *,
    size: int | None = None,
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
    synchronize: Callable[[], None] | None = None,
) -> dict:
    """Dense matmul throughput: the best of ``repeats`` timings of ``torch.mm`` of two
    ``size x size`` matrices (2 size^3 FLOPs each). The reference 'peak' of the device."""
    device = torch.device(device)
    size = size or default_matmul_size(device)
    sync = synchronize or synchronizer(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    timer = Timer(sync)
    torch.mm(a, b, out=out)
    sync()
    thread_times, others = [], []
    for _ in range(repeats):
        with Contention() as load, timer.section("mm"):
            torch.mm(a, b, out=out)
        thread_times.append(load.busiest_thread_s)
        others.append(load.others_share)
    times = timer.samples["mm"]
    best = min(times)
    flops = 2 * size**3
    best_thread = min(thread_times) if device.type == "cpu" else float("nan")
    return {
        "thread_flops_per_s": flops / best_thread if best_thread > 0 else float("nan"),
        "others_cpu_share": statistics.median(others),
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": repeats,
        "flops": flops,
        "best_s": best,
        "median_s": statistics.median(times),
        "flops_per_s": flops / best,
        "median_flops_per_s": flops / statistics.median(times),
    }
