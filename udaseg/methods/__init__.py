"""Methods: one file per method, registered by name in :mod:`udaseg.methods.registry`
(docs/contracts.md §2 lists the registered names).

``create_method(cfg, ctx)`` builds the method named ``cfg.name``; ``list_methods()`` lists them.
"""

from __future__ import annotations

from typing import Any

from udaseg.methods.base import Method, MethodConfig, MethodContext
from udaseg.methods.registry import METHODS, get_method_class, list_methods, register_method


def create_method(cfg: Any, ctx: MethodContext) -> Method:
    return get_method_class(cfg.name)(cfg, ctx)


__all__ = ["METHODS", "Method", "MethodConfig", "MethodContext", "create_method", "get_method_class", "list_methods",
           "register_method"]
