"""Timed steps: a method's pretraining step, the fine-tuning step, inference, and the samplers.

Each function builds what it times exactly as the training loops do
(``bench.pretrain.PretrainTask.train_round``, ``bench.finetune.FinetuneTask``,
``bench.evaluation.predict_volume``), with batches drawn beforehand so that a
step's time is the model's alone; the samplers are timed on their own.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from bench.augment import random_view
from bench.backbone import build_unet, instance_to_group_norm
from bench.convergence import steps_per_round
from bench.device import DeviceSettings
from bench.profile.flops import count_flops
from bench.profile.memory import PeakMemory
from bench.profile.timing import Contention, Timer, summarize, synchronizer
from bench.registry import get_method
from bench.sampling import SliceStack


@dataclass
class StepSettings:
    """How steps run: device, bf16 autocast, channels_last, torch.compile, norm kernel."""

    device: str = "cpu"
    amp: str = "none"  # none | bf16
    channels_last: bool = False
    compile: bool = False
    # "native": the U-Net as built; "group": InstanceNorm2d swapped for the identical
    # GroupNorm(C, C) (same state_dict keys, faster kernel; see docs/PERFORMANCE.md).
    norm_impl: str = "native"
    warmup: int = 1
    repeats: int = 5

    def run_cfg(self) -> dict:
        return {"device": self.device, "amp": self.amp, "channels_last": self.channels_last}

    def device_settings(self) -> DeviceSettings:
        return DeviceSettings(self.run_cfg())


@dataclass
class StepResult:
    """One timed step: per-section times (seconds, one entry per repeat) and what it counted."""

    phase: str
    name: str
    batch: int
    sections: dict[str, list[float]]
    step_times: list[float]
    flops_per_step: int = 0
    peak_memory_bytes: int = 0
    memory_growth_bytes: int = 0
    memory_kind: str = ""
    params: int = 0
    trainable_params: int = 0
    extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Per timed repeat: busiest-thread run time (the step's time on an idle CPU) and
    # the share of the machine other processes used (see ``timing.Contention``).
    thread_times: list[float] = field(default_factory=list)
    others_shares: list[float] = field(default_factory=list)

    def record_load(self, load: Contention) -> None:
        self.thread_times.append(load.busiest_thread_s)
        self.others_shares.append(load.others_share)


# ------------------------------------------------------------------ model set-up


def compile_blocks(module: nn.Module) -> int:
    """``torch.compile`` in place on each of the U-Net's ``TwoConv`` blocks (conv, norm, activation
    x 2).

    Blocks rather than the whole network: methods call ``encoder.embed`` and
    ``encoder.forward`` directly, which ``Module.compile`` would not reach;
    every block is entered through ``__call__``. Not MONAI's ``UpCat`` as a
    whole: on CPU, inductor (torch 2.14) fails on the backward of its
    replicate padding (``replication_pad2d_backward`` stride assertion), so
    upsampling, padding, concatenation and pooling stay eager. State-dict keys
    are unchanged. Returns the number of blocks compiled.
    """
    import torch._dynamo
    from monai.networks.nets.basic_unet import TwoConv

    # The blocks share one code object; each shape is a recompilation, and past dynamo's
    # limit (8) the remaining blocks silently run eagerly.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    count = 0
    for child in module.modules():
        if isinstance(child, TwoConv):
            child.compile(dynamic=False)
            count += 1
    return count


def count_parameters(module: nn.Module, only_trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not only_trainable)


def tensor_bytes(tensors: dict) -> int:
    """Bytes of a dict of tensors or arrays (``nbytes``), as Flower's records carry them."""
    total = 0
    for value in tensors.values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        else:
            total += int(np.asarray(value).nbytes)
    return total


# ------------------------------------------------------------------ synthetic data


def synthetic_volumes(
    count: int, depth: int, size: int, seed: int = 0, *, labels: bool = False, num_classes: int = 4
):
    """Random float32 volumes (Z, H, W) of the preprocessed shape; with labels, Volume-like
    objects."""
    rng = np.random.default_rng(seed)
    depths = [max(1, depth + int(d)) for d in rng.integers(-2, 3, size=count)]
    images = [rng.random((z, size, size), dtype=np.float32) for z in depths]
    if not labels:
        return images
    return [
        SimpleNamespace(image=img, label=rng.integers(0, num_classes, img.shape, dtype=np.uint8))
        for img in images
    ]


