"""What a profile records about its machine, and two profiles compared line by line."""

from __future__ import annotations

import json

import torch

from bench.profile.compare import compare_profiles
from bench.profile.env import ISA_FLAGS, cpu_flags, memory_bandwidth, onednn_kernels


def test_machine_figures_are_measured_here():
    assert set(cpu_flags()) <= set(ISA_FLAGS)
    assert memory_bandwidth(elements=1 << 20, repeats=2) > 0
    kernels = onednn_kernels()
    if torch.backends.mkldnn.is_available():
        # A training convolution ran through oneDNN: its forward and backward kernels are named.
        assert any(k.startswith("convolution forward_training") for k in kernels["onednn_kernels"])


def test_compare_marks_what_differs_and_shows_each_machines_share(tmp_path):
    def profile(name, flags, bandwidth, step_s, ratio):
        doc = {
            "environment": {
                "cpu_model": "same",
                "cpu_flags": flags,
                "memory_bandwidth_bytes_per_s": bandwidth,
            },
            "matmul_peak": {"peak_flops_per_s": 1.5e11},
            "rows": [{"phase": "pretrain", "method": "pgl", "step_s": step_s, "peak_ratio": ratio}],
        }
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return path

    text = compare_profiles(
        profile("a.json", ["avx2"], 5e9, 1.0, 0.5),
        profile("b.json", ["avx2", "avx512f"], 5e9, 0.5, 0.9),
    )
    lines = {line.split("|")[0].strip(): line for line in text.splitlines() if "|" in line}
    assert lines["≠ cpu_flags"].endswith("| avx2 | avx2 avx512f")
    assert lines["cpu_model"].startswith("  ")  # equal on both machines: not marked
    assert "1000 ms, 50.0% | 500 ms, 90.0%" in text
