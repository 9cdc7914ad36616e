"""The backbone protocol every encoder follows.

``forward(x) -> list[Tensor]``: one feature map per stage, shallow to deep, from a *normalised*
image batch ``x`` [B, 3, H, W]. Two attributes describe them:

* ``channels`` — channels of each returned map, e.g. (64, 128, 320, 512) for MiT-B5;
* ``strides`` — nominal stride of each map w.r.t. the input, e.g. (4, 8, 16, 32). The actual
  size is ``ceil``-ish (a 65-pixel input gives a 17-pixel stride-4 map); consumers resize by
  shape, never by arithmetic on the input size.

Two class attributes tell the segmentor how this family expects its input
(see :mod:`udaseg.models.segmentor`): ``default_normalization`` ("imagenet", "caffe_bgr" or "inception") and
``default_align_corners`` (how logits are upsampled by the reference code of that family).
``load_pretrained(source)`` initialises the backbone from a weight source (file, URL, hub id, or a
family-specific tag such as "imagenet").
"""

from __future__ import annotations

from typing import Any

from torch import nn

from udaseg.models.weights import load_pretrained


class Backbone(nn.Module):
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    default_normalization: str = "imagenet"
    default_align_corners: bool = False

    def load_pretrained(self, source: str) -> dict:
        return load_pretrained(self, source, what=f"backbone {type(self).__name__}")


def timm_feature_info(body: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channels, strides) of a timm ``features_only`` model's outputs."""
    info: Any = body.feature_info
    return tuple(info.channels()), tuple(info.reduction())
