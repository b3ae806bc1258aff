"""Fine-tuning as a federated task: segmentation from N labeled patients per client.

A round is ``finetune.epochs_per_round`` epochs over a client's labeled slices,
up to ``finetune.rounds`` rounds, with early stopping (``bench.convergence``):

- ``federated``: FedAvg over the clients. After each round the server scores
  the global model: every client reports its validation Dice, the server takes
  the mean weighted by validation patients. It keeps the best round's global
  model and stops when the rule says so.
- ``local``: each client trains alone, scores its own model on its own
  validation patients after each round, keeps its best round's model and stops
  on its own (it idles while the others go on); the task ends when all stopped.

Without validation patients (``split.val_per_client: 0``) the score is the
smoothed training loss instead (the mean over clients, weighted by labeled
slices, under FedAvg).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from bench.augment import apply_affine, random_affine_theta
from bench.backbone import build_unet
from bench.config import as_section
from bench.config_schema import Config
from bench.convergence import Decision, StoppingRule, decide, loss_scores, steps_per_round
from bench.device import DeviceSettings
from bench.evaluation import mean_dice, score_volumes
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
        labeled: list[list | None],
        validation: list[list | None],
        num_classes: int,
        init_parts: list[dict] | None,
        spec: dict | None = None,
        test: list[list | None] | None = None,
        class_names: tuple[str, ...] = (),
        validation_patients: list[int] | None = None,
    ):
        """A client's ``labeled``, ``validation`` and ``test`` volumes are None where they are
        held elsewhere (another site's); ``validation_patients`` (per client, from the split)
        then says which clients validate. ``init_parts`` None: the starting parts come with
        the server's initial model (a site without the run's pretrained file)."""
        config = as_section(Config, config)
        self.config, self.mode, self.seed, self.work_dir = config, mode, seed, Path(work_dir)
        cfg = config.finetune
        self.aggregate = mode == "federated"
        self.num_clients = len(labeled)
        self.num_rounds = cfg.rounds
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.slices = [None if volumes is None else LabeledSlices(volumes) for volumes in labeled]
        self.steps = [
            None if s is None else steps_per_round(cfg, len(s), cfg.batch_size) for s in self.slices
        ]
        self.validation = validation
        self.test = test if test is not None else [[] for _ in range(self.num_clients)]
        if validation_patients is None:
            validation_patients = [len(volumes or ()) for volumes in validation]
        # The score each model is selected on: the server's for FedAvg, each client's alone.
        if self.aggregate:
            criterion = "val_dice" if any(validation_patients) else "loss"
            self.criteria = [criterion] * self.num_clients
        else:
            self.criteria = ["val_dice" if count else "loss" for count in validation_patients]
        self.validates = self.aggregate and self.criteria[0] == "val_dice"
        self.rules = [StoppingRule.from_config(cfg.early_stopping, c) for c in self.criteria]
        self.init_parts = init_parts
        self.device = DeviceSettings(config.run)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self._spec = spec or {}

    def spec(self) -> dict:
        return self._spec

    def build_model(self, client: int):
        torch.manual_seed(derive_seed(self.seed, "finetune-init"))
        model = build_unet(self.config.model, out_channels=self.num_classes)
        for part, state in (self.init_parts[client] if self.init_parts else {}).items():
            getattr(model, part).load_state_dict(state)
        return self.device.module(model)

    def _optimizer(self, model):
        cfg = self.config.finetune
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def initial_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.build_model(0).state_dict().items()}

    def train_round(
        self, client: int, round_index: int, shared: dict, payloads: dict
    ) -> RoundResult:
        saved = self.load_client_state(client, round_index - 1)
        if saved is not None and saved["progress"]["stopped"]:
            # Local fine-tuning: this client has stopped; it idles until the others stop too.
            self.save_client_state(client, round_index, saved)
            return RoundResult(
                shared=saved["model"],
                num_examples=len(self.slices[client]),
                metrics={"steps": 0.0, "stopped": 1.0},
            )
        model = self.build_model(client)
        optimizer = self._optimizer(model)
        best, progress = None, {"losses": [], "scores": [], "stopped": False}
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            best, progress = saved["best"], saved["progress"]
        if self.aggregate or (saved is None and self.init_parts is None):
            model.load_state_dict(shared)
        draws = generator(self.seed, "finetune", self.mode, round_index, client)
        torch.manual_seed(derive_seed(self.seed, "finetune-torch", self.mode, round_index, client))
        cfg = self.config.finetune
        model.train()
        losses = []
        for _ in range(self.steps[client]):
            images, labels = self.slices[client].sample(cfg.batch_size, draws)
            images, labels = images.to(self.device.device), labels.to(self.device.device)
            with self.device.autocast():
                loss = self.loss(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        losses = torch.stack(losses).float().cpu()
        metrics = {
            "loss_first": float(losses[0]),
            "loss_last": float(losses[-1]),
            "loss_mean": float(losses.mean()),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "steps": float(self.steps[client]),
        }
        if not self.aggregate:
            decision = self._local_decision(client, model, progress, metrics)
            if decision.best_round == round_index + 1:
                best = {
                    "round": decision.best_round,
                    "score": decision.best_score,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                }
            progress["stopped"] = decision.stop
            metrics.update(score=decision.best_score, stopped=float(decision.stop))
        self.save_client_state(
            client,
            round_index,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best": best,
                "progress": progress,
            },
        )
        weights = self.config.finetune.fedavg_weights
        return RoundResult(
            shared={k: v.detach().cpu() for k, v in model.state_dict().items()},
            # FedAvg's weight: the labeled slices the client trains on (McMahan et al. 2017)
            num_examples=len(self.slices[client]) if weights == "examples" else 1,
            metrics=metrics,
        )

    def _local_decision(self, client: int, model, progress: dict, metrics: dict) -> Decision:
        """Scores this round's model of a client training alone (validation Dice or loss)."""
        progress["losses"].append(metrics["loss_mean"])
        rule = self.rules[client]
        if self.criteria[client] == "val_dice":
            score = mean_dice(model, self.validation[client], self.num_classes, self.device.device)
            metrics["val_dice"] = score
            progress["scores"].append(score)
        else:
            progress["scores"] = loss_scores(progress["losses"], rule.loss_window)
        return decide(progress["scores"], rule)

    def validate(self, client: int, shared: dict) -> tuple[int, dict[str, float]]:
        """A client's validation Dice of the global model, weighted by its validation patients."""
        if not self.validation[client]:
            return 0, {"val_dice": 0.0}
        model = self.build_model(client)
        model.load_state_dict(shared)
        score = mean_dice(model, self.validation[client], self.num_classes, self.device.device)
        return len(self.validation[client]), {"val_dice": score}

    def server_decision(self, history: list[dict]) -> Decision | None:
        if not self.aggregate:
            # Each client keeps its own model; the task ends once every client has stopped.
            last = history[-1]["train"]
            stopped = len(last) == self.num_clients and all(
                m.get("stopped", 0.0) >= 1.0 for m in last.values()
            )
            return Decision(best_round=None, best_score=float("nan"), stop=stopped)
        rule = self.rules[0]
        if self.criteria[0] == "val_dice":
            scores = [
                e["validation"]["val_dice"] if e["validation"] else float("nan") for e in history
            ]
        else:
            scores = loss_scores([federated_loss(e["train"]) for e in history], rule.loss_window)
        return decide(scores, rule)

    def client_outcome(self, client: int, summary: dict, shared: dict | None):
        """At the client's site: its chosen model (sent back when each client keeps its own),
        how its training ended, and the per-volume scores of that model on the client's test
        patients (``bench.evaluation.score_volumes``): no image leaves the site."""
        rounds = summary["rounds"]
        if self.aggregate:
            state = shared
            chosen = summary["best_round"] if summary["best_round"] is not None else rounds
            outcome = summary_of(self.criteria[0], chosen, bool(summary["stopped"]), rounds)
        else:
            saved = self.load_client_state(client, rounds - 1)
            state = saved["best"]["state"]
            outcome = summary_of(
                self.criteria[client],
                saved["best"]["round"],
                saved["progress"]["stopped"],
                len(saved["progress"]["losses"]),
            )
        model = self.build_model(client)
        model.load_state_dict(state)
        scores = score_volumes(
            model,
            self.test[client],
            self.class_names,
            self.device.device,
            **self.config.evaluation,
        )
        arrays = {} if self.aggregate else {k: v.detach().cpu() for k, v in state.items()}
        return arrays, {"outcome": outcome, "scores": scores}

    def selected_models(self, final: dict) -> list[dict]:
        """Per client, the state of the chosen round."""
        if self.aggregate:
            chosen = final["best"]["state"] if final["best"] is not None else final["state"]
            return [chosen] * self.num_clients
        return [outcome["arrays"] for outcome in final["clients"]]

    def convergence(self, final: dict) -> list[dict]:
        """Per client: the round chosen, what stopped training, whether it converged."""
        return [outcome["info"]["outcome"] for outcome in final["clients"]]


def federated_loss(train: dict[int, dict]) -> float:
    """A FedAvg round's training loss: the clients' means weighted by their labeled slices."""
    weights = [m["num-examples"] for m in train.values()]
    return sum(m["loss_mean"] * w for m, w in zip(train.values(), weights, strict=True)) / sum(
        weights
    )


def summary_of(criterion: str, chosen: int, stopped: bool, rounds: int) -> dict:
    return {
        "criterion": criterion,
        "chosen_round": int(chosen),
        "rounds_trained": int(rounds),
        "stopped_by": "rule" if stopped else "maximum",
        "converged": bool(stopped),
    }
