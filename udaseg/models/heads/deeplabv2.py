"""DeepLab-v2 classifiers on the last backbone stage.

``deeplabv2_aspp`` — the ASPP classifier of DeepLab-v2 as used by AdaptSegNet, ADVENT, BAFFT and
DAF (docs/methods.md A.4, §B.4): four parallel 3×3 convs C → num_classes with dilation =
padding = 6, 12, 18, 24, with bias, weights N(0, 0.01); their outputs are **summed**. There is no
dropout and no embedding: ``embed`` returns the last-stage features themselves (BAFFT's
prototypes use them).

``two_branch_quirk=True`` reproduces AdaptSegNet's classifier, whose forward returns inside its
loop so only the dilation-6 and -12 branches are summed (BAFFT/SIM trained with it). The two other
branches still exist, so checkpoints keep their shape, but they are frozen (``requires_grad``
off): they never influence the output, and frozen they neither enter the optimizer nor trip DDP's
unused-parameter check. Default: off — all four, as ADVENT/DAF.

``proda_aspp`` — ProDA's ``Classifier_Module2`` used by DiGA (docs/methods.md G4.1), for awareness
and DiGA presets: five branches (a 1×1 conv and 3×3 convs with dilation 6/12/18/24) of 256
channels, each conv (with bias) → GroupNorm(32) → ReLU; concatenated (1280), squeeze-and-excitation
(reduction 16), 3×3 conv to 256 (zero bias) → GroupNorm, no ReLU; Dropout2d(0.1) — that 256-d map
is ``embed``'s output, DiGA's prototype feature — then a bias-free 1×1 classifier. Every conv
starts N(0, 0.01), as the reference's generic DeepLab init loop leaves them.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from udaseg.models.heads.base import DecodeHead
from udaseg.models.registry import HEADS


class DeepLabV2ASPPHead(DecodeHead):
    def __init__(self, in_channels, in_strides, num_classes: int,
                 dilations: tuple[int, ...] | list[int] = (6, 12, 18, 24), two_branch_quirk: bool = False,
                 in_index: int = -1):
        super().__init__(in_channels, in_strides, num_classes)
        self.in_index = in_index
        self.two_branch_quirk = two_branch_quirk
        cin = self.in_channels[in_index]
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(cin, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        for conv in self.conv2d_list:
            nn.init.normal_(cast(nn.Conv2d, conv).weight, 0.0, 0.01)
        self.active_branches = 2 if two_branch_quirk else len(self.conv2d_list)
        for conv in self.conv2d_list[self.active_branches:]:
            conv.requires_grad_(False)
        self.output_stride = self.in_strides[in_index]
        self.embed_channels = cin

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        return features[self.in_index]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:self.active_branches]:
            out = out + conv(x)
        return out


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.fc(x.mean(dim=(2, 3)))
        return x * weight[:, :, None, None]


class ProDAHead(DecodeHead):
    def __init__(self, in_channels, in_strides, num_classes: int, channels: int = 256,
                 dilations: tuple[int, ...] | list[int] = (6, 12, 18, 24), groups: int = 32, se_reduction: int = 16,
                 dropout: float = 0.1, in_index: int = -1):
        super().__init__(in_channels, in_strides, num_classes)
        self.in_index = in_index
        cin = self.in_channels[in_index]

        def branch(kernel: int, dilation: int) -> nn.Sequential:
            pad = dilation if kernel == 3 else 0
            return nn.Sequential(nn.Conv2d(cin, channels, kernel, padding=pad, dilation=dilation, bias=True),
                                 nn.GroupNorm(groups, channels), nn.ReLU(inplace=True))

        self.branches = nn.ModuleList([branch(1, 1)] + [branch(3, d) for d in dilations])
        concat = channels * len(self.branches)
        self.se = SqueezeExcitation(concat, se_reduction)
        self.bottleneck = nn.Sequential(nn.Conv2d(concat, channels, 3, padding=1, bias=True),
                                        nn.GroupNorm(groups, channels))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.zeros_(cast(torch.Tensor, self.bottleneck[0].bias))  # the conv has a bias
        self.output_stride = self.in_strides[in_index]
        self.embed_channels = channels

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[self.in_index]
        x = self.se(torch.cat([b(x) for b in self.branches], dim=1))
        return self.dropout(self.bottleneck(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


@HEADS.register("deeplabv2_aspp")
def deeplabv2_aspp(in_channels, in_strides, num_classes, **options) -> DeepLabV2ASPPHead:
    """DeepLab-v2 ASPP classifier, four summed branches (options: dilations, two_branch_quirk, in_index)."""
    return DeepLabV2ASPPHead(in_channels, in_strides, num_classes, **options)


@HEADS.register("proda_aspp")
def proda_aspp(in_channels, in_strides, num_classes, **options) -> ProDAHead:
    """ProDA/DiGA ASPP head with GroupNorm and SE (options: channels, dilations, groups, dropout)."""
    return ProDAHead(in_channels, in_strides, num_classes, **options)
