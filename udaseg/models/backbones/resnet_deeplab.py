"""DeepLab-v2 ResNet (Caffe layout), the backbone of AdaptSegNet, ADVENT, BAFFT, DAF+IDA and DiGA.

Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
Convolution, and Fully Connected CRFs", TPAMI 2018; layout as in AdaptSegNet/ADVENT's
``ResNetMulti`` (docs/methods.md A.4/B.4, G4.1). What differs from torchvision:

* the stride of a downsampling bottleneck sits in its **first 1×1 conv**, not in the 3×3;
* the stem max-pool uses ``ceil_mode=True`` (a 1024×512 input gives 129×65 maps at stride 8);
* layer3 and layer4 keep stride 1 with dilation 2 and 4 (**output stride 8**); the first block of
  every layer has a 1×1 projection shortcut;
* module names match the released checkpoints (``conv1``, ``bn1``, ``layer1.0.downsample.0`` …),
  so ``DeepLab_resnet_pretrained_init-f81d91e8.pth`` (keys ``Scale.*``) and ADVENT's
  ``DeepLab_resnet_pretrained_imagenet.pth`` load directly; their ``layer5`` classifier is
  reported as unused.

All four stage outputs are returned (256/512/1024/2048 channels at strides 4/8/8/8): DAF's depth
branch needs every stage, BAFFT its layer-4 features.

BatchNorm (``norm_mode``):

* ``"frozen_affine"`` (default, the reference behaviour): γ and β never train
  (``requires_grad=False``) but the layers follow ``model.train()``, so training forwards normalise
  with batch statistics and update the running statistics;
* ``"frozen"``: γ, β *and* running statistics fixed (BN always in eval mode) — the common cleaner
  alternative, a deviation from the references;
* ``"trainable"``: ordinary BatchNorm.

Random initialisation uses Kaiming-normal convs; the references always start from a checkpoint
(their N(0, 0.01) conv init is overwritten), so this only matters without ``pretrained``.
The input is expected Caffe-style: BGR, minus the mean (104.008, 116.669, 122.679), no std
(see :mod:`udaseg.models.segmentor`).
"""

from __future__ import annotations

import torch
from torch import nn

from udaseg.models.backbones.base import Backbone
from udaseg.models.registry import BACKBONES

NORM_MODES = ("frozen_affine", "frozen", "trainable")


class CaffeBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DeepLabV2ResNet(Backbone):
    default_normalization = "caffe_bgr"
    # ADVENT/BAFFT/DiGA upsample logits with align_corners=True (docs/methods.md A.13, B.10, G16.2).
    default_align_corners = True

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 23, 3), norm_mode: str = "frozen_affine"):
        super().__init__()
        if norm_mode not in NORM_MODES:
            raise ValueError(f"norm_mode must be one of {NORM_MODES}, got {norm_mode!r}")
        self.norm_mode = norm_mode
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self._inplanes = 64
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], dilation=2)
        self.layer4 = self._make_layer(512, layers[3], dilation=4)
        self.channels = (256, 512, 1024, 2048)
        self.strides = (4, 8, 8, 8)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                if norm_mode != "trainable":
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out = planes * CaffeBottleneck.expansion
        downsample = nn.Sequential(nn.Conv2d(self._inplanes, out, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out))
        layers = [CaffeBottleneck(self._inplanes, planes, stride, dilation, downsample)]
        self._inplanes = out
        layers += [CaffeBottleneck(out, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def train(self, mode: bool = True) -> DeepLabV2ResNet:
        super().train(mode)
        if self.norm_mode == "frozen":
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]


@BACKBONES.register("resnet101_deeplabv2")
def resnet101_deeplabv2(**options) -> DeepLabV2ResNet:
    """DeepLab-v2 ResNet-101 (blocks 3-4-23-3), output stride 8 (options: norm_mode)."""
    return DeepLabV2ResNet((3, 4, 23, 3), **options)


@BACKBONES.register("resnet50_deeplabv2")
def resnet50_deeplabv2(**options) -> DeepLabV2ResNet:
    """DeepLab-v2 ResNet-50 (blocks 3-4-6-3), output stride 8 (options: norm_mode)."""
    return DeepLabV2ResNet((3, 4, 6, 3), **options)
