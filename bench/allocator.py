"""CPU settings that raise the U-Net's FLOP/s (docs/PERFORMANCE.md), applied from inside the
process.

``tune_cpu_allocator``: glibc's malloc hands every freed block above its mmap
threshold (128 KiB to 32 MiB, adaptive) back to the kernel, so each training
step maps its activations afresh and the kernel zeroes every page on first
touch: about 700 000 page faults and 2 s of system time per step of the
default U-Net at batch 16 on this machine. Raising the mmap and trim
thresholds keeps freed memory in the heap for the next step (what jemalloc or
tcmalloc, PyTorch's recommended CPU allocators, do by design). The cost:
the process keeps its peak heap resident instead of returning it between steps.

``omp_wait_policy``: libgomp reads ``OMP_WAIT_POLICY`` when it loads, before
any Python runs, so it can only be reported here, not set; ``PASSIVE``
(waiting threads sleep instead of spinning) avoids the slowdown of two
spinning threads on two cores shared with other jobs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

_TUNED: dict | None = None


def tune_cpu_allocator(
    *, mmap_threshold: int = 2**31 - 1, trim_threshold: int = 2**31 - 1, top_pad: int = 256 * 2**20
) -> dict | None:
    """Sets glibc malloc's thresholds with ``mallopt`` (Linux with glibc only).

    Returns the settings applied, or None where there is no glibc ``mallopt``.
    Idempotent; affects the whole process from the next allocation on.
    """
    global _TUNED
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = {}
    for name, option, value in (
        ("mmap_threshold", M_MMAP_THRESHOLD, mmap_threshold),
        ("trim_threshold", M_TRIM_THRESHOLD, trim_threshold),
        ("top_pad", M_TOP_PAD, top_pad),
    ):
        if mallopt(option, int(value)) == 1:
            applied[name] = int(value)
    _TUNED = applied or None
    return _TUNED


def allocator_settings() -> dict:
    """What this process runs with: allocator tuning (this module or glibc's MALLOC_* variables),
    a preloaded allocator, and the OpenMP wait policy."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") and k.endswith("_")}
    preload = os.environ.get("LD_PRELOAD", "")
    return {
        "malloc_tuned": _TUNED,
        "malloc_env": env or None,
        "preloaded_allocator": next(
            (lib for lib in ("jemalloc", "tcmalloc", "mimalloc") if lib in preload), None
        ),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
