"""Recorded profiles: the row schema (``COLUMNS``) and reading a folder of profile CSVs back.

Only pandas: ``bench run --dry-run`` and reports read recorded profiles without
importing torch, MONAI or the step code.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# One schema for every row, so that a folder of profile CSVs concatenates.
COLUMNS = [
    "profile_id",
    "timestamp",
    "preset",
    "device",
    "device_name",
    "threads",
    "amp",
    "channels_last",
    "compile",
    "norm_impl",
    "malloc_tuned",
    "phase",
    "method",
    "batch",
    "image_size",
    "repeats",
    "step_s",
    "step_s_q1",
    "step_s_q3",
    "step_s_iqr",
    "step_s_min",
    "step_s_max",
    "slices_per_s",
    "forward_s",
    "backward_s",
    "optimizer_s",
    "after_step_s",
    "payload_out_s",
    "payload_in_s",
    "extras_per_step_s",
    "flops_per_step",
    "steps_per_s",
    "achieved_flops_per_s",
    "peak_flops_per_s",
    "peak_ratio",
    "peak_memory_bytes",
    "memory_growth_bytes",
    "memory_kind",
    "params",
    "trainable_params",
    "bytes_weights",
    "bytes_payload",
    "bytes_per_round",
    "data_slices_per_s",
    "consumer_slices_per_s",
    "data_ratio",
    "data_bound",
    "note",
    # Convenience units for reports: step_s in ms, achieved_flops_per_s, and the memory figure
    # of the device (CUDA: allocator peak; CPU: peak RSS growth) in MiB.
    "step_ms",
    "achieved_flops",
    "peak_mem_mb",
    # Contention (CPU, Linux): the share of the machine other processes used during the timed
    # steps, and the same figures from busiest-thread run time instead of wall time -- the
    # step's time on an idle CPU, estimated on a busy one (see timing.Contention).
    "others_cpu_share",
    "step_thread_s",
    "achieved_thread_flops_per_s",
    "peak_thread_flops_per_s",
    "peak_ratio_thread",
]


def profile_folder(run_dir: Path) -> Path:
    """Where a run folder's profiles live: ``<run>/profile``."""
    return Path(run_dir) / "profile"


def load_profile(path: Path, *, latest_only: bool = True) -> pd.DataFrame:
    """The profile rows under ``path`` (a run folder, or its ``profile/`` folder) as one DataFrame.

    ``latest_only``: for each (phase, method, device, settings) keep the newest
    profile's row. An empty frame with ``COLUMNS`` when there is none.
    """
    path = Path(path)
    folder = path if path.name == "profile" or not (path / "profile").is_dir() else path / "profile"
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    frames = [pd.read_csv(f) for f in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.concat(frames, ignore_index=True)
    if latest_only:
        key = [
            "phase",
            "method",
            "device",
            "amp",
            "channels_last",
            "compile",
            "norm_impl",
            "malloc_tuned",
            "batch",
            "image_size",
        ]
        key = [k for k in key if k in frame.columns]
        frame = frame.sort_values("profile_id").drop_duplicates(key, keep="last")
    return frame.reset_index(drop=True)
