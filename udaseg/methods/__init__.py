"""Methods: one file per method, registered by name (DESIGN.md §5 lists the contract names).

``create_method(cfg, ctx)`` builds the method named ``cfg.name``; ``list_methods()`` lists them.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from udaseg.methods.base import Method, MethodConfig, MethodContext

_REGISTRY: dict[str, type[Method]] = {}
# Modules that register methods, imported on first lookup (keeps `import udaseg` light).
_METHOD_MODULES = ("udaseg.methods.source_only", "udaseg.methods.daformer", "udaseg.methods.advent",
                  "udaseg.methods.bafft", "udaseg.methods.daf_ida", "udaseg.methods.diga")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.method_name = name
        return cls

    return deco


def _load_all() -> None:
    for module in _METHOD_MODULES:
        importlib.import_module(module)


def list_methods() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[Method]:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_method(cfg: Any, ctx: MethodContext) -> Method:
    return get_method_class(cfg.name)(cfg, ctx)


__all__ = ["Method", "MethodConfig", "MethodContext", "create_method", "get_method_class", "list_methods",
           "register_method"]
