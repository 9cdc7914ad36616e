"""DAFormer and SegFormer decode heads.

Hoyer et al., "DAFormer: Improving Network Architectures and Training Strategies for
Domain-Adaptive Semantic Segmentation", CVPR 2022 (docs/methods.md D5, exact);
Xie et al., SegFormer, NeurIPS 2021 (the all-MLP head).

Both embed every stage token-wise with a Linear(C_i → embed_dim) (no norm, no activation),
upsample the maps bilinearly (``align_corners=False``) to the first stage's size (stride 4) and
concatenate them; they differ in the fusion of the concatenation:

* ``daformer`` — context-aware fusion, an ASPP over the 4·256 = 1024 channels with dilations
  (1, 6, 12, 18): a 1×1 conv-BN-ReLU branch for dilation 1 and depthwise-separable branches
  (3×3 depthwise dilated conv-BN-ReLU on all channels, then 1×1 pointwise conv-BN-ReLU to 256)
  for the others; the branch outputs are concatenated and reduced by a 3×3 conv-BN-ReLU
  bottleneck to 256 channels. Conv bias is off wherever BN follows; plain BatchNorm.
* ``segformer`` — a 1×1 conv-BN-ReLU (the SegFormer head; embed dim 768 by default; with 256 it
  is DAFormer's ``conv1`` ablation and the shape of HRDA's scale-attention head).

Then Dropout2d(0.1) and a 1×1 classifier initialised N(0, 0.01) with zero bias. The output is at
stride 4. Module names follow mmseg's (``embed_layers``, ``fuse_layer``, ``conv_seg`` as
``classifier``) closely enough that a mapping is mechanical; everything lives under the
segmentor's ``decode_head`` so the DAFormer lr rule (names containing "head" → lr ×10) applies.
SegFormer's head concatenates the stages in reverse order; the fusion conv sees a permutation of
the same channels, which only matters when loading its weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from udaseg.models.heads.base import ConvModule, DecodeHead
from udaseg.models.registry import HEADS


class TokenEmbed(nn.Module):
    """Token-wise Linear(C → D) applied to a feature map (SegFormer's "MLP")."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)


class DepthwiseSeparableConvModule(nn.Sequential):
    def __init__(self, cin: int, cout: int, dilation: int):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)


class ASPPFusion(nn.Module):
    """DAFormer's context-aware fusion (``fusion_cfg`` type aspp, pool=False)."""

    def __init__(self, cin: int, channels: int, dilations: tuple[int, ...], separable: bool):
        super().__init__()
        branches: list[nn.Module] = []
        for d in dilations:
            if d == 1:
                branches.append(ConvModule(cin, channels, 1))
            elif separable:
                branches.append(DepthwiseSeparableConvModule(cin, channels, d))
            else:
                branches.append(ConvModule(cin, channels, 3, padding=d, dilation=d))
        self.aspp_modules = nn.ModuleList(branches)
        self.bottleneck = ConvModule(len(dilations) * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], dim=1))


def embed_and_fuse(embed_layers, fuse_layer, features: list[torch.Tensor], align_corners: bool) -> torch.Tensor:
    """Token-wise embedding of every stage, bilinear to the first stage's size, concatenation,
    fusion: DAFormer's decoder up to its classifier (shared with TigDA's CMF head)."""
    size = features[0].shape[-2:]
    maps = []
    for layer, x in zip(embed_layers, features):
        x = layer(x)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
        maps.append(x)
    return fuse_layer(torch.cat(maps, dim=1))


class DAFormerHead(DecodeHead):
    def __init__(self, in_channels, in_strides, num_classes: int, embed_dim: int = 256, channels: int | None = None,
                 fusion: str = "aspp", dilations: tuple[int, ...] | list[int] = (1, 6, 12, 18), separable: bool = True,
                 dropout: float = 0.1, align_corners: bool = False):
        super().__init__(in_channels, in_strides, num_classes)
        channels = channels or embed_dim
        self.align_corners = align_corners
        self.embed_layers = nn.ModuleList(TokenEmbed(c, embed_dim) for c in self.in_channels)
        fused_in = embed_dim * len(self.in_channels)
        self.fuse_layer: nn.Module
        if fusion == "aspp":
            self.fuse_layer = ASPPFusion(fused_in, channels, tuple(dilations), separable)
        elif fusion == "conv1x1":
            self.fuse_layer = ConvModule(fused_in, channels, 1)
        else:
            raise ValueError(f"fusion must be 'aspp' or 'conv1x1', got {fusion!r}")
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)  # type: ignore[arg-type]  # Conv2d built with bias=True
        self.output_stride = self.in_strides[0]
        self.embed_channels = channels

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        return embed_and_fuse(self.embed_layers, self.fuse_layer, features, self.align_corners)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(x))


@HEADS.register("daformer")
def daformer_head(in_channels, in_strides, num_classes, **options) -> DAFormerHead:
    """DAFormer head: embed 256, separable ASPP (1, 6, 12, 18) fusion (options: embed_dim,
    channels, dilations, separable, dropout)."""
    return DAFormerHead(in_channels, in_strides, num_classes, **{"fusion": "aspp", **options})


@HEADS.register("segformer")
def segformer_head(in_channels, in_strides, num_classes, **options) -> DAFormerHead:
    """SegFormer all-MLP head: embed 768, 1×1 fusion (options: embed_dim, dropout)."""
    return DAFormerHead(in_channels, in_strides, num_classes, **{"embed_dim": 768, "fusion": "conv1x1", **options})
