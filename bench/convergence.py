"""Training budgets and convergence: steps per round, early stopping, the plateau test.

Every decision is a pure function of the per-round history, so a resumed run
(which reloads that history) decides exactly as an uninterrupted one.

Two scores, higher is better:

- ``val_dice``: the validation Dice of the round's model (the default whenever
  validation patients exist);
- ``loss``: ``-ln`` of the training loss smoothed over the last ``loss_window``
  rounds (where a protocol leaves no validation patient). On the log scale,
  ``loss_min_delta`` = 0.01 asks the smoothed loss to fall by about 1 %.

A round improves on the best one when its score exceeds the best score by more
than the minimum gain. Training stops once ``patience`` rounds in a row have
not improved, and not before ``min_rounds`` rounds (a segmentation model's
validation Dice often dips for a few rounds before it rises); the model kept is
the best round's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StoppingRule:
    patience: int  # rounds without improvement before stopping
    min_delta: float  # minimum gain of the score that counts as an improvement
    loss_window: int = 3  # rounds in the training-loss moving average
    min_rounds: int = 1  # no stop before this many rounds (validation Dice dips early on)

    @classmethod
    def from_config(cls, section: dict, criterion: str) -> StoppingRule:
        """The rule of ``finetune.early_stopping`` (or ``pretrain.plateau``) for a criterion."""
        delta = section["min_delta"] if criterion == "val_dice" else section["loss_min_delta"]
        return cls(
            patience=int(section["patience"]),
            min_delta=float(delta),
            loss_window=int(section["loss_window"]),
            min_rounds=int(section.get("min_rounds", 1)),
        )


@dataclass(frozen=True)
class Decision:
    best_round: int  # 1-based round whose model is kept
    best_score: float
    stop: bool  # the rule is met: training may end after this round


def smoothed(losses: list[float], window: int) -> list[float]:
    """Trailing moving average: entry r is the mean of rounds max(1, r - window + 1)..r."""
    return [
        sum(losses[max(0, r - window + 1) : r + 1]) / len(losses[max(0, r - window + 1) : r + 1])
        for r in range(len(losses))
    ]


def loss_scores(losses: list[float], window: int) -> list[float]:
    """Scores of the training-loss rule: ``-ln`` of the smoothed loss (higher is better)."""
    return [-math.log(max(value, 1e-12)) for value in smoothed(losses, window)]


def decide(scores: list[float], rule: StoppingRule) -> Decision:
    """The best round so far and whether ``patience`` rounds have passed without a gain."""
    if not scores:
        raise ValueError("no round to decide on")
    best = 0
    for r, score in enumerate(scores):
        if math.isfinite(score) and (
            not math.isfinite(scores[best]) or score > scores[best] + rule.min_delta
        ):
            best = r
    stop = len(scores) >= rule.min_rounds and len(scores) - 1 - best >= rule.patience
    return Decision(best_round=best + 1, best_score=scores[best], stop=stop)


def plateau_round(losses: list[float], rule: StoppingRule) -> int | None:
    """First round at which the loss rule would have stopped (None: it never plateaued)."""
    scores = loss_scores(losses, rule.loss_window)
    for r in range(1, len(scores) + 1):
        if decide(scores[:r], rule).stop:
            return r
    return None


def steps_per_round(section: dict, slices: int, slices_per_batch: int) -> int:
    """Optimiser steps of one round: ``local_steps`` when set, else ``epochs_per_round`` epochs.

    An epoch is one pass over ``slices`` (a client's labeled slices, or its pretraining
    pool) in batches of ``slices_per_batch``, rounded up; at least ``min_steps_per_round``
    steps (at least one). The minimum keeps a round of a client with one labeled patient
    (2 epochs: 5 steps) from being so short that the patience, counted in rounds, runs out
    while its validation Dice is still rising.
    """
    if section["local_steps"] is not None:
        return int(section["local_steps"])
    epochs = math.ceil(section["epochs_per_round"] * slices / slices_per_batch)
    return max(section.get("min_steps_per_round") or 1, epochs)
