"""The Python API: run a benchmark and read its results as tidy DataFrames.

``from bench import run_benchmark, load_results`` (docs/API.md). The CLI's ``bench run``
goes through ``open_run`` too, so both apply the same checks to a run folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from bench.config import ConfigError, as_section
from bench.config_schema import Config


def _method_names(methods: str | Sequence[str]) -> list[str]:
    from bench.registry import resolve_method_names

    spec = methods if isinstance(methods, str) else ",".join(methods)
    return resolve_method_names(spec)


@contextlib.contextmanager
def open_run(
    methods: str | Sequence[str],
    *,
    preset: str | None = "tiny",
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    split: str | Path | None = None,
    out: str | Path | None = None,
    fresh: bool = False,
    progress: bool | str = "none",
) -> Iterator:
    """A ``Runner`` for a checked, locked run folder (``.methods``: the resolved names).

    The options are merged as by ``bench run``: default.yaml <- ``preset`` <- ``config``
    (a YAML file) <- ``overrides`` (``"KEY=VALUE"`` strings). ``split``: a split file that
    decides the split. An existing run folder must hold the same config (and split); the
    folder is locked against other runs until the ``with`` block ends.
    """
    from bench.runner import Runner, adopt_split_file, open_run_dir

    resolved, names = resolve_run(
        methods, preset=preset, config=config, overrides=overrides, split=split
    )
    check_device(resolved)
    check_from_run(resolved)
    run_dir = Path(out) if out is not None else Path("runs") / (preset or "default")
    with open_run_dir(run_dir, resolved, fresh):
        if split is not None:
            adopt_split_file(run_dir, Path(split))
        runner = Runner(resolved, run_dir, progress=progress)
        runner.methods = names
        yield runner


def resolve_run(
    methods: str | Sequence[str],
    *,
    preset: str | None = "tiny",
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    split: str | Path | None = None,
) -> tuple:
    """The checked configuration and method names of a run, as ``open_run`` merges them."""
    from bench.config import load_config

    split_params = None
    if split is not None:
        from bench.datasets.splits import Split

        split_params = Split.load(split).params
    names = _method_names(methods)
    resolved = load_config(preset, list(overrides), config_file=config, split_params=split_params)
    return resolved, names


def check_from_run(config: dict) -> None:
    from bench.datasets.errors import DataError
    from bench.runfolder import check_made_by_bench

    source = as_section(Config, config).pretrain.from_run
    if source is None:
        return
    if not Path(source).is_dir():
        raise DataError(source, "pretrain.from_run: no such run folder")
    try:
        check_made_by_bench(Path(source))
    except DataError as error:
        raise DataError(source, f"pretrain.from_run: {error.message}") from None


def check_device(config: dict) -> None:
    if as_section(Config, config).run.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "run.device=cuda (--device cuda): no CUDA GPU is available here; use --device cpu"
            )


def run_benchmark(
    methods: str | Sequence[str],
    *,
    preset: str | None = "tiny",
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    split: str | Path | None = None,
    out: str | Path | None = None,
    fresh: bool = False,
    progress: bool | str = "none",
) -> pd.DataFrame:
    """Runs (or resumes) the benchmark and returns the result rows of ``methods``.

    One row per (method, seed, fine-tuning mode, N, fold, client, test patient, phase,
    class) with its Dice; the columns are those of docs/FORMATS.md. Same arguments as
    ``open_run``; e.g. ``run_benchmark(["random", "fcl"], preset="tiny", out="runs/t")``.
    """
    with open_run(
        methods,
        preset=preset,
        config=config,
        overrides=overrides,
        split=split,
        out=out,
        fresh=fresh,
        progress=progress,
    ) as runner:
        runner.run(runner.methods)
        rows = runner.store.load()
    return rows[rows["method"].isin(runner.methods)].reset_index(drop=True)


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """The result rows of a run folder made by ``bench run`` or ``run_benchmark``."""
    from bench.results import ResultStore

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.yaml)")
    return ResultStore(run_dir).load()


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per (fine-tuning mode, method) and N, as ``bench run`` prints it."""
    from bench.results import summary_table

    return summary_table(rows)