# ------------------------------------------------------------------ helpers


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def with_oom_retry(
    run: Callable[[int], StepResult],
    batch: int,
    device: torch.device | str,
    *,
    minimum: int = 1,
    log: Callable[[str], None] = print,
) -> StepResult:
    """``run(batch)``; on CUDA out-of-memory, retries with half the batch and records a note."""
    device = torch.device(device)
    notes = []
    while True:
        try:
            result = run(batch)
            free_device_memory(device)
        except torch.OutOfMemoryError:
            if device.type != "cuda" or batch // 2 < minimum:
                raise
            free_device_memory(device)
            note = f"CUDA out of memory at batch {batch}; retried with batch {batch // 2}"
            log(note)
            notes.append(note)
            batch //= 2
            continue
        result.notes = notes + result.notes
        return result


def _optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def _prepare_model(model: nn.Module, settings: StepSettings) -> nn.Module:
    if settings.norm_impl == "group":
        instance_to_group_norm(model)
    elif settings.norm_impl != "native":
        raise ValueError(f"norm_impl: expected 'native' or 'group', got {settings.norm_impl!r}")
    return settings.device_settings().module(model)


# ------------------------------------------------------------------ pretraining step


def profile_pretrain_step(
    method_name: str,
    config: dict,
    settings: StepSettings,
    *,
    volumes_per_batch: int,
    num_clients: int | None = None,
    seed: int = 0,
) -> StepResult:
    """A method's pretraining step, as ``PretrainTask.train_round`` runs it.

    Sections per repeat: ``forward`` (``training_step``, augmentation included,
    under autocast), ``zero_grad``, ``backward``, ``optimizer`` (``step``),
    ``after_step`` (``after_optimizer_step``: momentum updates). Once per round:
    ``payload_out`` (``outgoing_payload``) and ``payload_in``
    (``incoming_payload`` of the other clients' payloads), timed after the
    method has taken a round's worth of steps so its banks hold what the
    engine would send.
    """
    cfg_pre = config["pretrain"]
    partitions = cfg_pre["partitions"]
    num_clients = num_clients or max(2, config["split"]["clients"])
    cls = get_method(method_name)
    device = settings.device_settings()
    sync = synchronizer(device.device)
    timer = Timer(sync)
    size = config["data"]["preprocess"]["size"]
    batch = volumes_per_batch * partitions

    torch.manual_seed(seed)
    unet = build_unet(config["model"], out_channels=1)
    method = cls(
        unet, cfg_pre["methods"].get(method_name, {}), num_clients=num_clients, client_id=0
    )
    method = _prepare_model(method, settings)
    optimizer = _optimizer(method.optimizer_parameters(), cfg_pre)
    result = StepResult(
        "pretrain",
        method_name,
        batch,
        {},
        [],
        params=count_parameters(method),
        trainable_params=sum(p.numel() for p in method.optimizer_parameters()),
    )
    exchanges = cfg_pre["setting"] != "local" and cls.federation == "fedavg"

    stack = SliceStack(
        synthetic_volumes(max(2 * volumes_per_batch, 10), 10, size, seed), partitions
    )
    draws = torch.Generator().manual_seed(seed)
    steps = 1 + settings.warmup + settings.repeats
    batches = [device.batch(stack.sample(volumes_per_batch, draws, 0)) for _ in range(steps)]

    method.begin_round(0, cfg_pre["rounds"])
    method.train()
    round_steps = steps_per_round(cfg_pre, len(stack.images), volumes_per_batch * partitions)

    def forward(batch_):
        with device.autocast():
            return method.training_step(batch_, draws)["loss"]

    with PeakMemory(device.device) as peak:
        # One step under the FLOP counter (forward + backward), before any compilation.
        def counted():
            loss = forward(batches[0])
            loss.backward()
            return loss

        result.flops_per_step, _ = count_flops(counted)
        optimizer.zero_grad(set_to_none=True)
        if exchanges:
            # The other clients' banks as they arrive at a round's start.
            own = method.outgoing_payload()
            if own:
                method.incoming_payload({c: own for c in range(1, num_clients)})
        if settings.compile:
            compile_blocks(method)
        for i, batch_ in enumerate(batches[1:]):
            timed = i >= settings.warmup
            ctx = timer if timed else Timer(sync)
            with Contention() as load:
                with ctx.section("forward"):
                    loss = forward(batch_)
                with ctx.section("zero_grad"):
                    optimizer.zero_grad(set_to_none=True)
                with ctx.section("backward"):
                    loss.backward()
                with ctx.section("optimizer"):
                    optimizer.step()
                with ctx.section("after_step"):
                    method.after_optimizer_step()
            if timed:
                result.record_load(load)
            if not torch.isfinite(loss.detach()).all():
                result.notes.append(f"non-finite loss {float(loss)}")
    result.peak_memory_bytes, result.memory_kind = peak.peak_bytes, peak.kind
    result.memory_growth_bytes = peak.growth_bytes

    result.sections = dict(timer.samples)
    result.step_times = timer.total(["forward", "zero_grad", "backward", "optimizer", "after_step"])

    # Payloads: bring the method to a round's worth of steps (no gradients needed:
    # banks and queues fill in training_step), then time the exchange.
    payload = method.outgoing_payload() if exchanges else {}
    if payload:
        with torch.no_grad():
            for _ in range(max(0, round_steps - steps)):
                forward(device.batch(stack.sample(volumes_per_batch, draws, 0)))
        payload = method.outgoing_payload()
        timer.measure(method.outgoing_payload, name="payload_out", warmup=1, repeats=3)
        incoming = {c: payload for c in range(1, num_clients)}
        timer.measure(
            lambda: method.incoming_payload(incoming), name="payload_in", warmup=1, repeats=3
        )
        result.sections["payload_out"] = timer.samples["payload_out"]
        result.sections["payload_in"] = timer.samples["payload_in"]
    result.extra.update(
        bytes_weights=tensor_bytes(method.shared_state()),
        bytes_payload=tensor_bytes(payload),
        num_clients=num_clients,
        exchanges=exchanges,
        local_steps=round_steps,
    )
    return result


