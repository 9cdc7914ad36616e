"""Name → object registries: one mechanism for datasets, backbones, heads, methods and pipeline
steps (timm / detectron2 style).

An object (a factory function, a class, a step) is registered with a decorator and found by name::

    BACKBONES = Registry("backbone")

    @BACKBONES.register("mit_b0")
    def mit_b0(**options) -> Backbone: ...

    backbone = BACKBONES.build("mit_b0", drop_path_rate=0.0)

``modules`` names the modules whose import registers the built-in entries; they are imported on
the first lookup (``get``, ``names``, ``in``), so importing a registry stays cheap and a registry
never imports the modules above it at import time. ``error`` is the exception an unknown name
raises (a :class:`KeyError` by default; :class:`udaseg.errors.ConfigError` where the name comes
from a config). Registries hold objects only; nothing is built at import time.

This module sits in the bottom layer (it imports nothing from udaseg); see docs/architecture.md
for the layer order and tests/test_layers.py for its check.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F")


def did_you_mean(word: str, candidates: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""`` (unknown names and keys)."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry:
    def __init__(self, kind: str, *, modules: Iterable[str] = (), error: type[Exception] = KeyError):
        self.kind = kind
        self.modules = tuple(modules)
        self.error = error
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def add(self, name: str, obj: Any) -> Any:
        """Register ``obj`` under ``name``; registering the same object again is a no-op."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj
        return obj

    def register(self, name: str, *, name_attribute: str | None = None) -> Callable[[F], F]:
        """Decorator: ``@REGISTRY.register("name")`` on a function or class; returns it unchanged
        (with ``name_attribute``, a class also learns its registered name under that attribute)."""
        def decorator(obj: F) -> F:
            if name_attribute is not None:
                setattr(obj, name_attribute, name)
            return self.add(name, obj)

        return decorator

    def load(self) -> None:
        """Import the modules that register the built-in entries (once)."""
        if not self._loaded:
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True

    def get(self, name: str) -> Any:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                             f"registered: {', '.join(self.names())}") from None

    def build(self, name: str, **options: Any) -> Any:
        return self.get(name)(**options)

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        self.load()
        return sorted(self._entries.items())

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


__all__ = ["Registry"]
