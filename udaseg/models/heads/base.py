"""The decode-head protocol.

A head maps the backbone's stage list to class logits at its own stride::

    logits = head(features)                     # [B, num_classes, h, w] at head.output_stride
    logits = head.classify(head.embed(features))  # the same, in two steps

``embed`` returns the map the classifier consumes — DAFormer's fused 256-channel map, layer-4
features for the DeepLab-v2 classifier, ProDA's 256-d feature after dropout — which methods use
for prototypes and feature statistics; ``classify`` applies the (dropout +) classifier. Heads
are built by :func:`udaseg.models.create_head` from the backbone's ``channels`` and ``strides``.
"""

from __future__ import annotations

import torch
from torch import nn


class DecodeHead(nn.Module):
    def __init__(self, in_channels: list[int] | tuple[int, ...], in_strides: list[int] | tuple[int, ...],
                 num_classes: int):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.in_strides = tuple(in_strides)
        self.num_classes = num_classes
        self.output_stride = min(self.in_strides)
        self.embed_channels = 0

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classify(self.embed(features))


class ConvModule(nn.Sequential):
    """conv → BN → ReLU with mmcv ``ConvModule``'s names (``conv``, ``bn``, ``activate``), conv
    bias off because a norm follows, and its init (Kaiming-normal, fan_out; BN γ=1, β=0)."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 0, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
