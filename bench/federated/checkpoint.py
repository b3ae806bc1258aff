"""The server's state after each completed round, so a restarted server resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.datasets.errors import DataError
from bench.federated.serialization import (
    arrays_to_record,
    record_to_arrays,
    record_to_state,
    state_to_record,
)
from bench.io import atomic_torch_save, atomic_write_text, torch_load


def _as_tensors(arrays: dict) -> dict:
    """Payload arrays as tensors, which torch.load(weights_only=True) accepts."""
    import torch

    return {key: torch.from_numpy(array.copy()) for key, array in arrays.items()}


def _read_failures(path: Path) -> list[dict]:
    try:
        failures = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DataError(path, "unreadable client failure log (expected a JSON list)") from None
    if not isinstance(failures, list) or not all(isinstance(f, dict) for f in failures):
        raise DataError(path, "client failure log is not a JSON list of records")
    return failures


class ServerCheckpoint:
    """Also applies the task's stopping rule: ``decide(history)`` after each round.

    ``decide`` returns None (keep the last round, never stop early) or an object with
    ``best_round``, ``best_score`` (the global model to keep; ``best_round`` None when
    each client keeps its own) and ``stop``.
    """

    def __init__(self, folder: Path, decide=None):
        self.folder = Path(folder)
        self.decide = decide or (lambda history: None)
        self.history: list[dict] = []
        self.best: dict[str, Any] | None = None  # {"round", "score", "state"}: the model kept
        self.last_state: dict[str, Any] | None = None
        self.failures: list[dict] = []
        self.stopped = False  # the stopping rule ended training before the maximum

    def _path(self, round_number: int) -> Path:
        return self.folder / f"round{round_number:04d}.pt"

    def save(self, round_number: int, arrays, strategy) -> None:
        state = record_to_state(arrays)
        entry = {
            "round": round_number,
            "train": strategy.last_train_metrics,
            "validation": strategy.last_validation,
            "bytes_up": dict(strategy.bytes_up),
            "finished_at": time.time(),  # wall clock, for time per round
        }
        self.history.append(entry)
        decision = self.decide(self.history)
        if decision is not None:
            if decision.best_round == round_number:
                self.best = {"round": round_number, "score": decision.best_score, "state": state}
            self.stopped = decision.stop
        self.last_state = state
        self.failures = list(strategy.failures)
        atomic_torch_save(
            self._path(round_number),
            {
                "round": round_number,
                "state": state,
                "payloads": {
                    p: _as_tensors(record_to_arrays(r)) for p, r in strategy.payloads.items()
                },
                "history": self.history,
                "best": self.best,
                "stopped": self.stopped,
                "failures": strategy.failures,
            },
        )
        self.record_failures(strategy)
        atomic_write_text(self.folder / "latest.txt", str(round_number))
        self._path(round_number - 1).unlink(missing_ok=True)

    def record_failures(self, strategy) -> None:
        """All client failures so far, those of a round that stopped the run included."""
        atomic_write_text(self.folder / "failures.json", json.dumps(strategy.failures, indent=1))

    def resume(self, strategy):
        """(arrays, completed rounds) from the last checkpoint, or (None, 0)."""
        latest = self.folder / "latest.txt"
        if not latest.exists():
            log = self.folder / "failures.json"
            if log.exists():  # the run stopped in its first round
                strategy.failures = _read_failures(log)
                self.failures = list(strategy.failures)
            return None, 0
        try:
            saved = torch_load(self._path(int(latest.read_text())))
        except ValueError:
            raise DataError(latest, "expected the number of the last completed round") from None
        self.history, self.best, self.last_state = saved["history"], saved["best"], saved["state"]
        self.stopped = saved.get("stopped", False)
        strategy.payloads = {
            p: arrays_to_record({k: t.numpy() for k, t in a.items()})
            for p, a in saved["payloads"].items()
        }
        log = self.folder / "failures.json"
        strategy.failures = _read_failures(log) if log.exists() else list(saved["failures"])
        self.failures = list(strategy.failures)
        return state_to_record(saved["state"]), saved["round"]

    def finish(self, num_rounds: int, clients: list[dict] | None = None) -> None:
        """``num_rounds``: the rounds trained (fewer than the maximum when the rule stopped);
        ``clients``: what each client reported at the end (``bench.federated.outcomes``)."""
        atomic_torch_save(
            self.folder / "final.pt",
            {
                "rounds": num_rounds,
                "stopped": self.stopped,
                "state": self.last_state,
                "best": self.best,
                "history": self.history,
                "failures": self.failures,
                "clients": clients or [],
            },
        )


def load_final(folder: Path) -> dict:
    return torch_load(Path(folder) / "server" / "final.pt")
