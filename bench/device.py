"""Device placement, bf16 autocast, channels_last and the CPU allocator setting, from the run
config."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from bench.allocator import tune_cpu_allocator
from bench.config import as_section
from bench.config_schema import RunConfig


class DeviceSettings:
    def __init__(self, run_cfg: dict):
        run_cfg = as_section(RunConfig, run_cfg)
        self.device = torch.device(run_cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "run.device=cuda but no CUDA device is available; use --set run.device=cpu"
            )
        self.amp = run_cfg.amp
        self.channels_last = bool(run_cfg.channels_last)
        if run_cfg.get("tune_malloc", False):
            tune_cpu_allocator()

    def module(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def batch(self, batch: dict) -> dict:
        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.channels_last and "image" in moved:
            moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
        return moved

    def autocast(self):
        if self.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
