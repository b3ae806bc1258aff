"""The base of the methods with momentum (EMA) networks: BYOL, MoCo, PGL, FCL and Local CL.

As solo-learn's ``momentum_pairs``: a method names its (online, momentum) module
pairs once, with ``add_momentum_targets``, and this class does the rest in one
place: the frozen copies, their start from the (aggregated) online networks in
round 0, the coefficient's schedule over rounds and the EMA after each optimiser
step (``lightly.models.utils.update_momentum``).

Not a method: modules whose name starts with ``_`` are not imported by the registry.
"""

from __future__ import annotations

import copy

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from bench.methods.base import PretrainMethod


def momentum_for_round(start: float, end: float, round_index: int, num_rounds: int) -> float:
    """EMA coefficient for a round: lightly's cosine schedule from ``start`` towards ``end``.

    The schedule runs over rounds (the method does not know the number of local
    steps) and never reaches ``end`` itself, so the last round still updates.
    Equal ``start`` and ``end`` give a constant coefficient.
    """
    if start == end:
        return float(start)
    return float(cosine_schedule(round_index, num_rounds + 1, start, end))


class MomentumMethod(PretrainMethod):
    """A method whose momentum networks are EMAs of online ones.

    Hyper-parameters: ``momentum`` (the coefficient, or the schedule's start) and,
    optionally, ``momentum_end`` (the cosine schedule's end; absent: constant).
    """

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        self.momentum = float(self.hparams["momentum"])
        # (online module path, momentum attribute) in the order they were added.
        self._momentum_names: list[tuple[str, str]] = []

    def add_momentum_targets(self, **online: nn.Module) -> None:
        """Adds a frozen copy of each online module as the attribute its keyword names.

        ``self.add_momentum_targets(target_encoder=self.unet.encoder)`` makes
        ``self.target_encoder`` follow ``self.unet.encoder``.
        """
        paths = {id(module): path for path, module in self.named_modules()}
        for name, module in online.items():
            target = copy.deepcopy(module)
            deactivate_requires_grad(target)
            setattr(self, name, target)
            self._momentum_names.append((paths[id(module)], name))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs, in the order they were added."""
        return [
            (self.get_submodule(online), self.get_submodule(target))
            for online, target in self._momentum_names
        ]

    def begin_round(self, round_index: int, num_rounds: int) -> None:
        super().begin_round(round_index, num_rounds)
        start = self.hparams["momentum"]
        end = self.hparams.get("momentum_end", start)
        self.momentum = momentum_for_round(start, end, round_index, num_rounds)
        if round_index == 0:
            # The momentum networks start as copies of the (aggregated) online networks.
            with torch.no_grad():
                for online, target in self.momentum_pairs():
                    for target_p, online_p in zip(
                        target.parameters(), online.parameters(), strict=True
                    ):
                        target_p.copy_(online_p)

    def after_optimizer_step(self) -> None:
        for online, target in self.momentum_pairs():
            update_momentum(online, target, m=self.momentum)
