"""The authors' released checkpoints → udaseg's model, strictly (identical weights, identical logits).

:func:`convert_reference` takes what ``torch.load(path, weights_only=True)`` returned for a
checkpoint written by a paper's own code and returns a state dict that
:func:`udaseg.models.weights.load_state_dict_strict` accepts for the model that
:func:`udaseg.models.create_model` builds from the matching preset. Two things are read from the
file's keys, each described here as data:

**Containers** — how one file holds its networks:

==============  ==================================================================================
``dacs``        mmcv runner checkpoints of the DACS family (DAFormer, HRDA, MIC, TigDA, EBDA):
                ``{"meta", "state_dict", "optimizer"}`` whose ``state_dict`` holds the student as
                ``model.*`` and the EMA teacher as ``ema_model.*``. Training-only parts, dropped:
                ``imnet_model.*`` (the frozen ImageNet copy of DAFormer's feature distance) and
                ``mic.teacher.ema_model.*`` (MIC's separate masking teacher, present only when its
                EMA rate differs from the pseudo-label teacher's).
``udaseg``      udaseg's own run checkpoint: ``{"method": {"modules": {"student.*",
                "teacher.model.*", …}}}`` (see udaseg/engine/checkpoint.py ``network_weights``);
                every other module of the method (discriminators …) is training-only.
``proda``       ProDA's ``{"ResNet101": {"model_state": …, "objective_vectors": …}, "iter",
                "best_iou"}``: one network, the student; the prototypes, a discriminator entry and
                the counters are training-only.
``flat``        a bare state dict (or ``{"state_dict": …}`` without the DACS prefixes): one
                network, called ``student``. A uniform ``module.`` (DataParallel) or ``Scale.``
                (AdaptSegNet's DeepLab file) prefix is removed. DiGA saves its student and teacher
                as separate flat files (``student.pth``, ``teacher.pth``): convert either with the
                default ``network="student"``.
==============  ==================================================================================

**Layouts** — how one network names its tensors (:data:`LAYOUTS`, detected from key names):

==================  ==============================================================================
``udaseg``          udaseg's own names (``decode_head.classifier`` …); ``aux_head.*`` (TigDA's CMF
                    head, udaseg/models/heads/cmf.py) is training-only.
``hrda``            HRDA / MIC(HRDA): ``decode_head.head.*`` is the DAFormer head shared by both
                    scales (→ ``decode_head.*``), ``decode_head.scale_attention.*`` the scale
                    attention head, a DAFormer head with a 1×1 conv-BN-ReLU fusion and its own
                    ``conv_seg`` (→ ``attention_head.*``, udaseg/models/hrda.py ``build_hrda``).
``tigda``           TigDA: a DAFormer ``decode_head`` (evaluated) plus ``clip_head.*`` — the CMF head
                    with its prompt learner and the CLIP text tower — used only in training (udaseg
                    evaluates without it), so dropped.
``segformer``       NVIDIA's SegFormer release: ``decode_head.linear_c1…4`` (→ ``embed_layers.0…3``),
                    ``linear_fuse`` (→ ``fuse_layer``), ``linear_pred`` (→ ``classifier``). Its
                    fusion conv reads the stages in the order 4, 3, 2, 1 and udaseg's in 1…4
                    (udaseg/models/heads/daformer.py), so the conv's input-channel blocks are
                    reversed. The head's inherited ``conv_seg`` is never used: dropped.
``mmseg_segformer`` The SegFormer head of the DAFormer/HRDA code: ``decode_head.linear_c.{i}`` in
                    stage order (no reversal), ``linear_fuse``, ``linear_pred``; unused ``conv_seg``
                    dropped.
``mmseg``           DAFormer, EBDA, MIC(DAFormer) and plain mmseg files of the DAFormer head:
                    ``backbone.*`` (MiT names, as udaseg/models/backbones/mit.py) and
                    ``decode_head.{embed_layers,fuse_layer}.*`` keep their names (mmcv's
                    ``ConvModule`` is ``conv``/``bn``, like udaseg/models/heads/base.py),
                    ``decode_head.conv_seg`` → ``decode_head.classifier``. An ASPP image-pool
                    branch (``fuse_layer.image_pool``) has no udaseg counterpart: reported.
``diga``            DiGA's ``SegModel``: ``layer0.0``/``layer0.1`` (stem conv/BN), ``layer1…4``,
                    ``final.*`` — ProDA's ASPP head (→ udaseg/models/heads/deeplabv2.py
                    ``proda_aspp``).
``proda``           ProDA's ``ResNet101``: ``conv1``, ``bn1``, ``layer1…4``, ``layer5.*`` (the same
                    head). A ``bn_pretrain`` BatchNorm between layer 4 and the head (ProDA's
                    ``--bn_clr`` stages) has no udaseg counterpart: reported as unexpected.
``advent``          ADVENT's multi-level DeepLab-v2: ``layer6`` is the classifier on layer 4 (→
                    ``deeplabv2_aspp``), ``layer5`` the auxiliary classifier on layer 3, training-only.
``deeplabv2``       AdaptSegNet-style single-classifier DeepLab-v2: ``layer5.conv2d_list.*`` on
                    layer 4.
==================  ==============================================================================

Strictness: every tensor of the model must come from the file, every key of the chosen network must
land in the model, and shapes must agree; anything else is a
:class:`~udaseg.models.weights.CheckpointMismatchError` naming the source and listing what does not
fit. The only allowances: the training-only parts named above, and BatchNorm's
``num_batches_tracked`` counter — dropped where the model lacks it, and set to 0 where an old file
(saved before PyTorch 0.4.1) lacks it; it only counts updates and never enters a forward pass with
a fixed momentum.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from udaseg.models.weights import mismatch_error

Rules = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Layout:
    """How one network of a reference code base names its tensors."""

    name: str
    signature: str  # a key matching this regex identifies the layout
    renames: Rules = ()  # (regex, replacement): the first matching rule renames a key; none: unchanged
    training_only: Rules = ()  # (regex, why): keys dropped on purpose
    transforms: tuple[tuple[str, str], ...] = ()  # (udaseg key regex, name in _TRANSFORMS)


@dataclass(frozen=True)
class Container:
    """How one file holds its networks: each network under a key prefix."""

    name: str
    networks: tuple[tuple[str, tuple[str, ...]], ...]  # (network, prefixes tried in order)
    training_only: Rules = ()  # (regex on the file's keys, why)


# -- layouts ---------------------------------------------------------------------------------

_MMSEG_AUX = ((r"^auxiliary_head\.", "mmseg auxiliary head (training-only deep supervision)"),)
_SEGFORMER_UNUSED = ((r"^decode_head\.conv_seg\.", "conv_seg inherited by SegFormerHead, never used"),)
_SEGFORMER_FUSE = ((r"^decode_head\.linear_fuse\.", "decode_head.fuse_layer."),
                   (r"^decode_head\.linear_pred\.", "decode_head.classifier."))
_CAFFE_RESNET = ((r"^(conv1|bn1|layer[1-4])\.", r"backbone.\1."),)


def _proda_head(prefix: str) -> Rules:
    """ProDA's ``Classifier_Module2`` under ``prefix`` → udaseg's ``proda_aspp`` head."""
    p = re.escape(prefix)
    return ((rf"^{p}\.conv2d_list\.", "decode_head.branches."),
            (rf"^{p}\.bottleneck\.0\.se\.", "decode_head.se.fc."),
            (rf"^{p}\.bottleneck\.1\.", "decode_head.bottleneck.0."),
            (rf"^{p}\.bottleneck\.2\.", "decode_head.bottleneck.1."),
            (rf"^{p}\.head\.1\.", "decode_head.classifier."))


_LAYOUT_LIST = (
    Layout("udaseg", r"^decode_head\.(classifier|conv2d_list)\.|^attention_head\.",
           training_only=((r"^aux_head\.", "udaseg's training-only auxiliary head (TigDA's CMF head)"),)),
    Layout("hrda", r"^decode_head\.(head|scale_attention)\.",
           renames=((r"^decode_head\.head\.conv_seg\.", "decode_head.classifier."),
                    (r"^decode_head\.head\.", "decode_head."),
                    (r"^decode_head\.scale_attention\.conv_seg\.", "attention_head.classifier."),
                    (r"^decode_head\.scale_attention\.", "attention_head.")),
           training_only=_MMSEG_AUX),
    Layout("tigda", r"^clip_head\.",
           renames=((r"^decode_head\.conv_seg\.", "decode_head.classifier."),),
           training_only=((r"^clip_head\.", "TigDA's CMF head with prompt learner and CLIP text tower "
                                            "(training-only)"),) + _MMSEG_AUX),
    Layout("segformer", r"^decode_head\.linear_c[1-4]\.",
           renames=tuple((rf"^decode_head\.linear_c{i + 1}\.", f"decode_head.embed_layers.{i}.") for i in range(4))
           + _SEGFORMER_FUSE,
           training_only=_SEGFORMER_UNUSED + _MMSEG_AUX,
           transforms=((r"^decode_head\.fuse_layer\.conv\.weight$", "reverse_stage_blocks"),)),
    Layout("mmseg_segformer", r"^decode_head\.linear_c\.\d+\.",
           renames=((r"^decode_head\.linear_c\.(\d+)\.", r"decode_head.embed_layers.\1."),) + _SEGFORMER_FUSE,
           training_only=_SEGFORMER_UNUSED + _MMSEG_AUX),
    Layout("mmseg", r"^decode_head\.(embed_layers|fuse_layer|conv_seg)\.",
           renames=((r"^decode_head\.conv_seg\.", "decode_head.classifier."),),
           training_only=_MMSEG_AUX),
    Layout("diga", r"^layer0\.0\.weight$|^final\.head\.",
           renames=((r"^layer0\.0\.", "backbone.conv1."), (r"^layer0\.1\.", "backbone.bn1."),
                    (r"^(layer[1-4])\.", r"backbone.\1.")) + _proda_head("final")),
    Layout("proda", r"^layer5\.(bottleneck|head)\.", renames=_CAFFE_RESNET + _proda_head("layer5")),
    Layout("advent", r"^layer6\.conv2d_list\.",
           renames=_CAFFE_RESNET + ((r"^layer6\.", "decode_head."),),
           training_only=((r"^layer5\.", "ADVENT's auxiliary classifier on layer 3 (training-only)"),)),
    Layout("deeplabv2", r"^layer5\.conv2d_list\.\d+\.(weight|bias)$",
           renames=_CAFFE_RESNET + ((r"^layer5\.", "decode_head."),)),
)
LAYOUTS: tuple[str, ...] = tuple(layout.name for layout in _LAYOUT_LIST)
_LAYOUTS_BY_NAME = {layout.name: layout for layout in _LAYOUT_LIST}


def _reverse_stage_blocks(weight: torch.Tensor) -> torch.Tensor:
    """A fusion conv over stages concatenated 4, 3, 2, 1 → the same conv over stages 1…4."""
    return torch.cat(list(reversed(weight.chunk(4, dim=1))), dim=1)


_TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"reverse_stage_blocks": _reverse_stage_blocks}

# -- containers ------------------------------------------------------------------------------

_DACS = Container("dacs", (("student", ("model.",)), ("teacher", ("ema_model.",))),
                  ((r"^imnet_model\.", "DAFormer's frozen ImageNet model for the feature distance"),
                   (r"^mic\.teacher\.ema_model\.", "MIC's separate masking EMA teacher")))
_UDASEG = Container("udaseg", (("student", ("student.",)), ("teacher", ("teacher.model.", "teacher."))),
                    ((r"^(?!student\.|teacher\.)", "another module of the method (training-only)"),))
_PRODA = Container("proda", (("student", ("ResNet101.model_state.",)),),
                   ((r"^(?!ResNet101\.model_state\.)", "ProDA's prototypes, discriminator and counters"),))
_FLAT = Container("flat", (("student", ("",)),))
_WRAPPING_PREFIXES = ("module.", "Scale.")
_COUNTER = "num_batches_tracked"
# Top-level entries of a checkpoint that hold no network weights (optimizer state, run metadata).
_NOT_WEIGHTS = ("meta", "optimizer", "scheduler", "lr_scheduler")


# -- reading the file ------------------------------------------------------------------------

def _tensors(mapping: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested mapping, keyed by its dotted path."""
    out: dict[str, torch.Tensor] = {}
    for key, value in mapping.items():
        if isinstance(value, torch.Tensor):
            out[prefix + str(key)] = value
        elif isinstance(value, Mapping):
            out.update(_tensors(value, f"{prefix}{key}."))
    return out


