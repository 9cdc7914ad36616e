"""Add-ons of the self-training core: small components that DAFormer's step (with a plain or an
HRDA model, :mod:`udaseg.methods.daformer`) composes — the ImageNet feature distance
(:mod:`udaseg.methods.feature_distance`), TigDA's cross-modal head (:mod:`udaseg.methods.tigda`),
EBDA's entropy balance (:mod:`udaseg.methods.entropy_balance`) and MIC's masked images
(:mod:`udaseg.methods.masking`).

Each add-on has a config dataclass of its own — a field of the method's config, so its keys are
``method.<key>.*`` (``method.mic.block_size``, ``method.tigda.image_size``, ``method.ebda.mode``,
``method.fd.weight``) and ``method.mic=true`` is short for ``method.mic.enabled=true`` — and an
object that joins the step through the hooks of :class:`AddOn`, each a named place of the
algorithm box; every hook's default does nothing. The step's running values are a
:class:`StepState`, filled in as the step goes.

The flat keys of earlier versions (``method.mic_block_size``, ``method.tigda_image_size``,
``method.fd_lambda`` …) are read for one more release: :func:`upgrade_flat_keys` rewrites them
with a deprecation message naming the file (run directories written before, e.g. the records
under ``docs/results/runs_v1``, keep loading).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from udaseg.errors import ConfigError


@dataclass
class StepState:
    """The values of one self-training step, filled in as it goes (normalised images)."""

    src_img: torch.Tensor
    src_label: torch.Tensor
    tgt_img: torch.Tensor
    src_feats: list | None = None  # the student's backbone features of the source (HRDA: context branch)
    pl_label: torch.Tensor | None = None  # the teacher's pseudo-labels of the target and their weight
    pl_weight: torch.Tensor | None = None
    mixed_img: torch.Tensor | None = None  # ClassMix'ed, augmented images, their labels and weight
    mixed_label: torch.Tensor | None = None
    mixed_weight: torch.Tensor | None = None
    mixed_logits: torch.Tensor | None = None  # the student's prediction of them (the mixed CE's)


class AddOn:
    """One add-on of the self-training step. ``method`` is the DAFormer method; an add-on calls its
    student passes (``method.supervised_loss``, ``method.student_pass``) and its teacher."""

    key: ClassVar[str] = ""  # the config key under ``method.``
    # An extra head on the student, run on every student pass with this loss weight (None: none).
    aux_head_weight: float | None = None
    # Whether ``pass_losses`` runs a student pass of its own (then backward once, after the mixed
    # loss's; under DDP the iteration's last pass all-reduces), and whether that pass uses the head.
    own_pass: bool = False
    pass_uses_aux_head: bool = True

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def attach(self, student: nn.Module, ctx) -> None:
        """Before the teacher copies the student: add a head to it (the teacher gets its own)."""

    def build(self, method) -> dict[str, nn.Module]:
        """Modules the method registers under these names (checkpointed; one without trainable
        parameters is frozen: always in eval mode, never optimised)."""
        return {}

    def source_losses(self, method, s: StepState) -> dict[str, torch.Tensor]:
        """Step 2: terms added to the source loss (one backward)."""
        return {}

    def pseudo_logits(self, method, tgt_img: torch.Tensor) -> torch.Tensor | None:
        """Step 3: the teacher's logits the pseudo-labels come from (None: the teacher's prediction)."""
        return None

    def mixed_losses(self, method, s: StepState) -> dict[str, torch.Tensor]:
        """Step 6: terms added to the mixed loss (its backward), from ``s.mixed_logits``."""
        return {}

    def pass_losses(self, method, s: StepState) -> dict[str, torch.Tensor]:
        """After step 6 (``own_pass``): a student pass of its own; the terms are summed and
        backpropagated once."""
        return {}

    def diagnostics(self) -> dict:
        """Entries of the next metrics row (and reset what was accumulated)."""
        return {}


# -- the flat keys of earlier versions -----------------------------------------------------------
_RENAMED = {"lambda": "weight"}  # mic_lambda → mic.weight (``lambda`` is not a field name in Python)
_SWITCHES = ("mic", "tigda", "ebda")  # method.mic=true → method.mic.enabled=true (a shorthand, kept)


def flat_key_table(addon_configs: dict[str, type]) -> dict[str, tuple[str, str]]:
    """``{"mic_block_size": ("mic", "block_size"), "fd_lambda": ("fd", "weight"), …}`` for the
    add-on config classes ``{key: dataclass}``."""
    table = {}
    for key, cls in addon_configs.items():
        for f in fields(cls):
            if f.name != "enabled":
                table[f"{key}_{f.name}"] = (key, f.name)
        for old, new in _RENAMED.items():
            if new in {f.name for f in fields(cls)}:
                table[f"{key}_{old}"] = (key, new)
    return table


def upgrade_flat_keys(method: dict, table: dict[str, tuple[str, str]], source: str) -> dict:
    """A method mapping with the old flat add-on keys moved into their add-on's mapping (a
    deprecation message per source naming them) and ``<key>: true/false`` as ``{enabled: …}``;
    other keys unchanged. A key given both flat and nested in one mapping is an error."""
    if not isinstance(method, dict):
        return method
    keys = {key for key, _ in table.values()}
    out: dict = {}
    moved = []

    def group(key: str) -> dict:
        if not isinstance(out.get(key), dict):
            out[key] = {}  # (a value of another type: the schema reports it)
        return out[key]

    for k, v in method.items():
        if k in table:
            key, name = table[k]
            into, shown = group(key), f"method.{key}.{name}"
            moved.append(f"method.{k} → {shown}")
        elif k in _SWITCHES and isinstance(v, bool):
            into, name, shown = group(k), "enabled", f"method.{k}"
        elif k in keys and isinstance(v, dict):
            for name, value in v.items():
                if name in group(k):
                    raise ConfigError(f"{source}: method.{k}.{name} given twice (once as a flat key)")
                group(k)[name] = value
            continue
        else:
            out[k] = v
            continue
        if name in into:
            raise ConfigError(f"{source}: {shown} given twice (once as a flat key)")
        into[name] = v
    if moved:
        warnings.warn(f"{source}: flat add-on keys are deprecated and will be removed in the next release; "
                      f"read as {', '.join(moved)}", FutureWarning, stacklevel=3)
    return out
