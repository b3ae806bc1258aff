"""Random initialisation: the baseline without pretraining."""

from __future__ import annotations

from bench.methods.base import PretrainMethod
from bench.registry import register_method


@register_method
class RandomInit(PretrainMethod):
    name = "random"
    summary = "No pretraining: fine-tuning starts from a seeded random initialisation"
    pretrained_parts = ()
    needs_pretraining = False
    shared_doc = "nothing (no pretraining)"
    local_doc = "nothing"
