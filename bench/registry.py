"""Method registry: methods join it with ``@register_method`` (the timm idiom)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.methods.base import PretrainMethod

_METHODS: dict[str, type[PretrainMethod]] = {}


class UnknownMethodError(ValueError):
    pass


def register_method(cls: type[PretrainMethod]) -> type[PretrainMethod]:
    name = cls.name
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(
            f"method {name!r} is registered twice ({_METHODS[name].__module__}, {cls.__module__})"
        )
    _METHODS[name] = cls
    return cls


def _import_all_methods() -> None:
    """Imports every module of ``bench.methods`` so that adding a method is adding a module."""
    import bench.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def available_methods() -> dict[str, type]:
    _import_all_methods()
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type:
    methods = available_methods()
    if name not in methods:
        raise UnknownMethodError(f"unknown method {name!r}; known methods: {', '.join(methods)}")
    return methods[name]


def resolve_method_names(spec: str) -> list[str]:
    """``"all"`` or a comma-separated list -> validated method names, in the order given."""
    methods = available_methods()
    if spec.strip() == "all":
        return list(methods)
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise UnknownMethodError("--methods is empty; give a comma-separated list or 'all'")
    for name in names:
        get_method(name)
    return list(dict.fromkeys(names))
