"""Configuration: defaults, presets and overrides, checked against the typed schema.

The options and their defaults are ``presets/default.yaml``; their types, ranges and
allowed values are ``bench.config_schema`` (a test keeps the two equal).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from yaml.representer import SafeRepresenter

from bench.config_schema import Config, Range, Section

PRESET_DIR = Path(__file__).resolve().parent / "presets"
# Sections whose keys are free-form (per-method hyper-parameters).
OPEN_SECTIONS = {("pretrain", "methods")}


class ConfigError(ValueError):
    pass


# A configuration saved with yaml.safe_dump is written as the plain mapping it is.
yaml.SafeDumper.add_multi_representer(Section, SafeRepresenter.represent_dict)


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
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        what = " ".join(str(getattr(exc, "problem", None) or "not a YAML value").split())
        raise ConfigError(f"--set {key.strip()}: cannot read {raw!r} ({what})") from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the preset, then ``KEY=VALUE`` overrides; checked against the schema."""
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
    return as_config(config)


def as_config(tree: dict) -> Config:
    """A configuration tree (loaded, merged or read from a job file) as the typed ``Config``.

    The values are not copied or converted: the result hashes and serialises as ``tree``.
    """
    return _build(Config, tree)


def _build(cls: type[Section], tree: dict) -> Any:
    hints = _hints(cls)
    section = cls()
    for key, value in tree.items():
        hint = _strip_annotated(hints.get(key))
        if isinstance(hint, type) and issubclass(hint, Section) and isinstance(value, dict):
            value = _build(hint, value)
        dict.__setitem__(section, key, value)
    return section


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _strip_annotated(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def validate(config: dict) -> None:
    """Raises ``ConfigError`` naming the first option whose value the schema does not allow."""
    _check_section(Config, config, ())
    size, levels = config["data"]["preprocess"]["size"], len(config["model"]["widths"])
    if size % 2 ** (levels - 1):
        raise ConfigError(
            f"option data.preprocess.size={size}; expected a size divisible by 2**{levels - 1} "
            f"for a U-Net of {levels} levels (model.widths)"
        )
    clip = config["data"]["preprocess"]["clip_percentiles"]
    if len(clip) != 2 or clip[0] >= clip[1]:
        raise ConfigError(
            f"option data.preprocess.clip_percentiles={clip!r}; expected [low, high] with "
            "low < high"
        )


def _check_section(cls: type[Section], tree: dict, where: tuple[str, ...]) -> None:
    for key, hint in _hints(cls).items():
        path = ".".join((*where, key))
        if key not in tree:
            raise ConfigError(f"option {path} is missing")
        value = tree[key]
        expected = _expectation(hint, value)
        if expected is not None:
            raise ConfigError(f"option {path}={value!r}; expected {expected}")
        section = _strip_annotated(hint)
        if isinstance(section, type) and issubclass(section, Section):
            _check_section(section, value, (*where, key))


def _expectation(hint: Any, value: Any) -> str | None:
    """None when ``value`` fits ``hint``; else what was expected, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        base, bounds = args[0], [a for a in args[1:] if isinstance(a, Range)]
        wrong = _expectation(base, value)
        described = " ".join([_describe(base), *(b.describe() for b in bounds)])
        if wrong is not None or not all(b.contains(value) for b in bounds):
            return described
        return None
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if any(_expectation(a, value) is None for a in options):
            return None
        return " or ".join([_describe(a) for a in options] + ["null"] * (type(None) in args))
    if origin is typing.Literal:
        return None if value in args and type(value) is str else f"one of {sorted(args)}"
    if origin is list:
        if not isinstance(value, list):
            return _describe(hint)
        for item in value:
            if _expectation(args[0], item) is not None:
                return _describe(hint)
        return None
    if origin is dict or hint is dict:
        return None if isinstance(value, dict) else "a mapping"
    if isinstance(hint, type) and issubclass(hint, Section):
        return None if isinstance(value, dict) else "a section of options"
    return None if _is_instance(value, hint) else _describe(hint)


def _is_instance(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a number too (``lr=1``); kept as written
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    raise TypeError(f"the config schema uses an unsupported type {hint!r}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        bounds = [a.describe() for a in args[1:] if isinstance(a, Range)]
        return " ".join([_describe(args[0]), *bounds])
    if origin is typing.Literal:
        return f"one of {sorted(args)}"
    if origin is list:
        return f"a list, each item {_describe(args[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]
