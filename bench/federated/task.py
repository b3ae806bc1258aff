"""What the federated engine trains: a pretraining or a fine-tuning task.

A task is plain PyTorch; the Flower apps only move its arrays. Per-client
state lives on disk under the task's work folder, one file per completed
round, so that a client can run in any process (Flower's workers) and a
resumed run starts from the state of its last completed round.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.datasets.errors import DataError
from bench.io import atomic_torch_save, torch_load


@dataclass
class RoundResult:
    shared: dict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    payload: dict[str, np.ndarray] = field(default_factory=dict)


class FederatedTask:
    """Interface the engine drives; see PretrainTask and FinetuneTask."""

    num_clients: int
    num_rounds: int
    aggregate: bool  # False: each client keeps its own model (local setting)
    validates: bool = False
    work_dir: Path

    def initial_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_round(
        self, client: int, round_index: int, shared: dict, payloads: dict
    ) -> RoundResult:
        raise NotImplementedError

    def validate(self, client: int, shared: dict) -> tuple[int, dict[str, float]]:
        raise NotImplementedError

    def client_outcome(
        self, client: int, summary: dict, shared: dict | None
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """After the last round, run where the client's data and state are (its site):
        tensors and a JSON-able record the server keeps in ``final["clients"]``.

        ``summary``: ``rounds`` trained, ``stopped`` (by the rule) and ``best_round``
        (the global model kept, or None); ``shared``: that model (None when each
        client keeps its own)."""
        return {}, {}

    def server_decision(self, history: list[dict]):
        """After each round: which global model to keep and whether to stop (see
        ``bench.convergence.Decision``); None keeps the last round and never stops early."""
        return

    # -- per-client state on disk ---------------------------------------
    def client_state_path(self, client: int, round_index: int) -> Path:
        return self.work_dir / "clients" / f"client{client:03d}" / f"round{round_index:04d}.pt"

    def _saved_rounds(self, client: int) -> list[int]:
        folder = self.client_state_path(client, 0).parent
        if not folder.is_dir():
            return []
        return sorted(int(p.name[5:9]) for p in folder.glob("round[0-9][0-9][0-9][0-9].pt"))

    def failed_rounds(self, client: int) -> set[int]:
        """Round indices (0-based) in which the run recorded ``client`` as failed in training."""
        log = self.work_dir / "server" / "failures.json"
        if not log.exists():
            return set()
        try:
            failures = json.loads(log.read_text())
            return {
                int(f["round"]) - 1
                for f in failures
                if int(f["partition"]) == client and f.get("stage", "train") == "train"
            }
        except (OSError, ValueError, KeyError, TypeError):
            raise DataError(log, "unreadable client failure log (expected a JSON list)") from None

    def load_client_state(self, client: int, round_index: int) -> dict | None:
        """State the client saved at the end of ``round_index`` (None before round 0).

        A client the run records as failed in that round saved nothing for it: it goes
        on from the newest state it saved before (None if it never completed a round).
        A missing file for a round the client completed is an error naming the file.
        """
        if round_index < 0:
            return None
        path = self.client_state_path(client, round_index)
        if path.exists():
            return torch_load(path)
        if round_index not in self.failed_rounds(client):
            raise DataError(
                path,
                f"client {client} completed round {round_index} but its state file is missing; "
                "the run folder was altered: start it over with --fresh",
            )
        earlier = [r for r in self._saved_rounds(client) if r < round_index]
        logging.getLogger(__name__).warning(
            "client %s has no state for round %s (it failed then); going on from %s",
            client,
            round_index,
            f"round {earlier[-1]}" if earlier else "its initial state",
        )
        return torch_load(self.client_state_path(client, earlier[-1])) if earlier else None

    def save_client_state(self, client: int, round_index: int, state: dict) -> None:
        earlier = [r for r in self._saved_rounds(client) if r < round_index]
        atomic_torch_save(self.client_state_path(client, round_index), state)
        # Keep the state this round started from: a restarted server may replay this round.
        for stale in earlier[:-1]:
            self.client_state_path(client, stale).unlink(missing_ok=True)
