"""Shared set-up of the pytest-benchmark suite (``tox -e benchmark``; see docs/PERFORMANCE.md).

Collected only with ``BENCH_BENCHMARKS=1`` (tests/conftest.py). Inputs are
seeded, so a saved baseline and a new run time the same work.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.config import load_config

# One thread by default: timings on a machine shared with other jobs are far steadier
# (two OpenMP threads on two busy cores wait on each other), and a baseline is only
# comparable at the same thread count. BENCH_BENCHMARK_THREADS=0 keeps torch's default.
THREADS = int(os.environ.get("BENCH_BENCHMARK_THREADS", "1"))
if THREADS:
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_config():
    return load_config("tiny")


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Saved runs carry the torch build and thread count next to pytest-benchmark's machine info."""
    output_json["bench"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
    }
