"""The method registry (:class:`udaseg.registry.Registry`): one file per method, registered by
name with ``@register_method`` (docs/contracts.md §2 lists the registered names).

``METHOD_MODULES`` are the modules that register methods (and the offline pipeline steps that
belong to a method, :mod:`udaseg.methods.steps`); a registry imports them on its first lookup,
which keeps ``import udaseg`` light. A new method module is added here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from udaseg.registry import Registry

if TYPE_CHECKING:
    from udaseg.methods.base import Method

METHOD_MODULES = ("udaseg.methods.source_only", "udaseg.methods.daformer", "udaseg.methods.advent",
                  "udaseg.methods.bafft", "udaseg.methods.daf_ida", "udaseg.methods.diga")

METHODS = Registry("method", modules=METHOD_MODULES)

T = TypeVar("T", bound=type)


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`~udaseg.methods.base.Method` subclass under ``name``
    (also its ``method_name``)."""
    return METHODS.register(name, name_attribute="method_name")


def list_methods() -> list[str]:
    return METHODS.names()


def get_method_class(name: str) -> type[Method]:
    return METHODS.get(name)


__all__ = ["METHODS", "METHOD_MODULES", "get_method_class", "list_methods", "register_method"]
