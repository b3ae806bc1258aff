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


# What each evaluation protocol (split.protocol) sets, above the preset and below --set.
PROTOCOL_SETTINGS: dict[str, dict[str, Any]] = {
    "own": {},
    # Wu et al. 2021: 5-fold cross-validation within each client.
    "fcl": {"split": {"folds": 5}},
    # Chaitanya et al. 2020: one client (trained centrally), ED frames, N4, 5 labeled subsets,
    # Dice on the native grid.
    "chaitanya": {
        "data": {"phases": ["ED"], "preprocess": {"n4": True}},
        "split": {"clients": 1, "folds": 5},
        "finetune": {"modes": ["local"]},
        "evaluation": {"native_dice": True},
    },
}


def read_config_file(path: str | Path) -> dict:
    """A user's YAML config (the same keys as a preset); ConfigError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"--config {path}: not valid YAML{where} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config {path}: expected a mapping of options, got {type(data).__name__}"
        )
    if "preset" in data:
        raise ConfigError(f"--config {path}: 'preset' is chosen with --preset, not in the file")
    return data


def load_config(
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    config_file: str | Path | None = None,
    split_params: dict | None = None,
) -> Config:
    """default.yaml <- the preset <- what ``split.protocol`` sets (``PROTOCOL_SETTINGS``) <-
    ``config_file`` <- ``overrides`` (``KEY=VALUE``), checked against the schema.

    ``split_params``: the ``params`` of a split file (``--split``), which decide the
    ``split`` section; a ``split.*`` option given in ``config_file`` or ``overrides``
    that contradicts them is an error.
    """
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
    user = read_config_file(config_file) if config_file is not None else {}
    for text in overrides:
        user = merge_user(user, parse_override(text))
    protocol = merge(config, user)["split"]["protocol"]
    if split_params is not None:
        protocol = split_params.get("protocol", "own")
    if protocol not in PROTOCOL_SETTINGS:
        raise ConfigError(
            f"option split.protocol={protocol!r}; expected one of {sorted(PROTOCOL_SETTINGS)}"
        )
    config = merge(merge(config, PROTOCOL_SETTINGS[protocol]), user)
    if split_params is not None:
        given = user.get("split", {})
        config["split"] = split_section_from_file(config["split"], given, split_params)
    validate(config)
    return as_config(config)


def merge_user(user: dict, override: dict) -> dict:
    """Merges user-given options without the defaults' key check (``merge`` checks later)."""
    merged = copy.deepcopy(user)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_user(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def split_section_from_file(section: dict, given: dict, params: dict) -> dict:
    """The ``split`` options a split file implies; the user's contradicting ones are errors."""
    section = dict(section)
    for key, value in params.items():
        if key not in section:
            continue  # the file's own bookkeeping (test_mode, layouts, patients, ...)
        if key in given and _normalised(given[key]) != _normalised(value):
            raise ConfigError(
                f"option split.{key}={given[key]!r} contradicts the split file "
                f"(split.{key}={value!r}); the file decides the split: drop the option"
            )
        section[key] = value
    return section


def _normalised(value):
    if isinstance(value, list | tuple):
        return sorted(_normalised(v) for v in value)
    return value


def as_config(tree: dict) -> Config:
    """A configuration tree (loaded, merged or read from a job file) as the typed ``Config``.

    The values are not copied or converted: the result hashes and serialises as ``tree``.
    """
    return _build(Config, tree)


SectionType = typing.TypeVar("SectionType", bound=Section)


def as_section(cls: type[SectionType], tree: dict) -> SectionType:
    """``tree`` as the typed section ``cls``, or itself when it already is one: a function
    given a section of the loaded config or a plain mapping (tests, profiles, sidecars)
    reads it by attribute either way. Keys the mapping lacks stay absent."""
    return tree if isinstance(tree, cls) else _build(cls, tree)


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
    encoder = config["model"]["encoder"]
    if encoder != "unet":
        _check_timm_encoder(encoder)
        if size % 32:
            raise ConfigError(
                f"option data.preprocess.size={size}; expected a size divisible by 32 for "
                f"model.encoder={encoder} (feature maps down to 1/32)"
            )
    elif size % 2 ** (levels - 1):
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


def _check_timm_encoder(encoder: str) -> None:
    if not encoder.startswith("timm/"):
        raise ConfigError(
            f"option model.encoder={encoder!r}; expected 'unet' or 'timm/<name>', "
            "e.g. timm/resnet18"
        )
    import timm  # only for a timm encoder: the CLI's start stays fast

    if not timm.is_model(encoder[len("timm/") :]):
        raise ConfigError(f"option model.encoder={encoder!r}: timm has no such model")


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
