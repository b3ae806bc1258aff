"""Fine-tuning as a federated task: segmentation from N labeled patients per client.

``federated``: FedAvg over the clients, the global model of the round with the
best mean validation Dice is kept. ``local``: each client trains alone for the
same number of steps and keeps its own best-on-validation model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from bench.augment import apply_affine, random_affine_theta
from bench.backbone import build_unet
from bench.device import DeviceSettings
from bench.evaluation import mean_dice
from bench.federated.task import FederatedTask, RoundResult
from bench.seeding import derive_seed, generator


class LabeledSlices:
    """All slices of a client's labeled volumes, for uniform sampling."""

    def __init__(self, volumes):
        self.images = torch.from_numpy(np.concatenate([v.image for v in volumes])).unsqueeze(1)
        self.labels = torch.from_numpy(
            np.concatenate([v.label for v in volumes]).astype(np.int64)
        ).unsqueeze(1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, batch_size: int, draws: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(self), (batch_size,), generator=draws)
        images, labels = self.images[index], self.labels[index]
        # Mild spatial augmentation, the same transform for image and label.
        theta = random_affine_theta(batch_size, draws, scale=(0.85, 1.0), max_rotation_deg=10.0)
        images = apply_affine(images, theta)
        labels = apply_affine(labels.float(), theta, mode="nearest").long()
        return images, labels


class FinetuneTask(FederatedTask):
    def __init__(
        self,
        *,
        config: dict,
        mode: str,
        seed: int,
        work_dir: Path,
        labeled: list[list],
        validation: list[list],
        num_classes: int,
        init_parts: list[dict],
        spec: dict | None = None,
    ):
        self.config, self.mode, self.seed, self.work_dir = config, mode, seed, Path(work_dir)
        self.aggregate = mode == "federated"
        # No validation patient (FCL's protocol at N = 8): the last round's model is kept.
        self.validates = self.aggregate and all(validation)
        self.num_clients = len(labeled)
        self.num_rounds = config["finetune"]["rounds"]
        self.num_classes = num_classes
        self.slices = [LabeledSlices(volumes) for volumes in labeled]
        self.validation = validation
        self.init_parts = init_parts
        self.device = DeviceSettings(config["run"])
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self._spec = spec or {}

    def spec(self) -> dict:
        return self._spec

    def build_model(self, client: int):
        torch.manual_seed(derive_seed(self.seed, "finetune-init"))
        model = build_unet(self.config["model"], out_channels=self.num_classes)
        for part, state in self.init_parts[client].items():
            getattr(model, part).load_state_dict(state)
        return self.device.module(model)

    def _optimizer(self, model):
        cfg = self.config["finetune"]
        return torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    def initial_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.build_model(0).state_dict().items()}

    def train_round(
        self, client: int, round_index: int, shared: dict, payloads: dict
    ) -> RoundResult:
        model = self.build_model(client)
        optimizer = self._optimizer(model)
        saved = self.load_client_state(client, round_index - 1)
        best = None
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            best = saved["best"]
        if self.aggregate:
            model.load_state_dict(shared)
        draws = generator(self.seed, "finetune", self.mode, round_index, client)
        torch.manual_seed(derive_seed(self.seed, "finetune-torch", self.mode, round_index, client))
        cfg = self.config["finetune"]
        model.train()
        losses = []
        for _ in range(cfg["local_steps"]):
            images, labels = self.slices[client].sample(cfg["batch_size"], draws)
            images, labels = images.to(self.device.device), labels.to(self.device.device)
            with self.device.autocast():
                loss = self.loss(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        if not self.aggregate:
            validation = self.validation[client]
            score = mean_dice(model, validation, self.num_classes, self.device.device)
            if best is None or not validation or score > best["score"]:
                best = {
                    "round": round_index,
                    "score": score,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                }
        self.save_client_state(
            client,
            round_index,
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best": best},
        )
        losses = torch.stack(losses).float().cpu()
        weights = cfg["fedavg_weights"]
        return RoundResult(
            shared={k: v.detach().cpu() for k, v in model.state_dict().items()},
            # FedAvg's weight: the labeled slices the client trains on (McMahan et al. 2017)
            num_examples=len(self.slices[client]) if weights == "examples" else 1,
            metrics={"loss_mean": float(losses.mean())},
        )

    def validate(self, client: int, shared: dict) -> tuple[int, dict[str, float]]:
        model = self.build_model(client)
        model.load_state_dict(shared)
        score = mean_dice(model, self.validation[client], self.num_classes, self.device.device)
        return max(1, len(self.validation[client])), {"val_dice": score}

    def selected_models(self, final: dict) -> list[dict]:
        """Per client, the state chosen on validation data."""
        if self.aggregate:
            chosen = final["best"]["state"] if final["best"] is not None else final["state"]
            return [chosen] * self.num_clients
        return [
            self.load_client_state(c, self.num_rounds - 1)["best"]["state"]
            for c in range(self.num_clients)
        ]
