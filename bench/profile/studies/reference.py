"""``bench profile --study reference``: bench's pretraining steps against plain reference loops.

The same U-Net encoder (same initial weights), batch, image size, threads and
optimiser (Adam with the config's ``pretrain.lr`` and ``weight_decay``), fed
the same pre-augmented views: bench's step is the method's ``training_step``
with ``random_view`` replaced by a replay of the precomputed views (see
``replayed_views``), then ``zero_grad``, ``backward``, ``step`` and
``after_optimizer_step`` as ``PretrainTask`` runs them; the reference is the
same math written the way lightly's examples are: plain modules, lightly's
heads, losses and ``update_momentum``, no method class, no registry, no
device wrapper. For FCL (whose loss lightly does not have) the reference
keeps its own momentum encoder, FIFO bank and bank sampling and calls the
loss function of Wu et al. (``bench.methods.fcl.fcl_loss``); for GCL's global
stage it calls ``global_contrastive_loss`` (Chaitanya et al.).

Timing is interleaved: for each method in turn, every round times one step
of bench and one of the reference back to back (the order alternating
between rounds), so both see the same machine load; the figures are medians and IQRs over the
rounds, the ratio ``reference_s / bench_s`` (bench's throughput over the
reference's, > 1: bench faster) both from the medians and paired per round.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import statistics
import sys
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

from bench.augment import random_view
from bench.backbone import build_unet
from bench.profile.env import environment, load_average
from bench.profile.steps import synthetic_volumes
from bench.profile.timing import Contention, summarize
from bench.registry import get_method
from bench.sampling import SliceStack

REFERENCE_METHODS = ("simclr", "byol", "moco", "fcl", "gcl")


# ------------------------------------------------------------------ the reference loops


def _frozen_copy(module: nn.Module) -> nn.Module:
    copied = copy.deepcopy(module)
    deactivate_requires_grad(copied)
    return copied


class SimCLRLoop(nn.Module):
    """lightly's SimCLR example: backbone, projection head, NT-Xent."""

    def __init__(self, encoder, hp):
        super().__init__()
        self.backbone = encoder
        self.head = SimCLRProjectionHead(encoder.out_dim, hp["hidden_dim"], hp["projection_dim"])
        self.criterion = NTXentLoss(temperature=hp["temperature"])

    def loss(self, x0, x1, batch, generator):
        z0 = self.head(self.backbone.embed(x0))
        z1 = self.head(self.backbone.embed(x1))
        return self.criterion(z0, z1)

    def after_step(self):
        pass


class MoCoLoop(nn.Module):
    """lightly's MoCo example: query and momentum networks, NT-Xent with a memory bank."""

    def __init__(self, encoder, hp):
        super().__init__()
        self.backbone = encoder
        self.head = MoCoProjectionHead(encoder.out_dim, hp["hidden_dim"], hp["projection_dim"])
        self.backbone_momentum = _frozen_copy(encoder)
        self.head_momentum = _frozen_copy(self.head)
        self.criterion = NTXentLoss(
            temperature=hp["temperature"],
            memory_bank_size=(hp["queue_size"], hp["projection_dim"]),
        )
        self.m = hp["momentum"]

    def loss(self, x_query, x_key, batch, generator):
        query = self.head(self.backbone.embed(x_query))
        with torch.no_grad():
            key = self.head_momentum(self.backbone_momentum.embed(x_key))
        return self.criterion(query, key)

    def after_step(self):
        update_momentum(self.backbone, self.backbone_momentum, m=self.m)
        update_momentum(self.head, self.head_momentum, m=self.m)


class BYOLLoop(nn.Module):
    """lightly's BYOL example: online projector and predictor, EMA target, symmetrised loss."""

    def __init__(self, encoder, hp):
        super().__init__()
        dim = hp["projection_dim"]
        self.backbone = encoder
        self.projection_head = BYOLProjectionHead(encoder.out_dim, hp["hidden_dim"], dim)
        self.prediction_head = BYOLPredictionHead(dim, hp["hidden_dim"], dim)
        self.backbone_momentum = _frozen_copy(encoder)
        self.projection_head_momentum = _frozen_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()
        self.m = hp["momentum"]

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone.embed(x)))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum.embed(x)).detach()

    def loss(self, x0, x1, batch, generator):
        p0, p1 = self(x0), self(x1)
        z0, z1 = self.forward_momentum(x0), self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def after_step(self):
        update_momentum(self.backbone, self.backbone_momentum, m=self.m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=self.m)


