"""Configuration: defaults, presets and overrides, validated against the defaults."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

PRESET_DIR = Path(__file__).resolve().parent / "presets"
# Sections whose keys are free-form (per-method hyper-parameters).
OPEN_SECTIONS = {("pretrain", "methods")}


class ConfigError(ValueError):
    pass


def available_presets() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in PRESET_DIR.iterdir()
        if p.name.endswith(".yaml") and p.name != "default.yaml"
    )


def _read_yaml(name: str) -> dict:
    return yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text()) or {}


def merge(base: dict, override: dict, where: tuple[str, ...] = ()) -> dict:
    """Deep-merges ``override`` into a copy of ``base``; unknown keys are errors."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = (*where, key)
        if where in OPEN_SECTIONS:
            merged[key] = copy.deepcopy(value)
            continue
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(
                f"unknown option {'.'.join(path)!r}; known under {'.'.join(where) or 'top level'}: "
                f"{known}"
            )
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"option {'.'.join(path)!r} is a section; got {value!r}")
            merged[key] = merge(base[key], value, path)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> dict:
    """``a.b.c=value`` (value parsed as YAML) -> nested dict."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. pretrain.rounds=5")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    config = _read_yaml("default")
    if preset is not None:
        if preset not in available_presets():
            raise ConfigError(
                f"unknown preset {preset!r}; available: {', '.join(available_presets())}"
            )
        config = merge(config, _read_yaml(preset))
        config["preset"] = preset
    else:
        config["preset"] = None
    for text in overrides:
        config = merge(config, parse_override(text))
    validate(config)
    return config


def validate(config: dict) -> None:
    choices = {
        ("pretrain", "setting"): {"federated", "local", "centralized"},
        ("split", "scheme"): {"iid", "group", "dirichlet"},
        ("run", "device"): {"cpu", "cuda"},
        ("run", "amp"): {"none", "bf16"},
        ("run", "engine"): {"inprocess", "flower"},
        ("model", "norm"): {"instance", "batch", "group"},
        ("model", "norm_kernel"): {"native", "group"},
        ("data", "preprocess", "normalise"): {"minmax", "zscore"},
    }
    for path, allowed in choices.items():
        value = config
        for key in path:
            value = value[key]
        if value not in allowed:
            raise ConfigError(
                f"option {'.'.join(path)}={value!r}; expected one of {sorted(allowed)}"
            )
    for mode in config["finetune"]["modes"]:
        if mode not in {"local", "federated"}:
            raise ConfigError(
                f"finetune.modes: unknown mode {mode!r}; expected local and/or federated"
            )
    run = config["run"]
    if not isinstance(run["min_clients"], int) or run["min_clients"] < 0:
        raise ConfigError(
            f"option run.min_clients={run['min_clients']!r}; expected an integer >= 0 (0: all "
            "clients)"
        )
    flower = run["flower"]
    for key in ("workers", "cpus_per_client", "round_timeout"):
        if not isinstance(flower[key], (int, float)) or flower[key] <= 0:
            raise ConfigError(f"option run.flower.{key}={flower[key]!r}; expected a number > 0")
    if not isinstance(flower["gpus_per_client"], (int, float)) or flower["gpus_per_client"] < 0:
        raise ConfigError(
            f"option run.flower.gpus_per_client={flower['gpus_per_client']!r}; expected a number "
            ">= 0"
        )
    size, levels = config["data"]["preprocess"]["size"], len(config["model"]["widths"])
    if size % 2 ** (levels - 1):
        raise ConfigError(
            f"data.preprocess.size={size} must be divisible by 2**{levels - 1} for a U-Net of "
            f"{levels} levels"
        )


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]
