"""FCL: federated contrastive learning with feature exchange (Wu et al., MICCAI 2021).

Each client trains a main encoder + projection head (averaged with FedAvg) and
keeps a momentum copy of both (an exponential moving average, never sent).
The momentum features of the slices it sees go into a local memory bank
together with their partition labels; after local training the client sends
the bank's feature vectors (never images) to the server, which forwards them
to the other clients, where they replace the remote memory bank of the
previous round.

Loss for a query q (main-encoder feature of an augmented slice), Wu et al.
2021, Eq. 1-2:

    L = l(q, Lambda(q), Q') + l(q, P(q), Q')
    l(q, P, Q') = -1/|P| sum_{k+ in P} log( exp(q.k+/tau)
                  / (exp(q.k+/tau) + sum_{n in N(q)} exp(q.n/tau)) )

- Q': K features drawn at random (with the step's generator) from the local
  and remote banks together;
- Lambda(q) = {p in Q' : partition(p) = partition(q)}: the bank positives;
- P(q): the local positives, momentum features of the other view of the
  current batch's slices of q's partition: the same partition of the other
  volumes in the batch, and, with ``own_view_positive``, the other view of q's
  own slice;
- N(q): the denominator's sum. ``negatives: all_sampled`` (default) sums over
  all of Q', as the paper writes it (the entries of q's partition included);
  ``other_partitions`` sums over the entries of Q' of other partitions only
  (negatives "are the other partitions").

``local_negatives: bank`` (default) puts Q' in the local term's denominator, as the paper
writes it; ``batch`` puts the current batch's momentum features of other partitions there
instead, so that the local term cannot fall by telling the current batch's features from the
bank's older and remote ones (docs/PROTOCOL.md, "The CPU reproduction preset").

The defaults follow the formula as written (docs/PROTOCOL.md): all of Q' in the
denominator, and P(q) without q's own other view (the paper's local positives
are the other slices of q's partition). All features are L2-normalised. A query
whose Lambda(q) or P(q) is empty contributes 0 to that term. While both banks
are empty (the very first step) Q' falls back to the current batch's momentum
features. With ``empty_bank_each_round`` the local bank is emptied at the start
of a round whenever a round's slices do not refill it (local steps x slices per
step < bank_size), so that only this round's features are sampled and sent
(the paper: "banks are refreshed every round").

Local CL (``methods/local_cl.py``) is this class without exchange or FedAvg.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead

from bench.augment import random_view
from bench.methods._contrastive import positive_set_loss
from bench.methods._momentum import MomentumMethod
from bench.registry import register_method

NEGATIVES = ("all_sampled", "other_partitions")
LOCAL_NEGATIVES = ("bank", "batch")


def fcl_loss(
    queries: torch.Tensor,
    query_partitions: torch.Tensor,
    keys: torch.Tensor,
    key_partitions: torch.Tensor,
    sampled: torch.Tensor,
    sampled_partitions: torch.Tensor,
    temperature: float,
    *,
    negatives: str = "all_sampled",
    own_view_positive: bool = False,
    local_negatives: str = "bank",
) -> dict[str, torch.Tensor]:
    """FCL's loss (Wu et al. 2021, Eq. 1-2) for L2-normalised features.

    queries (N, D): main-encoder features q; keys (M >= N, D): the current batch's
    momentum features, the candidates for the local positives P(q) (those of
    q's partition), ``keys[i]`` being the other view of ``queries[i]``'s slice;
    sampled (K, D): Q', drawn from the memory banks. ``negatives``:
    "all_sampled" (the denominator sums over all of Q') or "other_partitions";
    ``own_view_positive``: whether ``keys[i]`` is in P(queries[i]); ``local_negatives``:
    "bank" (the local term's denominator is the bank term's) or "batch" (the keys of other
    partitions).
    Returns the mean over queries of ``l(q, Lambda(q), Q') + l(q, P(q), Q')`` (with
    "batch", the keys of other partitions in place of the second Q') as ``loss`` and the two
    terms (``bank`` and ``local``) separately.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives: unknown {negatives!r}; expected one of {NEGATIVES}")
    if local_negatives not in LOCAL_NEGATIVES:
        raise ValueError(
            f"local_negatives: unknown {local_negatives!r}; expected one of {LOCAL_NEGATIVES}"
        )
    bank_logits = queries @ sampled.T / temperature
    same_in_bank = query_partitions[:, None] == sampled_partitions[None, :]  # Lambda(q)
    if negatives == "all_sampled":
        negatives = torch.ones_like(same_in_bank)  # N(q) = Q', as the paper writes the sum
    else:
        negatives = ~same_in_bank  # the other partitions in Q'
    key_logits = queries @ keys.T / temperature
    same_in_batch = query_partitions[:, None] == key_partitions[None, :]  # P(q)
    if not own_view_positive:
        n = queries.shape[0]
        own = torch.zeros_like(same_in_batch)
        own[torch.arange(n), torch.arange(n)] = True
        same_in_batch = same_in_batch & ~own
    bank_term = positive_set_loss(bank_logits, same_in_bank, bank_logits, negatives)
    if local_negatives == "bank":
        local_term = positive_set_loss(key_logits, same_in_batch, bank_logits, negatives)
    else:
        other_partitions = query_partitions[:, None] != key_partitions[None, :]
        local_term = positive_set_loss(key_logits, same_in_batch, key_logits, other_partitions)
    return {
        "loss": (bank_term + local_term).mean(),
        "bank": bank_term.mean(),
        "local": local_term.mean(),
    }


@register_method
class FCL(MomentumMethod):
    name = "fcl"
    summary = (
        "FCL: partition-aware contrastive learning with a momentum encoder and local + remote "
        "memory banks of feature vectors exchanged through the server each round"
    )
    defaults: ClassVar[dict] = {
        "temperature": 0.1,
        "num_sampled": 256,
        "bank_size": 512,
        "momentum": 0.99,
        "hidden_dim": 512,
        "projection_dim": 128,
        "negatives": "all_sampled",
        "own_view_positive": False,
        "empty_bank_each_round": True,
        "local_negatives": "bank",
    }
    sources: ClassVar[dict[str, str]] = {
        "temperature": "choice: 0.1, unstated in FCL; the value of Chaitanya et al. 2020 and of "
        "the same group's positional contrastive learning (Zeng et al. 2021)",
        "num_sampled": "choice: K = 256 features drawn from the banks per step; FCL samples a "
        "subset because too many negatives hurt but does not state K",
        "bank_size": "choice: 512 momentum features per client's local bank (FIFO); at the "
        "default sampler (8 volumes x 4 partitions = 32 slices per step) 16 local steps refill it, "
        "so with 20 local steps a round the features sent are all from the current round",
        "momentum": "choice: 0.99, unstated in FCL; MoCo's 0.999 moves too slowly for the few "
        "hundred steps of a benchmark run",
        "hidden_dim": (
            "choice: 512, MoCo v2's 2-layer MLP head scaled to the 128-d U-Net bottleneck"
        ),
        "projection_dim": "128, MoCo v2 / SimCLR; unstated in FCL",
        "negatives": "all_sampled: the denominator sums over all of Q', as Wu et al. 2021 write "
        "Eq. 1; other_partitions: over Q' entries of other partitions only",
        "own_view_positive": "false: P(q) holds the other slices of q's partition, as written; "
        "true also counts the other view of q's own slice",
        "local_negatives": "bank: the local term's denominator is Q', as Wu et al. 2021 write "
        "Eq. 1-2; batch: the current batch's momentum features of other partitions (no bank, "
        "so no shortcut through the bank's older features)",
        "empty_bank_each_round": "true: the local bank is emptied at the start of a round when "
        "local steps x slices per step < bank_size (Wu et al.: banks refreshed every round)",
    }
    federation = "fedavg"
    pretrained_parts = ("encoder",)
    local_state_prefixes = ("momentum_", "bank_", "remote_")
    shared_doc = "encoder and projection head (FedAvg); local-bank feature vectors sent each round"
    local_doc = "momentum encoder and head, local and remote memory banks, optimiser state"
    # Whether feature vectors are exchanged through the server.
    exchanges_features = True

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        for option, allowed in (("negatives", NEGATIVES), ("local_negatives", LOCAL_NEGATIVES)):
            if hp[option] not in allowed:
                raise ValueError(
                    f"method {self.name}: {option}={hp[option]!r}; expected one of {allowed}"
                )
        dim = hp["projection_dim"]
        self.projection = MoCoProjectionHead(unet.encoder.out_dim, hp["hidden_dim"], dim)
        # The momentum encoder and head: an EMA of the main networks, never sent.
        self.add_momentum_targets(
            momentum_encoder=unet.encoder, momentum_projection=self.projection
        )
        size = int(hp["bank_size"])
        # Local bank: a FIFO ring buffer of momentum features and their partitions.
        self.register_buffer("bank_features", torch.zeros(size, dim))
        self.register_buffer("bank_partitions", torch.zeros(size, dtype=torch.long))
        self.register_buffer("bank_pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))
        # Remote bank: the other clients' local banks as last received.
        capacity = size * max(self.num_clients - 1, 0) if self.exchanges_features else 0
        self.register_buffer("remote_features", torch.zeros(capacity, dim))
        self.register_buffer("remote_partitions", torch.zeros(capacity, dtype=torch.long))
        self.register_buffer("remote_clients", torch.zeros(capacity, dtype=torch.long))
        self.register_buffer("remote_count", torch.zeros((), dtype=torch.long))

    # -- networks -------------------------------------------------------
    def _query(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.unet.encoder.embed(images)), dim=1)

    @torch.no_grad()
    def _key(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.momentum_projection(self.momentum_encoder.embed(images)), dim=1)

    def begin_round(self, round_index: int, num_rounds: int) -> None:
        super().begin_round(round_index, num_rounds)  # the momentum networks' schedule
        if self.bank_is_stale_at_round_start():
            self.bank_count.zero_()
            self.bank_pointer.zero_()

    # -- memory banks ---------------------------------------------------
    def bank_is_stale_at_round_start(self) -> bool:
        """Whether a round's slices would leave older features in the local bank (and so in
        what it samples and sends), and the option says to empty it."""
        if not self.hparams["empty_bank_each_round"] or self.slices_per_round is None:
            return False
        return self.slices_per_round < self.bank_features.shape[0]

    def bank_contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Valid features and partitions of the local and remote banks, concatenated."""
        n_local, n_remote = int(self.bank_count), int(self.remote_count)
        features = torch.cat([self.bank_features[:n_local], self.remote_features[:n_remote]])
        partitions = torch.cat([self.bank_partitions[:n_local], self.remote_partitions[:n_remote]])
        return features, partitions

    def sample_bank(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Q': K features drawn without replacement from the local and remote banks."""
        features, partitions = self.bank_contents()
        chosen = torch.randperm(features.shape[0], generator=generator)[
            : self.hparams["num_sampled"]
        ]
        chosen = chosen.to(features.device)
        return features[chosen], partitions[chosen]

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, partitions: torch.Tensor) -> None:
        size = self.bank_features.shape[0]
        features, partitions = features[-size:], partitions[-size:]
        slots = (int(self.bank_pointer) + torch.arange(features.shape[0])) % size
        slots = slots.to(self.bank_features.device)
        self.bank_features[slots] = features.to(self.bank_features.dtype)
        self.bank_partitions[slots] = partitions.to(self.bank_partitions.device)
        self.bank_pointer.fill_((int(self.bank_pointer) + features.shape[0]) % size)
        self.bank_count.fill_(min(size, int(self.bank_count) + features.shape[0]))

    # -- training -------------------------------------------------------
    def training_step(self, batch, generator):
        images, partitions = batch["image"], batch["partition"].to(batch["image"].device)
        view_a, _ = random_view(images, generator)
        view_b, _ = random_view(images, generator)
        q_a, q_b = self._query(view_a), self._query(view_b)
        k_a, k_b = self._key(view_a), self._key(view_b)
        if int(self.bank_count) + int(self.remote_count) > 0:
            sampled, sampled_partitions = self.sample_bank(generator)
            sampled_a = sampled_b = sampled
            parts_a = parts_b = sampled_partitions
        else:
            # First step: no bank yet, Q' is the current batch's momentum features.
            sampled_a, sampled_b, parts_a, parts_b = k_b, k_a, partitions, partitions
        tau = self.hparams["temperature"]
        # Each view's queries take the other view's momentum features as local positives.
        # The loss runs in float32 (bf16 autocast on GPU would round the logits).
        with torch.autocast(device_type=images.device.type, enabled=False):
            q_a, q_b, k_a, k_b = q_a.float(), q_b.float(), k_a.float(), k_b.float()
            sampled_a, sampled_b = sampled_a.float(), sampled_b.float()
            variant = {
                "negatives": self.hparams["negatives"],
                "own_view_positive": self.hparams["own_view_positive"],
                "local_negatives": self.hparams["local_negatives"],
            }
            out_a = fcl_loss(q_a, partitions, k_b, partitions, sampled_a, parts_a, tau, **variant)
            out_b = fcl_loss(q_b, partitions, k_a, partitions, sampled_b, parts_b, tau, **variant)
        self.enqueue(k_a, partitions)
        return {
            "loss": 0.5 * (out_a["loss"] + out_b["loss"]),
            "bank_term": 0.5 * (out_a["bank"] + out_b["bank"]).detach(),
            "local_term": 0.5 * (out_a["local"] + out_b["local"]).detach(),
        }

    def round_metrics(self) -> dict[str, float]:
        """How full the banks are: the loss changes scale while they fill (curves)."""
        metrics = {"bank_fill": int(self.bank_count) / self.bank_features.shape[0]}
        if self.exchanges_features and self.remote_features.shape[0]:
            metrics["remote_bank_fill"] = int(self.remote_count) / self.remote_features.shape[0]
        return metrics

    # -- federation -----------------------------------------------------
    def outgoing_payload(self) -> dict[str, np.ndarray]:
        """The local bank's feature vectors and partition ids (Wu et al. 2021, Sec. 2.2)."""
        n = int(self.bank_count)
        return {
            "features": self.bank_features[:n].detach().cpu().numpy().astype(np.float32),
            "partitions": self.bank_partitions[:n].cpu().numpy().astype(np.int32),
        }

    @torch.no_grad()
    def incoming_payload(self, payloads: dict[int, dict[str, np.ndarray]]) -> None:
        """Replaces the remote bank with the other clients' newest local banks."""
        features, partitions, clients = [], [], []
        for client_id in sorted(payloads):
            payload = payloads[client_id]
            if client_id == self.client_id or "features" not in payload:
                continue
            feats = np.asarray(payload["features"], dtype=np.float32)
            parts = np.asarray(payload["partitions"])
            if feats.ndim != 2 or feats.shape[1] != self.remote_features.shape[1]:
                raise ValueError(
                    f"method {self.name}: client {client_id} sent features of shape {feats.shape}; "
                    f"expected (n, {self.remote_features.shape[1]})"
                )
            if parts.shape != (feats.shape[0],):
                raise ValueError(
                    f"method {self.name}: client {client_id} sent {parts.shape} partitions "
                    f"for {feats.shape[0]} features"
                )
            features.append(torch.from_numpy(feats))
            partitions.append(torch.from_numpy(parts.astype(np.int64)))
            clients.append(torch.full((feats.shape[0],), client_id, dtype=torch.long))
        capacity = self.remote_features.shape[0]
        # Old features out: whatever arrives replaces the previous round's bank.
        self.remote_count.zero_()
        if not features:
            return
        features_t, partitions_t, clients_t = (
            torch.cat(features),
            torch.cat(partitions),
            torch.cat(clients),
        )
        if features_t.shape[0] > capacity:
            raise ValueError(
                f"method {self.name}: received {features_t.shape[0]} remote features, more than "
                "the "
                f"remote bank holds ({capacity} = bank_size x (num_clients - 1))"
            )
        n = features_t.shape[0]
        device = self.remote_features.device
        self.remote_features[:n] = features_t.to(device)
        self.remote_partitions[:n] = partitions_t.to(device)
        self.remote_clients[:n] = clients_t.to(device)
        self.remote_count.fill_(n)
