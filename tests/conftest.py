import os

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (as the engine's workers run), restored afterwards.

    Small tensors: one thread is about as fast, and avoids oversubscription in parallel runs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