# ------------------------------------------------------------------ fine-tuning and inference


def _segmentation_model(config: dict, settings: StepSettings, num_classes: int, seed: int):
    torch.manual_seed(seed)
    return _prepare_model(build_unet(config["model"], out_channels=num_classes), settings)


def _labeled_batches(config, settings, batch, count, seed, num_classes):
    from bench.finetune import LabeledSlices

    size = config["data"]["preprocess"]["size"]
    slices = LabeledSlices(
        synthetic_volumes(4, 10, size, seed, labels=True, num_classes=num_classes)
    )
    draws = torch.Generator().manual_seed(seed)
    device = settings.device_settings()
    return [
        device.batch({"image": images, "label": labels})
        for images, labels in (slices.sample(batch, draws) for _ in range(count))
    ]


def profile_finetune_step(
    config: dict, settings: StepSettings, *, batch: int, num_classes: int = 4, seed: int = 0
) -> StepResult:
    """The segmentation step of ``FinetuneTask.train_round``: U-Net, DiceCE, Adam."""
    from monai.losses import DiceCELoss

    device = settings.device_settings()
    sync = synchronizer(device.device)
    timer = Timer(sync)
    model = _segmentation_model(config, settings, num_classes, seed)
    optimizer = _optimizer(model.parameters(), config["finetune"])
    criterion = DiceCELoss(to_onehot_y=True, softmax=True)
    result = StepResult(
        "finetune",
        "unet",
        batch,
        {},
        [],
        params=count_parameters(model),
        trainable_params=count_parameters(model, True),
    )
    batches = _labeled_batches(
        config, settings, batch, 1 + settings.warmup + settings.repeats, seed, num_classes
    )
    model.train()

    def forward(b):
        with device.autocast():
            return criterion(model(b["image"]), b["label"])

    with PeakMemory(device.device) as peak:

        def counted():
            loss = forward(batches[0])
            loss.backward()

        result.flops_per_step, _ = count_flops(counted)
        optimizer.zero_grad(set_to_none=True)
        if settings.compile:
            compile_blocks(model)
        for i, b in enumerate(batches[1:]):
            ctx = timer if i >= settings.warmup else Timer(sync)
            with Contention() as load:
                with ctx.section("forward"):
                    loss = forward(b)
                with ctx.section("zero_grad"):
                    optimizer.zero_grad(set_to_none=True)
                with ctx.section("backward"):
                    loss.backward()
                with ctx.section("optimizer"):
                    optimizer.step()
            if i >= settings.warmup:
                result.record_load(load)
    result.peak_memory_bytes, result.memory_kind = peak.peak_bytes, peak.kind
    result.memory_growth_bytes = peak.growth_bytes
    result.sections = dict(timer.samples)
    result.step_times = timer.total(["forward", "zero_grad", "backward", "optimizer"])
    result.extra["bytes_weights"] = tensor_bytes(model.state_dict())
    return result


