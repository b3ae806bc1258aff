"""bench: self-supervised pretraining for federated volumetric segmentation, benchmarked.

The Python API (docs/API.md): ``run_benchmark``, ``load_results``, ``summarise``, and
``load_pretrained`` for exported weights. They are imported on first use, so that
``import bench`` (and ``bench --help``) stay fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one place the version is written is pyproject.toml.
    __version__ = version("bench-fedssl")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

_API = {
    "run_benchmark": "bench.api",
    "load_results": "bench.api",
    "summarise": "bench.api",
    "load_pretrained": "bench.weights",
}
__all__ = ["__version__", "load_pretrained", "load_results", "run_benchmark", "summarise"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
