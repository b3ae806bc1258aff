"""Peak memory of a block of code: the CUDA allocator's peak, or the process's peak RSS.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
(the peak of live tensors, model included).

CPU: the growth of the process's resident set over its size when the block
started. Linux keeps the peak RSS (``VmHWM``) and lets a process reset it
(``echo 5 > /proc/self/clear_refs``), which catches short-lived peaks
exactly; elsewhere a sampling thread polls ``psutil`` every few milliseconds,
and ``resource.getrusage``'s lifetime peak raises the estimate when the block
set a new lifetime peak.
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path
from typing import Self

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def current_rss() -> int:
    value = _status_kib("VmRSS")
    if value is not None:
        return value
    import psutil

    return int(psutil.Process().memory_info().rss)


def lifetime_peak_rss() -> int:
    """``ru_maxrss`` in bytes (KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss() -> bool:
    """Resets Linux's ``VmHWM`` to the current RSS; False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + (1 << 20)


class _Sampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.peak = interval, current_rss()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss())


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.peak_bytes``, ``peak.growth_bytes``.

    ``kind`` says what was measured: ``cuda_max_allocated``, ``rss_hwm`` (Linux
    peak-RSS reset) or ``rss_sampled`` (polling, may miss peaks shorter than
    ``interval``). ``force_sampling`` selects the polling path (for tests).
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        interval: float = 0.002,
        force_sampling: bool = False,
    ):
        self.device = torch.device(device)
        self.interval = interval
        self.force_sampling = force_sampling
        self.kind = ""
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self._sampler: _Sampler | None = None
        self._lifetime_before = 0

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            return self
        self.baseline_bytes = current_rss()
        self._lifetime_before = lifetime_peak_rss()
        if not self.force_sampling and reset_peak_rss():
            self.kind = "rss_hwm"
            self.baseline_bytes = current_rss()
        else:
            self.kind = "rss_sampled"
            self._sampler = _Sampler(self.interval)
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        if self.kind == "rss_hwm":
            self.peak_bytes = max(_status_kib("VmHWM") or 0, current_rss())
            return
        peak = self._sampler.stop()
        lifetime = lifetime_peak_rss()
        if lifetime > self._lifetime_before:  # the block set a new lifetime peak: that is its peak
            peak = max(peak, lifetime)
        self.peak_bytes = peak