def _strip_wrapping(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPING_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _read_container(checkpoint: Mapping[str, Any], source: str) -> tuple[Container, dict[str, torch.Tensor]]:
    """The container of the file and its tensors (for ``dacs``/``flat``: the state dict's)."""
    if not isinstance(checkpoint, Mapping):
        raise mismatch_error(f"{source}: a checkpoint must be a mapping, got {type(checkpoint).__name__}", {})
    method = checkpoint.get("method")
    if isinstance(method, Mapping) and isinstance(method.get("modules"), Mapping):
        return _UDASEG, _tensors(method["modules"])
    if isinstance(checkpoint.get("ResNet101"), Mapping) and "model_state" in checkpoint["ResNet101"]:
        return _PRODA, _tensors(checkpoint)
    inner = checkpoint.get("state_dict")
    if not isinstance(inner, Mapping):  # a bare state dict, or {"model": …} beside optimizer state
        inner = {k: v for k, v in checkpoint.items() if k not in _NOT_WEIGHTS}
    state = _strip_wrapping(_tensors(inner))
    if any(k.startswith(p) for k in state for _, prefixes in _DACS.networks for p in prefixes):
        return _DACS, state
    return _FLAT, state


def _networks_present(container: Container, state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Network name → the prefix its keys carry in this file, for the networks the file holds."""
    present = {}
    for name, prefixes in container.networks:
        prefix = next((p for p in prefixes if any(k.startswith(p) for k in state)), None)
        if prefix is not None:
            present[name] = prefix
    return present


def _split_network(container: Container, state: dict[str, torch.Tensor], network: str,
                   source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of ``network`` (its prefix removed) and the file's keys that belong to no
    network of the container and to no training-only part."""
    present = _networks_present(container, state)
    if network not in present:
        raise mismatch_error(f"{source}: no {network!r} network in this {container.name} checkpoint; "
                             f"it has: {', '.join(present) or 'none'}", {})
    prefix = present[network]
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    claimed = tuple(present.values())
    stray = sorted(k for k in state if not k.startswith(claimed) and _reason(container.training_only, k) is None)
    return weights, stray


# -- renaming --------------------------------------------------------------------------------

def _reason(rules: Rules, key: str) -> str | None:
    return next((why for pattern, why in rules if re.search(pattern, key)), None)


def _renamed(layout: Layout, key: str) -> str:
    for pattern, replacement in layout.renames:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    return key


def detect_layout(keys: list[str], source: str = "checkpoint") -> Layout:
    """The first layout of :data:`LAYOUTS` whose signature one of ``keys`` matches."""
    for layout in _LAYOUT_LIST:
        if any(re.search(layout.signature, k) for k in keys):
            return layout
    raise mismatch_error(f"{source}: no known checkpoint layout fits its keys (tried: {', '.join(LAYOUTS)})",
                         {"file keys": sorted(keys)})


def _apply_layout(layout: Layout, weights: dict[str, torch.Tensor]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """(state under udaseg's names, udaseg name → file name, file keys two of which map to one name)."""
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    clashes: list[str] = []
    for key, tensor in weights.items():
        if _reason(layout.training_only, key) is not None:
            continue
        new = _renamed(layout, key)
        if new in state:
            clashes.append(f"{origin[new]} and {key} → {new}")
            continue
        state[new], origin[new] = tensor, key
    for pattern, name in layout.transforms:
        for key in [k for k in state if re.search(pattern, k)]:
            state[key] = _TRANSFORMS[name](state[key])
    return state, origin, clashes


def _fit_counters(state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNorm update counters: dropped where the model lacks them, zero where the file does."""
    state = {k: v for k, v in state.items() if not (k.endswith(_COUNTER) and k not in own)}
    for key in own:
        if key.endswith(_COUNTER) and key not in state and key[:-len(_COUNTER)] + "running_mean" in state:
            state[key] = torch.zeros_like(own[key])
    return state


# -- the entry point -------------------------------------------------------------------------

def _choose_layout(container: Container, weights: Mapping[str, torch.Tensor], layout: str, source: str) -> Layout:
    if layout != "auto":
        return _LAYOUTS_BY_NAME[layout]
    if container is _UDASEG:
        return _LAYOUTS_BY_NAME["udaseg"]
    return detect_layout(list(weights), source)


def _misfits(state: Mapping[str, torch.Tensor], origin: Mapping[str, str],
             own: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Missing, unexpected (by the file's name) and wrongly shaped tensors of ``state`` for ``own``."""
    def named(key: str) -> str:
        return key if origin.get(key, key) == key else f"{origin[key]} (as {key})"

    return {"missing": sorted(set(own) - set(state)),
            "unexpected": sorted(named(k) for k in set(state) - set(own)),
            "shape mismatch": sorted(f"{origin.get(k, k)} (file {tuple(v.shape)} vs model {tuple(own[k].shape)})"
                                     for k, v in state.items() if k in own and v.shape != own[k].shape)}


def convert_reference(checkpoint: Mapping[str, Any], model: nn.Module, *, network: str = "student",
                      layout: str = "auto", source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """The weights of ``network`` in a reference checkpoint, under ``model``'s names.

    ``checkpoint``: what ``torch.load(path, weights_only=True)`` returned (a mapping that may hold
    ``state_dict``, ``meta``, ``optimizer`` or a method-specific nesting; see the module doc).
    ``model``: udaseg's model as ``udaseg.models.create_model`` builds it from the matching preset
    (an ``EncoderDecoder`` or the ``HRDASegmentor`` of udaseg/models/hrda.py), without an
    auxiliary head. ``network``: ``"student"`` or ``"teacher"`` (the EMA model). ``layout``:
    one of :data:`LAYOUTS`, or ``"auto"`` to detect it from the key names.

    Returns ``(state dict for load_state_dict_strict(model, ·), layout name)``. Raises
    :class:`~udaseg.models.weights.CheckpointMismatchError` naming ``source`` when the file lacks
    the network (listing those it has), when no layout fits, or when any tensor does not fit.
    """
    if layout != "auto" and layout not in _LAYOUTS_BY_NAME:
        raise mismatch_error(f"{source}: unknown checkpoint layout {layout!r}; known: auto, {', '.join(LAYOUTS)}", {})
    container, file_state = _read_container(checkpoint, source)
    weights, stray = _split_network(container, file_state, network, source)
    chosen = _choose_layout(container, weights, layout, source)
    state, origin, clashes = _apply_layout(chosen, weights)
    own = model.state_dict()
    state = _fit_counters(state, own)
    problems = {**_misfits(state, origin, own), "two keys for one tensor": clashes, "outside any network": stray}
    if any(problems.values()):
        raise mismatch_error(f"{source}: the {network} network in the {chosen.name} layout ({container.name} file) "
                             "does not fit this model (a checkpoint of another model or config?)", problems)
    return state, chosen.name
