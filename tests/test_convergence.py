"""Early stopping and convergence: the rule, the round a unit chooses and the model it keeps."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.config import ConfigError, load_config
from bench.convergence import StoppingRule, decide, loss_scores, plateau_round, steps_per_round
from bench.federated.engine import run_in_process
from bench.finetune import FinetuneTask

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors; no oversubscription

# --------------------------------------------------------------- the rule on hand-made scores


def test_the_best_round_needs_more_than_the_minimum_gain():
    rule = StoppingRule(patience=2, min_delta=0.05)
    # Round 3 gains 0.04 over round 2: not enough, round 2 stays the best.
    assert decide([0.1, 0.5, 0.54], rule) == decide([0.1, 0.5, 0.54], rule)
    assert decide([0.1, 0.5, 0.54], rule).best_round == 2
    assert decide([0.1, 0.5, 0.56], rule).best_round == 3


def test_training_stops_after_patience_rounds_without_a_gain():
    rule = StoppingRule(patience=2, min_delta=0.0)
    assert not decide([0.1, 0.5, 0.4], rule).stop
    stopped = decide([0.1, 0.5, 0.4, 0.3], rule)
    assert stopped.stop and stopped.best_round == 2 and stopped.best_score == 0.5


def test_no_stop_before_the_minimum_rounds():
    rule = StoppingRule(patience=1, min_delta=0.0, min_rounds=4)
    assert not decide([0.5, 0.1, 0.1], rule).stop
    assert decide([0.5, 0.1, 0.1, 0.1], rule).stop


def test_a_nan_score_is_never_the_best():
    rule = StoppingRule(patience=5, min_delta=0.0)
    assert decide([math.nan, 0.2, math.nan], rule).best_round == 2


def test_the_loss_rule_scores_the_log_of_a_moving_average():
    scores = loss_scores([4.0, 2.0, 1.0], window=2)
    assert scores == pytest.approx([-math.log(4.0), -math.log(3.0), -math.log(1.5)])


def test_the_plateau_round_is_where_the_loss_rule_would_stop():
    rule = StoppingRule(patience=2, min_delta=0.01, loss_window=1)
    # Falls to 1.0 at round 3, then stays: the rule stops two rounds later.
    assert plateau_round([3.0, 2.0, 1.0, 1.0, 0.999, 1.0], rule) == 5
    assert plateau_round([3.0, 2.0, 1.0, 0.5], rule) is None


def test_steps_per_round_count_epochs_over_the_slices():
    section = {"local_steps": None, "epochs_per_round": 2}
    assert steps_per_round(section, slices=20, slices_per_batch=8) == 5  # ceil(40 / 8)
    assert steps_per_round({**section, "local_steps": 3}, slices=20, slices_per_batch=8) == 3


def test_a_round_has_at_least_its_minimum_of_steps_and_more_when_its_epochs_need_them():
    section = {"local_steps": None, "epochs_per_round": 2, "min_steps_per_round": 20}
    assert steps_per_round(section, slices=20, slices_per_batch=8) == 20  # 5 epochs' steps
    assert steps_per_round(section, slices=160, slices_per_batch=8) == 40  # 2 epochs
    assert steps_per_round({**section, "local_steps": 3}, slices=20, slices_per_batch=8) == 3
    small = load_config("small", [])
    assert steps_per_round(small.finetune, slices=20, slices_per_batch=8) == 20
    with pytest.raises(ConfigError, match="finetune.min_steps_per_round"):
        load_config("tiny", ["finetune.min_steps_per_round=0"])


def test_bad_budgets_are_refused():
    with pytest.raises(ConfigError, match="finetune.early_stopping.patience"):
        load_config("tiny", ["finetune.early_stopping.patience=0"])
    with pytest.raises(ConfigError, match="pretrain.local_steps"):
        load_config("tiny", ["pretrain.local_steps=-1"])


# --------------------------------------------------------------- fine-tuning units


def labeled_volumes(count, seed, size=32, depth=4):
    """Disc-and-ring volumes whose labels the image shows: a U-Net learns them in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    volumes = []
    for _ in range(count):
        cy, cx = rng.integers(12, size - 12, size=2)
        radius = np.hypot(yy - cy, xx - cx)
        label = np.select([radius < 4, radius < 7, radius < 9], [3, 2, 1], 0).astype(np.uint8)
        image = (label / 3.0 + 0.1 * rng.standard_normal((size, size))).astype(np.float32)
        volumes.append(
            SimpleNamespace(
                image=np.repeat(image[None], depth, 0), label=np.repeat(label[None], depth, 0)
            )
        )
    return volumes


def make_task(tmp_path, name, mode, *, validation=True, task_cls=FinetuneTask, **early):
    stopping = {"patience": 100, "min_rounds": 1, "min_delta": 0.0, "loss_min_delta": 0.0, **early}
    rounds = stopping.pop("rounds", 4)
    overrides = [
        "data.preprocess.size=32",
        "model.widths=[4,8,16]",
        f"finetune.rounds={rounds}",
        "finetune.local_steps=2",
        "finetune.batch_size=4",
        "run.threads=1",
        *(f"finetune.early_stopping.{key}={value}" for key, value in stopping.items()),
    ]
    config = load_config("tiny", overrides)
    return task_cls(
        config=config,
        mode=mode,
        seed=0,
        work_dir=tmp_path / name,
        labeled=[labeled_volumes(2, seed=c) for c in range(2)],
        validation=[labeled_volumes(1, seed=10 + c) if validation else [] for c in range(2)],
        num_classes=4,
        init_parts=[{}, {}],
    )


