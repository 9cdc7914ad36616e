"""The backbone and head registries (timm style), instances of :class:`udaseg.registry.Registry`.

A factory is registered with a decorator and built by name::

    @BACKBONES.register("mit_b0")
    def mit_b0(**options) -> Backbone: ...

    backbone = BACKBONES.build("mit_b0", drop_path_rate=0.0)

Registries hold callables only; nothing is built at import time.
"""

from __future__ import annotations

from udaseg.registry import Registry

BACKBONES = Registry("backbone")
HEADS = Registry("head")

__all__ = ["BACKBONES", "HEADS", "Registry"]
