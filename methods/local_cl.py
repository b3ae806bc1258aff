"""Local CL: FCL's pretraining on each client alone (the baseline of Wu et al., MICCAI 2021).

The same partition-aware contrastive loss, momentum encoder and local memory
bank as FCL (``methods/fcl.py``), but no feature exchange (the remote bank
stays empty) and no FedAvg: each client's encoder sees only its own volumes.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from bench.methods.fcl import FCL
from bench.registry import register_method


@register_method
class LocalCL(FCL):
    name = "local_cl"
    summary = (
        "Local CL: FCL's contrastive pretraining on each client alone (no exchange, no FedAvg)"
    )
    defaults: ClassVar[dict] = dict(FCL.defaults)
    sources: ClassVar[dict[str, str]] = dict(FCL.sources)
    federation = "none"
    exchanges_features = False
    shared_doc = "nothing (each client trains alone)"
    local_doc = (
        "encoder, projection head, momentum encoder and head, local memory bank, optimiser state"
    )

    def outgoing_payload(self) -> dict[str, np.ndarray]:
        return {}

    def incoming_payload(self, payloads: dict[int, dict[str, np.ndarray]]) -> None:
        """Nothing arrives: the remote bank stays empty."""
