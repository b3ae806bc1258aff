"""Throughput profiling (``bench profile``) and the performance studies of docs/PERFORMANCE.md.

For reports: ``load_profile(run_dir)`` returns the rows of ``<run>/profile/*.csv``
as a DataFrame; ``run_profile(...)`` measures and returns a ``ProfileResult``
whose ``frame`` is the same DataFrame.
"""

import importlib

# Imported on first use, not with the package: `bench --help` builds the profile
# subcommand's parser from bench.profile.cli and must not pay for torch and MONAI.
_LAZY = {
    "COLUMNS": "bench.profile.records",
    "ProfileResult": "bench.profile.core",
    "format_table": "bench.profile.core",
    "load_profile": "bench.profile.records",
    "profile_folder": "bench.profile.records",
    "run_profile": "bench.profile.core",
    "StepSettings": "bench.profile.steps",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COLUMNS",
    "ProfileResult",
    "StepSettings",
    "format_table",
    "load_profile",
    "profile_dataframe",
    "profile_folder",
    "run_profile",
]


def profile_dataframe(
    methods: str | list[str] = "all", preset: str | None = "tiny", overrides=(), **settings
):
    """Runs the profile and returns its DataFrame (one row per step; columns ``COLUMNS``)."""
    from bench.config import load_config
    from bench.profile.core import run_profile
    from bench.profile.steps import StepSettings
    from bench.registry import resolve_method_names

    names = resolve_method_names(methods) if isinstance(methods, str) else list(methods)
    config = load_config(preset, list(overrides))
    return run_profile(names, config, StepSettings(**settings), preset=preset).frame
