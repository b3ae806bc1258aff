"""bench: self-supervised pretraining for federated volumetric segmentation, benchmarked."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one place the version is written is pyproject.toml.
    __version__ = version("bench-fedssl")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"
