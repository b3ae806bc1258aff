import os

import pytest

# The pytest-benchmark suite runs through `tox -e benchmark`, not with the tests.
collect_ignore_glob = [] if os.environ.get("BENCH_BENCHMARKS") else ["benchmarks/*"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own preprocessing cache, never the user's."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
