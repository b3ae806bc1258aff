"""Pretraining as a federated task: one method, K clients, R rounds of local epochs.

A round is ``pretrain.epochs_per_round`` epochs over the client's pool: one
epoch is its pool's slices in batches of ``volumes_per_batch x partitions``
slices. Pretraining never stops early; its loss plateau is recorded
(``bench.convergence.plateau_round``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.backbone import build_unet
from bench.config import Config, as_section
from bench.convergence import steps_per_round
from bench.device import DeviceSettings
from bench.federated.task import FederatedTask, RoundResult
from bench.methods.base import PretrainMethod
from bench.registry import get_method
from bench.sampling import SliceStack
from bench.seeding import derive_seed, generator


class PretrainTask(FederatedTask):
    def __init__(
        self,
        *,
        config: dict,  # a Config, or a plain tree (a job file's) that is wrapped as one
        method: str | type[PretrainMethod],
        seed: int,
        work_dir: Path,
        client_volumes: list[list[np.ndarray]],
        spec: dict | None = None,
        show_progress: bool = False,
    ):
        config = as_section(Config, config)
        self.config, self.seed, self.work_dir = config, seed, Path(work_dir)
        # A name is looked up here; a caller that already resolved the method passes its class.
        self.method_cls = get_method(method) if isinstance(method, str) else method
        self.method_name = self.method_cls.name
        setting = config.pretrain.setting
        self.aggregate = setting != "local" and self.method_cls.federation == "fedavg"
        self.exchanges = self.aggregate
        self.num_clients = len(client_volumes)
        self.num_rounds = config.pretrain.rounds
        self.validates = False
        # None: the client's volumes are held elsewhere (another site; the coordinator
        # holds none), so only that client's process trains it.
        self.stacks = [
            None if volumes is None else SliceStack(volumes, config.pretrain.partitions)
            for volumes in client_volumes
        ]
        cfg = config.pretrain
        self.steps = [
            None
            if stack is None
            else steps_per_round(cfg, len(stack.images), cfg.volumes_per_batch * cfg.partitions)
            for stack in self.stacks
        ]
        self.device = DeviceSettings(config.run)
        self._spec = spec or {}
        self.progress_label = f"pretraining {method}" if show_progress else None

    def spec(self) -> dict:
        return self._spec

    def build_method(self, client: int):
        torch.manual_seed(derive_seed(self.seed, "init"))
        unet = build_unet(self.config.model, out_channels=1)
        hparams = self.config.pretrain.methods.get(self.method_name, {})
        method = self.method_cls(
            unet,
            hparams,
            num_clients=self.num_clients,
            client_id=client,
            image_size=self.config.data.preprocess.size,
        )
        cfg = self.config.pretrain
        if self.steps[client] is not None:
            method.slices_per_round = self.steps[client] * cfg.volumes_per_batch * cfg.partitions
        return self.device.module(method)

    def _optimizer(self, method):
        cfg = self.config.pretrain
        return torch.optim.Adam(
            method.optimizer_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )

    def initial_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.build_method(0).shared_state().items()}

    def restore(self, client: int, round_index: int, shared: dict | None):
        """The client's method and optimiser as they stand at the start of ``round_index``."""
        method = self.build_method(client)
        optimizer = self._optimizer(method)
        saved = self.load_client_state(client, round_index - 1)
        if saved is not None:
            method.load_state_dict(saved["method"])
            optimizer.load_state_dict(saved["optimizer"])
        if self.aggregate and shared is not None:
            method.load_state_dict(shared, strict=False)
        return method, optimizer

    def train_round(
        self, client: int, round_index: int, shared: dict, payloads: dict
    ) -> RoundResult:
        method, optimizer = self.restore(client, round_index, shared)
        if self.exchanges:
            method.incoming_payload(payloads)
        method.begin_round(round_index, self.num_rounds)
        method.train()
        draws = generator(self.seed, "pretrain", round_index, client)
        torch.manual_seed(derive_seed(self.seed, "pretrain-torch", round_index, client))
        cfg = self.config.pretrain
        losses, terms = [], {}
        for _ in range(self.steps[client]):
            batch = self.device.batch(
                self.stacks[client].sample(cfg.volumes_per_batch, draws, client)
            )
            with self.device.autocast():
                outputs = method.training_step(batch, draws)
            loss = outputs["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_optimizer_step()
            losses.append(loss.detach())
            for name, value in outputs.items():
                if name != "loss" and torch.is_tensor(value) and value.numel() == 1:
                    terms.setdefault(name, []).append(value.detach())
        losses = torch.stack(losses).float().cpu().tolist()
        if not all(np.isfinite(losses)):
            raise FloatingPointError(
                f"{self.method_name}: client {client} round {round_index}: loss became {losses[-1]}"
            )
        self.save_client_state(
            client,
            round_index,
            {"method": method.state_dict(), "optimizer": optimizer.state_dict()},
        )
        return RoundResult(
            shared={k: v.detach().cpu() for k, v in method.shared_state().items()},
            num_examples=self.fedavg_weight(client),
            metrics={
                "loss_first": losses[0],
                "loss_last": losses[-1],
                "loss_mean": float(np.mean(losses)),
                # The means of the other terms the method reports (FCL's bank and local terms).
                **{name: float(torch.stack(v).float().mean()) for name, v in terms.items()},
                "lr": float(optimizer.param_groups[0]["lr"]),
                "steps": float(self.steps[client]),
                **method.round_metrics(),
            },
            payload=method.outgoing_payload() if self.exchanges else {},
        )

    def fedavg_weight(self, client: int) -> int:
        """The client's FedAvg weight: under ``examples`` the number of slices it trains on
        (its pretraining volumes' slices; McMahan et al. 2017), under ``uniform`` 1."""
        if self.config.pretrain.fedavg_weights == "examples":
            return int(self.stacks[client].images.shape[0])
        return 1

    def client_outcome(self, client: int, summary: dict, shared: dict | None):
        """The client's pretrained U-Net parts, flattened to ``part.key`` (computed where its
        state files are: at its site)."""
        method, _ = self.restore(client, summary["rounds"], shared if self.aggregate else None)
        arrays = {
            f"{name}.{key}": value.cpu()
            for name, state in method.pretrained_state().items()
            for key, value in state.items()
        }
        return arrays, {}

    def pretrained_parts(self, final: dict) -> list[dict]:
        """Per client, the U-Net parts fine-tuning loads (the same for all clients under FedAvg),
        as the clients reported them at the end of training (``final["clients"]``)."""
        parts = []
        for outcome in final["clients"]:
            client_parts: dict[str, dict] = {name: {} for name in self.method_cls.pretrained_parts}
            for flat, value in outcome["arrays"].items():
                name, key = flat.split(".", 1)
                client_parts[name][key] = value
            parts.append(client_parts)
        return parts
