"""Curves to an experiment tracker: TensorBoard event files (default) or MLflow.

A unit's curves go to the tracker once the unit has finished, from the same
table as its CSV (``bench.curves``), under the same name. Logging a unit again
(a run resumed after a kill between the two) replaces what was logged before,
so a tracker never shows a unit twice. Tags: ``global/<metric>`` for the
server's values, ``client<k>/<metric>`` for client k's; the step is the round.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from bench.config import ConfigError, as_section
from bench.config_schema import RunConfig

UNIT_TAG = "bench.unit"


def metric_tag(client, metric: str) -> str:
    return f"global/{metric}" if pd.isna(client) else f"client{int(client)}/{metric}"


def log_curves(run_cfg: dict, run_dir: Path, name: str, frame: pd.DataFrame) -> None:
    """Sends one unit's curves to ``run.tracker`` (tensorboard, mlflow or none)."""
    run_cfg = as_section(RunConfig, run_cfg)
    tracker = run_cfg.tracker
    if tracker == "tensorboard":
        log_tensorboard(Path(run_dir) / "tensorboard" / name, frame)
    elif tracker == "mlflow":
        log_mlflow(tracking_uri(run_cfg, run_dir), Path(run_dir), name, frame)


def check_tracker(run_cfg: dict, run_dir: Path) -> None:
    """Before any training: the tracker's package imports and its store opens (ConfigError)."""
    run_cfg = as_section(RunConfig, run_cfg)
    tracker = run_cfg.tracker
    try:
        if tracker == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        elif tracker == "mlflow":
            from mlflow.tracking import MlflowClient

            _experiment(MlflowClient(tracking_uri=tracking_uri(run_cfg, run_dir)), Path(run_dir))
    except ImportError as error:
        raise ConfigError(
            f"run.tracker={tracker}: the package is not installed ({error}); "
            "install it or --set run.tracker=none"
        ) from None
    except Exception as error:  # MLflow raises many kinds for a store it cannot use
        raise ConfigError(
            f"run.tracking_uri={tracking_uri(run_cfg, run_dir)!r}: MLflow cannot use this store "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


def log_tensorboard(folder: Path, frame: pd.DataFrame) -> None:
    from torch.utils.tensorboard import SummaryWriter  # imported late: loads tensorboard

    shutil.rmtree(folder, ignore_errors=True)
    with SummaryWriter(log_dir=str(folder)) as writer:
        for row in frame.itertuples(index=False):
            writer.add_scalar(metric_tag(row.client, row.metric), row.value, int(row.round))


def tracking_uri(run_cfg: dict, run_dir: Path) -> str:
    """``run.tracking_uri``, or a SQLite store in the run folder."""
    run_cfg = as_section(RunConfig, run_cfg)
    return run_cfg.tracking_uri or f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


def log_mlflow(uri: str, run_dir: Path, name: str, frame: pd.DataFrame) -> None:
    """One MLflow run per unit in the experiment named after the run folder."""
    from mlflow.entities import Metric, Param  # imported late: mlflow takes seconds to load
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, run_dir)
    for previous in client.search_runs([experiment_id], f"tags.`{UNIT_TAG}` = '{name}'"):
        client.delete_run(previous.info.run_id)
    run = client.create_run(experiment_id, run_name=name, tags={UNIT_TAG: name})
    identity = frame.iloc[0] if len(frame) else {}
    params = [
        Param(key, str(identity[key]))
        for key in ("stage", "method", "seed", "setting", "n_labeled", "fold")
        if len(frame) and not pd.isna(identity[key])
    ]
    metrics = [
        Metric(metric_tag(row.client, row.metric), float(row.value), 0, int(row.round))
        for row in frame.itertuples(index=False)
    ]
    for start in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 per batch
        client.log_batch(
            run.info.run_id,
            metrics=metrics[start : start + 1000],
            params=params if not start else [],
        )
    client.set_terminated(run.info.run_id)


def _experiment(client, run_dir: Path) -> str:
    """The id of the experiment named after the run folder, created if new."""
    experiment = client.get_experiment_by_name(run_dir.name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(
        run_dir.name,
        artifact_location=(run_dir / "mlflow-artifacts").resolve().as_uri(),
        tags={"bench.run_dir": str(run_dir.resolve())},
    )
