"""Throughput profiling (``bench profile``) and the performance studies of docs/PERFORMANCE.md.

For reports: ``load_profile(run_dir)`` returns the rows of ``<run>/profile/*.csv``
as a DataFrame; ``run_profile(...)`` measures and returns a ``ProfileResult``
whose ``frame`` is the same DataFrame.
"""

from bench.profile.core import (
    COLUMNS,
    ProfileResult,
    format_table,
    load_profile,
    profile_folder,
    run_profile,
)
from bench.profile.steps import StepSettings

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
    from bench.registry import resolve_method_names

    names = resolve_method_names(methods) if isinstance(methods, str) else list(methods)
    config = load_config(preset, list(overrides))
    return run_profile(names, config, StepSettings(**settings), preset=preset).frame
