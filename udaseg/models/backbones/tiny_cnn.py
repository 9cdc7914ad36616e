"""A small, fast CNN for CPU work on MiniCity (the demo's backbone).

Not from any paper: a MobileNet-flavoured encoder sized so that a full adaptation run on
MiniCity takes minutes on two CPU cores. Layout:

* stem: two 3×3 stride-2 conv-BN-ReLU (3 → width/2 → width), stride 4;
* four stages with ``width·(1, 2, 4, 8)`` channels at strides 4, 8, 16, 32. Stages 2–4 open with
  a depthwise-separable stride-2 downsampling conv; every stage then has ``depths[i]`` residual
  depthwise-separable blocks (3×3 depthwise, BN, ReLU, 1×1 pointwise, BN, + skip, ReLU).

``output_stride=8`` turns stages 3 and 4 into dilated stride-1 stages (dilation 2 and 4), the
DeepLab-v2 layout in miniature, for CPU presets of the DeepLab-v2 methods (ADVENT, BAFFT, DAF,
DiGA) whose heads and losses assume stride-8 features.
"""

from __future__ import annotations

import torch
from torch import nn

from udaseg.models.backbones.base import Backbone
from udaseg.models.registry import BACKBONES


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                  groups: int = 1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SeparableDown(nn.Sequential):
    """Depthwise 3×3 (stride, dilation) then pointwise 1×1, each with BN+ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int):
        super().__init__(_conv_bn_relu(cin, cin, 3, stride, dilation, groups=cin), _conv_bn_relu(cin, cout, 1))


class SeparableResidual(nn.Module):
    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.dw = _conv_bn_relu(channels, channels, 3, dilation=dilation, groups=channels)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn(self.pw(self.dw(x))))


class TinyCNN(Backbone):
    default_normalization = "imagenet"

    def __init__(self, width: int = 16, depths: tuple[int, ...] | list[int] = (1, 1, 2, 1), output_stride: int = 32):
        super().__init__()
        if output_stride not in (8, 32):
            raise ValueError(f"tiny_cnn output_stride must be 8 or 32, got {output_stride}")
        if width < 2 or width % 2:
            raise ValueError(f"tiny_cnn width must be an even number ≥ 2, got {width}")
        channels = tuple(width * m for m in (1, 2, 4, 8))
        dilated = output_stride == 8
        self.stem = nn.Sequential(_conv_bn_relu(3, width // 2, 3, stride=2),
                                  _conv_bn_relu(width // 2, width, 3, stride=2))
        self.stages = nn.ModuleList()
        strides, stride = [], 4
        for i, (c, depth) in enumerate(zip(channels, depths)):
            dilation = {2: 2, 3: 4}.get(i, 1) if dilated else 1
            layers: list[nn.Module] = []
            if i > 0:
                step = 1 if (dilated and i >= 2) else 2
                stride *= step
                layers.append(SeparableDown(channels[i - 1], c, step, dilation))
            layers += [SeparableResidual(c, dilation) for _ in range(depth)]
            self.stages.append(nn.Sequential(*layers))
            strides.append(stride)
        self.channels = channels
        self.strides = tuple(strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@BACKBONES.register("tiny_cnn")
def tiny_cnn(**options) -> TinyCNN:
    """Small CPU CNN (options: width=16, depths=(1, 1, 2, 1), output_stride=32|8)."""
    return TinyCNN(**options)