class FCLLoop(nn.Module):
    """FCL written out: query and momentum networks, a FIFO bank of momentum features with
    partitions, Q' drawn from local + remote bank with ``randperm``, Wu et al.'s loss."""

    def __init__(self, encoder, hp):
        super().__init__()
        dim = hp["projection_dim"]
        self.backbone = encoder
        self.head = MoCoProjectionHead(encoder.out_dim, hp["hidden_dim"], dim)
        self.backbone_momentum = _frozen_copy(encoder)
        self.head_momentum = _frozen_copy(self.head)
        self.tau, self.m, self.k = hp["temperature"], hp["momentum"], hp["num_sampled"]
        self.variant = {k: hp[k] for k in ("negatives", "own_view_positive")}
        self.bank = torch.zeros(hp["bank_size"], dim)
        self.bank_parts = torch.zeros(hp["bank_size"], dtype=torch.long)
        self.bank_used, self.bank_next = 0, 0
        self.remote = torch.zeros(0, dim)
        self.remote_parts = torch.zeros(0, dtype=torch.long)

    def enqueue(self, features, partitions):
        size = self.bank.shape[0]
        slots = (self.bank_next + torch.arange(features.shape[0])) % size
        self.bank[slots], self.bank_parts[slots] = features.detach(), partitions
        self.bank_next = (self.bank_next + features.shape[0]) % size
        self.bank_used = min(size, self.bank_used + features.shape[0])

    def loss(self, x_a, x_b, batch, generator):
        from bench.methods.fcl import fcl_loss

        parts = batch["partition"]
        q_a = F.normalize(self.head(self.backbone.embed(x_a)), dim=1)
        q_b = F.normalize(self.head(self.backbone.embed(x_b)), dim=1)
        with torch.no_grad():
            k_a = F.normalize(self.head_momentum(self.backbone_momentum.embed(x_a)), dim=1)
            k_b = F.normalize(self.head_momentum(self.backbone_momentum.embed(x_b)), dim=1)
        bank = torch.cat([self.bank[: self.bank_used], self.remote])
        bank_parts = torch.cat([self.bank_parts[: self.bank_used], self.remote_parts])
        chosen = torch.randperm(bank.shape[0], generator=generator)[: self.k]
        sampled, sampled_parts = bank[chosen], bank_parts[chosen]
        args = (sampled, sampled_parts, self.tau)
        loss_a = fcl_loss(q_a, parts, k_b, parts, *args, **self.variant)["loss"]
        loss_b = fcl_loss(q_b, parts, k_a, parts, *args, **self.variant)["loss"]
        self.enqueue(k_a, parts)
        return 0.5 * (loss_a + loss_b)

    def after_step(self):
        update_momentum(self.backbone, self.backbone_momentum, m=self.m)
        update_momentum(self.head, self.head_momentum, m=self.m)


class GCLLoop(nn.Module):
    """GCL's global stage written out: encoder, bias-free MLP head, Chaitanya et al.'s loss."""

    def __init__(self, encoder, hp):
        super().__init__()
        self.backbone = encoder
        self.head = nn.Sequential(
            nn.Linear(encoder.out_dim, hp["hidden_dim"], bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hp["hidden_dim"], hp["projection_dim"], bias=False),
        )
        self.strategy, self.tau = hp["global_strategy"], hp["temperature"]

    def loss(self, x_a, x_b, batch, generator):
        from bench.methods.gcl import global_contrastive_loss

        z = self.head(self.backbone.embed(torch.cat([x_a, x_b])))
        return global_contrastive_loss(
            z, batch["partition"], batch["volume"], self.strategy, self.tau
        )

    def after_step(self):
        pass


REFERENCE_LOOPS: dict[str, type[nn.Module]] = {
    "simclr": SimCLRLoop,
    "byol": BYOLLoop,
    "moco": MoCoLoop,
    "fcl": FCLLoop,
    "gcl": GCLLoop,
}

# Where each reference keeps the module that bench's method calls by another name
# (bench attribute -> reference attribute); used once, to start from identical weights.
_SAME_WEIGHTS = {
    "simclr": {"projection": "head"},
    "moco": {
        "projection": "head",
        "momentum_encoder": "backbone_momentum",
        "momentum_projection": "head_momentum",
    },
    "byol": {
        "projection": "projection_head",
        "prediction": "prediction_head",
        "target_encoder": "backbone_momentum",
        "target_projection": "projection_head_momentum",
    },
    "fcl": {
        "projection": "head",
        "momentum_encoder": "backbone_momentum",
        "momentum_projection": "head_momentum",
    },
    "gcl": {"global_head": "head"},
}


