"""The contract every pretraining method fulfils.

A method is an ``nn.Module`` holding one client's copy of everything it
trains or keeps: the U-Net (``self.unet``), heads, momentum networks, queues
and memory banks (as buffers, so they are saved with the client's state).

The federated engine calls, on each client and each round:

1. ``incoming_payload(...)`` with what the server forwards from the other
   clients (FCL's feature vectors), then ``begin_round(round, num_rounds)``;
2. for every local step: ``training_step(batch, generator)`` -> ``loss``,
   backward, optimiser step, ``after_optimizer_step()`` (momentum updates);
3. ``outgoing_payload()``: extra arrays to send to the server.

State is split by ``is_shared(key)``: shared keys are averaged with FedAvg
(when ``federation == "fedavg"``), the others never leave the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # the U-Net's module imports MONAI: not needed to list the methods
    from bench.backbone import UNet2D

# BatchNorm's step counter (int64): kept on the client so that every shared tensor
# is floating point and FedAvg averages only what averaging means something for.
BN_COUNTER = "num_batches_tracked"


def is_counter(key: str) -> bool:
    return key.endswith(BN_COUNTER)


class PretrainMethod(nn.Module):
    name: ClassVar[str]
    summary: ClassVar[str]
    # Hyper-parameters and, for each, where its value comes from.
    defaults: ClassVar[dict] = {}
    sources: ClassVar[dict[str, str]] = {}
    # "fedavg": shared state averaged across clients; "none": each client alone.
    federation: ClassVar[str] = "fedavg"
    # Parts of the U-Net that fine-tuning loads from this method's pretraining.
    pretrained_parts: ClassVar[tuple[str, ...]] = ("encoder",)
    # Prefixes of state keys that stay on the client (queues, banks, targets).
    local_state_prefixes: ClassVar[tuple[str, ...]] = ()
    # Plain words for `bench methods --verbose`.
    shared_doc: ClassVar[str] = "all parameters"
    local_doc: ClassVar[str] = "optimiser state"
    needs_pretraining: ClassVar[bool] = True
    # Slices a client draws in one round (local steps x slices per step), set by the
    # pretraining task; None when unknown (tests). FCL sizes its bank refresh by it.
    slices_per_round: int | None = None

    def __init__(
        self,
        unet: UNet2D,
        hparams: dict,
        *,
        num_clients: int = 1,
        client_id: int = 0,
        image_size: int | None = None,
    ):
        super().__init__()
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"method {self.name}: unknown hyper-parameter(s) {sorted(unknown)}; "
                f"known: {sorted(self.defaults)}"
            )
        self.unet = unet
        self.hparams = {**self.defaults, **hparams}
        self.num_clients = num_clients
        self.client_id = client_id
        self.image_size = image_size  # side of the square input slices, when a head needs it
        self.round_index = 0
        self.num_rounds = 1

    # -- training -------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def after_optimizer_step(self) -> None:
        """Momentum updates and the like; nothing by default."""

    def begin_round(self, round_index: int, num_rounds: int) -> None:
        self.round_index, self.num_rounds = round_index, num_rounds

    def round_metrics(self) -> dict[str, float]:
        """Scalars describing the method's state at a round's end (curves); none by default."""
        return {}

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- federation -----------------------------------------------------
    def is_shared(self, key: str) -> bool:
        # BatchNorm's int64 step counters stay local: averaging them means nothing.
        return not key.startswith(self.local_state_prefixes) and not is_counter(key)

    def shared_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if self.is_shared(k)}

    def local_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not self.is_shared(k)}

    def outgoing_payload(self) -> dict[str, np.ndarray]:
        """Extra arrays for the server after local training (never image data)."""
        return {}

    def incoming_payload(self, payloads: dict[int, dict[str, np.ndarray]]) -> None:
        """Arrays the server forwards from the other clients, keyed by client id."""

    # -- transfer -------------------------------------------------------
    def pretrained_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """State dicts of the U-Net parts that fine-tuning loads."""
        return {part: getattr(self.unet, part).state_dict() for part in self.pretrained_parts}
