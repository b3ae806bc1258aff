"""Timers that synchronise the device around what they time, and robust summaries.

On CUDA, kernels run asynchronously: a timer must wait for the device before
reading the clock, or it measures the launch, not the work. ``Timer`` takes
the wait as a callable, ``torch.cuda.synchronize`` on CUDA and a no-op on the
CPU, so the same code path (and its tests) covers both.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

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

    def __init__(self, synchronize: Callable[[], None] | None = None, clock: Callable[[], float] = time.perf_counter):
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

    def measure(self, fn: Callable[[], object], *, name: str = "call", warmup: int = 1, repeats: int = 5) -> list[float]:
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
            raise ValueError(f"sections {names} ran unequal numbers of times: {[len(r) for r in runs]}")
        count = lengths.pop() if lengths else 0
        return [sum(r[i] for r in runs if r) for i in range(count)]


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
    times = timer.measure(lambda: torch.mm(a, b, out=out), name="mm", warmup=1, repeats=repeats)
    best = min(times)
    flops = 2 * size**3
    return {
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": repeats,
        "flops": flops,
        "best_s": best,
        "median_s": statistics.median(times),
        "flops_per_s": flops / best,
        "median_flops_per_s": flops / statistics.median(times),
    }
