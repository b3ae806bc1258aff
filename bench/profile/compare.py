"""``bench profile --compare A.json B.json``: two profiles side by side, line by line.

First what explains a share of the peak (CPU or GPU, ISA flags, oneDNN ISA and
kernels, threads and their placement, memory bandwidth, allocator, matmul
peak), then each step's time and share of its own machine's peak.
"""

from __future__ import annotations

import json
from pathlib import Path

MACHINE_KEYS = (
    "device_name",
    "cpu_model",
    "cpu_count",
    "cpu_affinity_list",
    "smt_active",
    "numa_nodes",
    "threads",
    "cpu_capability",
    "cpu_flags",
    "onednn_isa",
    "onednn_version",
    "onednn_kernels",
    "mkl_version",
    "blas",
    "memory_bandwidth_bytes_per_s",
    "malloc_tuned",
    "omp_wait_policy",
    "omp_num_threads",
    "omp_proc_bind",
    "omp_places",
    "torch",
    "load_average",
)


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value / 1e9:.1f} G" if value > 1e6 else f"{value:.3g}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "-" if value is None else str(value)


def compare_profiles(path_a: Path, path_b: Path) -> str:
    docs = [json.loads(Path(p).read_text()) for p in (path_a, path_b)]
    envs = [d.get("environment", {}) for d in docs]
    lines = [f"{'':32s} | A: {Path(path_a).name} | B: {Path(path_b).name}"]
    for key in MACHINE_KEYS:
        values = [_text(env.get(key)) for env in envs]
        if values[0] != "-" or values[1] != "-":
            mark = "  " if values[0] == values[1] else "≠ "
            lines.append(f"{mark}{key:30s} | {values[0]} | {values[1]}")
    peaks = [d.get("matmul_peak", {}).get("peak_flops_per_s") for d in docs]
    lines.append(f"  {'fp32 matmul peak (FLOP/s)':30s} | {_text(peaks[0])} | {_text(peaks[1])}")
    rows = [{(r["phase"], r["method"]): r for r in d.get("rows", [])} for d in docs]
    lines.append("\nstep: A ms, % of A's peak | B ms, % of B's peak")
    for key in sorted(set(rows[0]) | set(rows[1])):
        cells = []
        for side in rows:
            row = side.get(key)
            if row is None or row.get("step_s") is None:
                cells.append("-")
                continue
            ratio = row.get("peak_ratio")
            share = f", {ratio:.1%}" if isinstance(ratio, float) else ""
            cells.append(f"{row['step_s'] * 1e3:.0f} ms{share}")
        lines.append(f"  {key[0]:9s} {key[1]:20s} | {cells[0]} | {cells[1]}")
    return "\n".join(lines)
