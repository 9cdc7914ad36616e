"""Name → factory registries for backbones and heads (timm style).

A factory is registered with a decorator and built by name::

    @BACKBONES.register("mit_b0")
    def mit_b0(**options) -> Backbone: ...

    backbone = BACKBONES.build("mit_b0", drop_path_rate=0.0)

Registries hold callables only; nothing is built at import time.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(factory: F) -> F:
            if name in self._factories:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._factories[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}") from None

    def build(self, name: str, **options: Any) -> Any:
        return self.get(name)(**options)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories


BACKBONES = Registry("backbone")
HEADS = Registry("head")
