"""Per-round curves of a run: the CSV files, and the same values read back from the trackers."""

import json

import pandas as pd
import pytest

from bench.config import load_config
from bench.curves import read_curves
from bench.runner import Runner
from bench.trackers import metric_tag

# SimCLR pretraining (2 rounds) then federated fine-tuning (at most 3 rounds), at 32 px.
OVERRIDES = [
    "data.synthetic.train=6",
    "data.synthetic.test=2",
    "data.preprocess.size=32",
    "data.preprocess.spacing_mm=5.0",
    "model.widths=[4,8,16]",
    "split.n_values=[1]",
    "pretrain.rounds=2",
    "pretrain.local_steps=1",
    "pretrain.volumes_per_batch=2",
    "finetune.modes=[federated]",
    "finetune.rounds=3",
    "finetune.local_steps=1",
    "run.threads=1",
]


def run(tmp_path, tracker: str):
    config = load_config("tiny", [*OVERRIDES, f"run.tracker={tracker}"])
    run_dir = tmp_path / tracker
    Runner(config, run_dir, progress=False).run(["simclr"])
    return run_dir


def curves(run_dir):
    files = sorted((run_dir / "curves").glob("*/*.csv"))
    return {
        f.relative_to(run_dir / "curves").with_suffix("").as_posix(): read_curves(f) for f in files
    }


def as_series(frame: pd.DataFrame) -> dict:
    """{tag: {round: value}} as a tracker holds the curves."""
    out = {}
    for row in frame.itertuples(index=False):
        out.setdefault(metric_tag(row.client, row.metric), {})[int(row.round)] = row.value
    return out


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("curves"), "tensorboard")


def test_every_unit_keeps_its_curves_and_how_it_ended(tensorboard_run):
    found = curves(tensorboard_run)
    assert set(found) == {"pretrain/simclr-seed0", "finetune/simclr-seed0-federated-N1-fold0"}
    pretrain = found["pretrain/simclr-seed0"]
    assert set(pretrain["round"]) == {1, 2}
    assert {"loss_mean", "loss_first", "loss_last", "lr", "steps"} <= set(pretrain["metric"])
    finetune = found["finetune/simclr-seed0-federated-N1-fold0"]
    server = finetune[finetune["client"].isna()]
    assert {"val_dice", "loss_mean", "loss_smoothed", "chosen_round"} <= set(server["metric"])
    summary = json.loads(
        (tensorboard_run / "curves/finetune/simclr-seed0-federated-N1-fold0.json").read_text()
    )
    chosen = server.loc[server["metric"] == "chosen_round", "value"].item()
    assert [c["chosen_round"] for c in summary["clients"]] == [chosen] * 2
    # The chosen round is the best validation round (no minimum gain in the tiny preset's rule
    # beyond 0.001), and the result rows say the same.
    rows = pd.concat(pd.read_csv(f) for f in (tensorboard_run / "results").glob("*.csv"))
    assert set(rows["chosen_round"]) == {chosen}
    assert set(rows["stopped_by"]) == {summary["clients"][0]["stopped_by"]}
    assert not (tensorboard_run / "work" / "finetune").exists() or not any(
        (tensorboard_run / "work" / "finetune").iterdir()
    )


def test_tensorboard_holds_the_csv_values(tensorboard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name, frame in curves(tensorboard_run).items():
        events = EventAccumulator(str(tensorboard_run / "tensorboard" / name))
        events.Reload()
        logged = {
            tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]
        }
        expected = as_series(frame)
        assert logged.keys() == expected.keys()
        for tag, values in expected.items():
            assert logged[tag] == pytest.approx(values, rel=1e-6), tag


@pytest.mark.slow
def test_mlflow_holds_the_csv_values(tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir = run(tmp_path, "mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(run_dir.name)
    for name, frame in curves(run_dir).items():
        (found,) = client.search_runs([experiment.experiment_id], f"tags.`bench.unit` = '{name}'")
        for tag, values in as_series(frame).items():
            history = client.get_metric_history(found.info.run_id, tag)
            assert {m.step: m.value for m in history} == pytest.approx(values, rel=1e-12), tag
