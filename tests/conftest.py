import os

import pytest

# The pytest-benchmark suite runs through `tox -e benchmark`, not with the tests.
collect_ignore_glob = [] if os.environ.get("BENCH_BENCHMARKS") else ["benchmarks/*"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The session's own preprocessing cache, never the user's.

    Session-scoped so that it is in place before any module-scoped fixture runs
    `bench` (a function-scoped fixture would be set up after those).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        yield