# ------------------------------------------------------------------ bench's side


@contextlib.contextmanager
def replayed_views(views: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Within the block, ``random_view`` in bench's method modules returns ``views`` in order.

    Lets bench's ``training_step`` run on pre-augmented tensors without
    changing it: the methods draw their views through ``random_view``.
    """
    queue = list(views)

    def replay(images, generator, **kwargs):
        return queue.pop(0)

    patched = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("bench.methods") and getattr(module, "random_view", None) is random_view
    ]
    for module in patched:
        module.random_view = replay
    try:
        yield
    finally:
        for module in patched:
            module.random_view = random_view


class Side:
    """One side of the comparison: ``step(views, batch, generator) -> loss`` and its optimiser."""

    def __init__(self, loss_fn: Callable, after_step: Callable, params, pretrain_cfg: dict):
        self.loss_fn, self.after_step = loss_fn, after_step
        self.optimizer = torch.optim.Adam(
            params, lr=pretrain_cfg["lr"], weight_decay=pretrain_cfg["weight_decay"]
        )

    def step(self, views, batch, generator) -> torch.Tensor:
        loss = self.loss_fn(views, batch, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.after_step()
        return loss.detach()


def build_sides(
    name: str, config: dict, *, num_clients: int = 2, seed: int = 0
) -> tuple[Side, Side, nn.Module, nn.Module]:
    """bench's method and its reference loop from identical weights: (bench, ref, method, loop).

    Banks (FCL) are filled alike with random unit features from ``num_clients - 1``
    other clients and a full local bank, as in the middle of a round.
    """
    cfg_pre = config["pretrain"]
    torch.manual_seed(seed)
    unet = build_unet(config["model"], out_channels=1)
    method = get_method(name)(
        unet, cfg_pre["methods"].get(name, {}), num_clients=num_clients, client_id=0
    )
    method.begin_round(0, cfg_pre["rounds"])
    method.train()
    loop = REFERENCE_LOOPS[name](copy.deepcopy(unet.encoder), dict(method.hparams))
    for bench_attr, loop_attr in _SAME_WEIGHTS[name].items():
        getattr(loop, loop_attr).load_state_dict(getattr(method, bench_attr).state_dict())
    loop.backbone.load_state_dict(method.unet.encoder.state_dict())
    loop.train()
    if name == "moco":
        # lightly fills a new queue with random unit vectors: start both from the same ones.
        for buffer in ("bank", "bank_ptr"):
            getattr(loop.criterion.memory_bank, buffer).copy_(
                getattr(method.criterion.memory_bank, buffer)
            )
    if name == "fcl":
        _fill_banks(method, loop, num_clients, cfg_pre["partitions"], seed)

    def bench_loss(views, batch, generator):
        with replayed_views(views):
            return method.training_step(batch, generator)["loss"]

    def loop_loss(views, batch, generator):
        return loop.loss(views[0][0], views[1][0], batch, generator)

    bench = Side(bench_loss, method.after_optimizer_step, method.optimizer_parameters(), cfg_pre)
    trainable = [p for p in loop.parameters() if p.requires_grad]
    reference = Side(loop_loss, loop.after_step, trainable, cfg_pre)
    return bench, reference, method, loop


def _fill_banks(method, loop, num_clients: int, partitions: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    size, dim = method.bank_features.shape
    local = F.normalize(torch.randn(size, dim, generator=g), dim=1)
    local_parts = torch.randint(partitions, (size,), generator=g)
    method.enqueue(local, local_parts)
    loop.enqueue(local, local_parts)
    payloads = {}
    for client in range(1, num_clients):
        feats = F.normalize(torch.randn(size, dim, generator=g), dim=1)
        parts = torch.randint(partitions, (size,), generator=g)
        payloads[client] = {"features": feats.numpy(), "partitions": parts.numpy()}
    method.incoming_payload(payloads)
    loop.remote = torch.cat([torch.from_numpy(p["features"]) for p in payloads.values()])
    loop.remote_parts = torch.cat(
        [torch.from_numpy(p["partitions"]).long() for p in payloads.values()]
    )


def pre_augmented_batches(config: dict, volumes_per_batch: int, count: int, seed: int = 0):
    """``count`` (views, batch) pairs: sampled as ``SliceStack`` does, two ``random_view``s each."""
    size = config["data"]["preprocess"]["size"]
    stack = SliceStack(
        synthetic_volumes(max(2 * volumes_per_batch, 10), 10, size, seed),
        config["pretrain"]["partitions"],
    )
    draws = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        batch = stack.sample(volumes_per_batch, draws, 0)
        views = [random_view(batch["image"], draws), random_view(batch["image"], draws)]
        out.append((views, batch))
    return out


# ------------------------------------------------------------------ the study


def reference_study(
    config: dict,
    methods=REFERENCE_METHODS,
    *,
    batch: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Interleaved timing of bench's steps and the reference loops (see the module docstring)."""
    cfg_pre = config["pretrain"]
    partitions = cfg_pre["partitions"]
    volumes = max(1, (batch or cfg_pre["volumes_per_batch"] * partitions) // partitions)
    num_clients = max(2, config["split"]["clients"])
    rounds = warmup + repeats
    env = environment("cpu")
    data = pre_augmented_batches(config, volumes, rounds)
    times = {
        name: {"bench": [], "reference": [], "bench_thread": [], "reference_thread": []}
        for name in methods
    }
    others, first_losses = [], {}
    # One method's two sides at a time, so that only their networks, optimiser state and
    # banks are resident; within a method, bench and reference alternate.
    for name in methods:
        sides = build_sides(name, config, num_clients=num_clients)[:2]
        for r in range(rounds):
            views, batch_ = data[r]
            order = ("bench", "reference") if r % 2 == 0 else ("reference", "bench")
            for side_name in order:
                side = sides[0 if side_name == "bench" else 1]
                generator = torch.Generator().manual_seed(1000 + r)
                with Contention() as load:
                    loss = side.step(views, batch_, generator)
                if r == 0:
                    first_losses.setdefault(name, {})[side_name] = float(loss)
                if r >= warmup:
                    times[name][side_name].append(load.wall_s)
                    times[name][f"{side_name}_thread"].append(load.busiest_thread_s)
                    others.append(load.others_share)
        del sides
        gc.collect()
        log(f"{name} done")
    rows = []
    for name in methods:
        t = times[name]
        bench_s, ref_s = summarize(t["bench"]), summarize(t["reference"])
        paired = [ref / ben for ben, ref in zip(t["bench"], t["reference"], strict=True)]
        paired_thread = [
            ref / ben for ben, ref in zip(t["bench_thread"], t["reference_thread"], strict=True)
        ]
        rows.append(
            {
                "method": name,
                "batch": volumes * partitions,
                "bench_s": bench_s.median,
                "bench_iqr_s": bench_s.iqr,
                "reference_s": ref_s.median,
                "reference_iqr_s": ref_s.iqr,
                "ratio": ref_s.median / bench_s.median,
                "ratio_paired": statistics.median(paired),
                "ratio_paired_min": min(paired),
                "ratio_paired_max": max(paired),
                "ratio_thread": statistics.median(paired_thread),
                "first_loss_bench": first_losses[name]["bench"],
                "first_loss_reference": first_losses[name]["reference"],
            }
        )
    others_share = statistics.median(others) if others else float("nan")
    return {
        "rows": rows,
        "repeats": repeats,
        "warmup": warmup,
        "others_cpu_share": others_share,
        "environment": env,
        "load_average_end": load_average(),
        "summary": format_reference_table(rows, others_share),
    }


def format_reference_table(rows: list[dict], others_share: float) -> str:
    lines = [
        "| method | batch | bench ms (IQR) | reference ms (IQR) | bench/reference throughput | "
        "paired per round (min-max) | by busiest-thread time | first loss bench / reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['batch']} "
            f"| {row['bench_s'] * 1e3:.0f} ({row['bench_iqr_s'] * 1e3:.0f}) "
            f"| {row['reference_s'] * 1e3:.0f} ({row['reference_iqr_s'] * 1e3:.0f}) "
            f"| {row['ratio']:.3f} | {row['ratio_paired']:.3f} "
            f"({row['ratio_paired_min']:.2f}-{row['ratio_paired_max']:.2f}) "
            f"| {row['ratio_thread']:.3f} "
            f"| {row['first_loss_bench']:.6f} / {row['first_loss_reference']:.6f} |"
        )
    lines.append(
        f"\nother processes' share of the CPUs during the steps (median): {others_share:.0%}"
    )
    return "\n".join(lines)