def train(task):
    final = run_in_process(task)
    return final, task.selected_models(final), task.convergence(final)


def last_models(task, final):
    """Per client, the model at the end of the last round trained (not the one selected)."""
    if task.aggregate:
        return [final["state"]] * task.num_clients
    return [
        task.load_client_state(c, final["rounds"] - 1)["model"] for c in range(task.num_clients)
    ]


def trained_for(tmp_path, mode, rounds, validation=True):
    task = make_task(
        tmp_path, f"{mode}-{rounds}-{validation}", mode, validation=validation, rounds=rounds
    )
    return last_models(task, run_in_process(task))


def assert_same_models(ours, theirs):
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["local", "federated"])
def test_a_unit_that_hits_its_maximum_is_not_converged(tmp_path, mode):
    final, _, outcome = train(make_task(tmp_path, "max", mode, rounds=3))
    assert final["rounds"] == 3 and not final["stopped"]
    for client in outcome:
        assert client["stopped_by"] == "maximum" and client["converged"] is False
        assert client["rounds_trained"] == 3 and 1 <= client["chosen_round"] <= 3


# Validation Dice scripted per client and round: client 0's best round is 2 (it stops after
# round 4, patience 2), client 1's is 3 (it stops after round 5); FedAvg scores their mean.
SCRIPTED = ([0.1, 0.5, 0.3, 0.2], [0.1, 0.2, 0.6, 0.5, 0.4])


@pytest.fixture
def scripted_dice(monkeypatch):
    """Replaces the validation Dice by SCRIPTED, keyed by the validation list a task scores.

    Training draws nothing from the scoring, so the models are those of real training;
    lists not registered (the reference units) score 0.
    """
    scripts = {}

    def fake(model, volumes, num_classes, device):
        queue = scripts.get(id(volumes))
        return queue.pop(0) if queue else 0.0

    monkeypatch.setattr("bench.finetune.mean_dice", fake)
    return lambda task: scripts.update(
        {id(v): list(s) for v, s in zip(task.validation, SCRIPTED, strict=True)}
    )


@pytest.mark.parametrize("mode", ["local", "federated"])
def test_a_unit_stopped_by_the_rule_keeps_the_model_of_its_chosen_round(
    tmp_path, mode, scripted_dice
):
    task = make_task(tmp_path, "rule", mode, patience=2, rounds=8, min_delta=0.01)
    scripted_dice(task)
    final, kept, outcome = train(task)
    if mode == "local":
        # Each client chooses and stops on its own; the task ends when the last one stops.
        assert final["rounds"] == 5
        expected = [(2, 4), (3, 5)]
    else:
        # Mean of the scripts: 0.1, 0.35, 0.45, 0.35 -> round 3 is best, stop after round 5.
        assert final["rounds"] == 5 and final["stopped"]
        expected = [(3, 5), (3, 5)]
    for client, (chosen, trained) in zip(outcome, expected, strict=True):
        assert client == {
            "criterion": "val_dice",
            "chosen_round": chosen,
            "rounds_trained": trained,
            "stopped_by": "rule",
            "converged": True,
        }
    # The model kept is the one a unit trained for exactly its chosen round gives, not the last.
    last = last_models(task, final)
    for c, (chosen, _) in enumerate(expected):
        assert_same_models([kept[c]], [trained_for(tmp_path, mode, chosen)[c]])
        assert not all(torch.equal(kept[c][k], last[c][k]) for k in kept[c])


@pytest.mark.slow
def test_without_validation_the_loss_rule_stops_and_keeps_its_chosen_round(tmp_path):
    # No score can gain 1.0 in ln of the loss: round 1 stays the best and training stops two
    # rounds later, before the maximum of 6.
    task = make_task(
        tmp_path, "rule", "federated", validation=False, patience=2, rounds=6, loss_min_delta=1.0
    )
    final, kept, outcome = train(task)
    assert final["rounds"] == 3 and final["stopped"]
    for client in outcome:
        assert client == {
            "criterion": "loss",
            "chosen_round": 1,
            "rounds_trained": 3,
            "stopped_by": "rule",
            "converged": True,
        }
    assert_same_models(kept, trained_for(tmp_path, "federated", 1, validation=False))


class Interrupted(FinetuneTask):
    """Client 1 fails in its third round, once: the server stops as after a kill."""

    failed = False

    def train_round(self, client, round_index, shared, payloads):
        if client == 1 and round_index == 2 and not Interrupted.failed:
            Interrupted.failed = True
            raise RuntimeError("killed")
        return super().train_round(client, round_index, shared, payloads)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["local", "federated"])
def test_resuming_mid_unit_keeps_the_early_stopping_state(tmp_path, mode):
    early = {"patience": 3, "min_delta": 1.0, "rounds": 8}
    reference = train(make_task(tmp_path, "whole", mode, **early))
    Interrupted.failed = False
    with pytest.raises(Exception, match="killed|replied"):
        run_in_process(make_task(tmp_path, "resumed", mode, task_cls=Interrupted, **early))
    resumed = train(make_task(tmp_path, "resumed", mode, **early))
    assert resumed[0]["rounds"] == reference[0]["rounds"] == 4
    assert resumed[2] == reference[2]
    assert_same_models(resumed[1], reference[1])
