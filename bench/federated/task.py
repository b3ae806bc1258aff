"""What the federated engine trains: a pretraining or a fine-tuning task.

A task is plain PyTorch; the Flower apps only move its arrays. Per-client
state lives on disk under the task's work folder, one file per completed
round, so that a client can run in any process (Flower's workers) and a
resumed run starts from the state of its last completed round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

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

    def train_round(self, client: int, round_index: int, shared: dict, payloads: dict) -> RoundResult:
        raise NotImplementedError

    def validate(self, client: int, shared: dict) -> tuple[int, dict[str, float]]:
        raise NotImplementedError

    # -- per-client state on disk ---------------------------------------
    def client_state_path(self, client: int, round_index: int) -> Path:
        return self.work_dir / "clients" / f"client{client:03d}" / f"round{round_index:04d}.pt"

    def load_client_state(self, client: int, round_index: int) -> dict | None:
        """State the client saved at the end of ``round_index`` (None before round 0)."""
        if round_index < 0:
            return None
        path = self.client_state_path(client, round_index)
        if not path.exists():
            raise FileNotFoundError(f"{path}: client {client} has no state for round {round_index}")
        return torch_load(path)

    def save_client_state(self, client: int, round_index: int, state: dict) -> None:
        atomic_torch_save(self.client_state_path(client, round_index), state)
        # Keep the previous round's file: a restarted server may replay this round.
        stale = self.client_state_path(client, round_index - 2)
        stale.unlink(missing_ok=True)
