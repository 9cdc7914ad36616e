"""Offline pipeline steps (``step: NAME`` in a pipeline's ``stages``, udaseg/engine/pipeline.py):
the registry ``STEPS`` and the context a step sees.

A step is a function ``fn(ctx: StepContext, cfg) -> dict`` registered with its options' schema::

    @register_step("pseudo_labels", PseudoLabelStepConfig)
    def pseudo_labels(ctx: StepContext, cfg: PseudoLabelStepConfig) -> dict: ...

Steps that belong to a method live in that method's module (found through
:data:`udaseg.methods.registry.METHOD_MODULES`); the shared ones in udaseg/engine/steps.py,
which the pipeline imports. This module sits below the methods that register steps and below
the engine that runs them: the engine's pipeline hands a step a subclass of :class:`StepContext`
that can load networks and datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from udaseg.data.catalog import get_label_space
from udaseg.errors import ConfigError, UdasegError
from udaseg.methods.registry import METHOD_MODULES
from udaseg.models.segmentor import EncoderDecoder
from udaseg.registry import Registry


@dataclass(frozen=True)
class Step:
    config_cls: type  # the schema of the step's options
    fn: Callable  # fn(ctx: StepContext, cfg) -> dict (the step's summary)
    needs_network: bool = True  # False: may come before any training stage (a data split)


STEPS = Registry("pipeline step", modules=METHOD_MODULES, error=ConfigError)


def register_step(name: str, config_cls: type, needs_network: bool = True) -> Callable[[Callable], Callable]:
    """``@register_step("pseudo_labels", PseudoLabelConfig)`` on ``fn(ctx: StepContext, cfg) -> dict``;
    ``needs_network=False`` for a step that may come before any training stage (a data split)."""
    def deco(fn: Callable) -> Callable:
        STEPS.add(name, Step(config_cls, fn, needs_network))
        return fn

    return deco


class StepContext:
    """What an offline step sees: the previous training stage's network, the base config's data,
    its own output folder. :meth:`network` and :meth:`dataset` are provided by the engine's
    subclass (``udaseg.engine.pipeline.StepContext``)."""

    def __init__(self, cfg: Any, out_dir: Path, source: Path | None, device: torch.device):
        self.cfg, self.out_dir, self.source, self.device = cfg, out_dir, source, device
        self.label_space = get_label_space(cfg.benchmark.label_space)

    def network(self, name: str | None = None) -> EncoderDecoder:
        """The previous training stage's evaluated network (or ``name``), in eval mode on the device."""
        raise UdasegError("this step context loads no networks (run the step through a pipeline)")

    def dataset(self, stream: str = "target"):
        """The base config's ``source`` or ``target`` training split, untransformed (full resolution)."""
        raise UdasegError("this step context opens no datasets (run the step through a pipeline)")

    def batches(self, stream: str = "target", *, labels: bool = False) -> Iterator[dict]:
        """One image at a time: ``img`` uint8 [1, 3, H, W] on the device, ``name`` [str] (and
        ``label`` only when asked, for diagnostics)."""
        dataset = self.dataset(stream)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False,
                                             num_workers=min(self.cfg.workers, 2))
        for batch in loader:
            out = {"img": batch["img"].to(self.device), "name": list(batch["name"])}
            if labels and "label" in batch:
                out["label"] = batch["label"].to(self.device)
            yield out

    def write_label(self, name: str, label: np.ndarray | torch.Tensor, folder: str = "pseudo_labels") -> Path:
        """``out_dir/folder/<name>.png``: 8-bit train ids (255 = ignore), written atomically."""
        from PIL import Image

        from udaseg.data.base import atomic_write

        array = label.detach().cpu().numpy() if torch.is_tensor(label) else np.asarray(label)
        path = self.out_dir / folder / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Image.fromarray(array.astype(np.uint8), mode="L").save(tmp, format="PNG"))
        return path


__all__ = ["STEPS", "Step", "StepContext", "register_step"]