def profile_inference(
    config: dict, settings: StepSettings, *, batch: int, num_classes: int = 4, seed: int = 0
) -> StepResult:
    """Slice-wise prediction as ``predict_volume`` runs it (eval mode, no gradients, argmax)."""
    device = settings.device_settings()
    sync = synchronizer(device.device)
    timer = Timer(sync)
    model = _segmentation_model(config, settings, num_classes, seed).eval()
    result = StepResult(
        "inference", "unet", batch, {}, [], params=count_parameters(model), trainable_params=0
    )
    size = config["data"]["preprocess"]["size"]
    images = device.batch({"image": torch.rand(batch, 1, size, size)})["image"]

    def forward():
        with torch.inference_mode(), device.autocast():
            return model(images).argmax(dim=1)

    with PeakMemory(device.device) as peak:
        result.flops_per_step, _ = count_flops(forward)
        if settings.compile:
            compile_blocks(model)
        for _ in range(settings.warmup):
            forward()
        for _ in range(settings.repeats):
            with Contention() as load, timer.section("forward"):
                forward()
            result.record_load(load)
    result.peak_memory_bytes, result.memory_kind = peak.peak_bytes, peak.kind
    result.memory_growth_bytes = peak.growth_bytes
    result.sections = dict(timer.samples)
    result.step_times = list(timer.samples["forward"])
    return result


# ------------------------------------------------------------------ data pipeline


def profile_samplers(
    config: dict,
    settings: StepSettings,
    *,
    volumes_per_batch: int,
    finetune_batch: int,
    repeats: int = 20,
    seed: int = 0,
) -> list[StepResult]:
    """Slices per second the samplers produce from arrays in memory (as after the cache is read).

    ``pretrain_sampler``: ``SliceStack.sample`` (indexing, gather) plus the move
    to the device; ``finetune_sampler``: ``LabeledSlices.sample`` (gather and
    the affine augmentation of images and labels); ``pretrain_augment``
    (informative): two ``random_view`` calls on a pretraining batch, which the
    methods run inside their forward.
    """
    from bench.finetune import LabeledSlices

    device = settings.device_settings()
    sync = synchronizer(device.device)
    size = config["data"]["preprocess"]["size"]
    partitions = config["pretrain"]["partitions"]
    draws = torch.Generator().manual_seed(seed)
    results = []

    stack = SliceStack(synthetic_volumes(20, 10, size, seed), partitions)
    timer = Timer(sync)
    timer.measure(
        lambda: device.batch(stack.sample(volumes_per_batch, draws, 0)),
        name="sample",
        warmup=2,
        repeats=repeats,
    )
    results.append(
        StepResult(
            "data",
            "pretrain_sampler",
            volumes_per_batch * partitions,
            dict(timer.samples),
            list(timer.samples["sample"]),
        )
    )

    labeled = LabeledSlices(synthetic_volumes(4, 10, size, seed, labels=True))
    timer = Timer(sync)

    def finetune_sample():
        images, labels = labeled.sample(finetune_batch, draws)
        return images.to(device.device), labels.to(device.device)

    timer.measure(finetune_sample, name="sample", warmup=2, repeats=repeats)
    results.append(
        StepResult(
            "data",
            "finetune_sampler",
            finetune_batch,
            dict(timer.samples),
            list(timer.samples["sample"]),
        )
    )

    images = device.batch(stack.sample(volumes_per_batch, draws, 0))["image"]
    timer = Timer(sync)
    timer.measure(
        lambda: (random_view(images, draws), random_view(images, draws)),
        name="sample",
        warmup=2,
        repeats=repeats,
    )
    results.append(
        StepResult(
            "data",
            "pretrain_augment",
            volumes_per_batch * partitions,
            dict(timer.samples),
            list(timer.samples["sample"]),
        )
    )
    return results


def median(values: list[float]) -> float:
    return summarize(values).median
