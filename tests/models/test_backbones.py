"""Backbones: the shared protocol over the registry, and each family's specifics."""

import math

import pytest
import torch
from torch import nn

from udaseg.models import create_backbone, list_backbones
from udaseg.models.backbones import DeepLabV2ResNet

# MiT-B3…B5 (45–82 M parameters; 1–1.6 s each with backward on 2 cores) run in the slow tests only;
# ResNet-101 on a 64×64 input takes under 0.5 s and stays in the default suite.
SLOW_BACKBONES = ("mit_b3", "mit_b4", "mit_b5")
FAST_BACKBONES = [n for n in list_backbones() if n not in SLOW_BACKBONES]
FAST_BACKBONES += ["timm:resnet18"]
FAST_OPTIONS = {"timm:resnet18": {}, "tiny_cnn": {"width": 8}}


def _check_protocol(backbone, size=(64, 64), batch=2):
    x = torch.randn(batch, 3, *size)
    feats = backbone(x)
    assert isinstance(feats, list) and len(feats) == len(backbone.channels) == len(backbone.strides)
    for f, c, s in zip(feats, backbone.channels, backbone.strides):
        assert f.shape[:2] == (batch, c)
        # nominal stride: the map is the input divided by the stride, rounded up at most one more
        for dim, n in zip(f.shape[-2:], size):
            assert math.ceil(n / s) <= dim <= math.ceil(n / s) + 1, (f.shape, s)
    sum(f.float().mean() for f in feats).backward()
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    return feats


@pytest.mark.parametrize("name", FAST_BACKBONES)
def test_backbone_protocol_forward_backward(name):
    torch.manual_seed(0)
    backbone = create_backbone(name, **FAST_OPTIONS.get(name, {}))
    _check_protocol(backbone)
    assert list(backbone.strides) == sorted(backbone.strides)


def test_mit_returns_the_four_stages_without_smp_dummy():
    backbone = create_backbone("mit_b0")
    assert backbone.channels == (32, 64, 160, 256) and backbone.strides == (4, 8, 16, 32)
    feats = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 16, 24), (64, 8, 12), (160, 4, 6), (256, 2, 3)]


def test_mit_keeps_original_segformer_parameter_names():
    keys = set(create_backbone("mit_b0").state_dict())
    for key in ("patch_embed1.proj.weight", "patch_embed1.norm.weight", "block1.0.norm1.weight",
                "block1.0.attn.q.weight", "block1.0.attn.kv.weight", "block1.0.attn.sr.weight",
                "block1.0.attn.norm.weight", "block1.0.mlp.dwconv.dwconv.weight", "block4.1.mlp.fc2.bias",
                "norm4.weight"):
        assert key in keys, key


def test_mit_stochastic_depth_rises_to_drop_path_rate():
    backbone = create_backbone("mit_b0")  # depths 2-2-2-2
    probs = [getattr(b.drop_path, "drop_prob", 0.0) for stage in (backbone.block1, backbone.block2,
                                                                   backbone.block3, backbone.block4) for b in stage]
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.1) and probs == sorted(probs)
    off = create_backbone("mit_b0", drop_path_rate=0.0)
    assert all(isinstance(b.drop_path, nn.Identity) for b in off.block4)


def _deeplab_size(n: int) -> tuple[int, int]:
    """Expected (stride-4, stride-8) map size of the Caffe ResNet on an n-pixel side."""
    conv1 = (n + 2 * 3 - 7) // 2 + 1
    pool = math.ceil((conv1 + 2 - 3) / 2) + 1  # ceil_mode
    return pool, (pool - 1) // 2 + 1


def test_deeplab_size_arithmetic_matches_spec():
    # docs/methods.md A.4: 1024×512 → 129×65, 1280×720 → 161×91 feature maps
    assert _deeplab_size(1024)[1] == 129 and _deeplab_size(512)[1] == 65
    assert _deeplab_size(1280)[1] == 161 and _deeplab_size(720)[1] == 91


def test_deeplabv2_layout_output_stride_8():
    backbone = create_backbone("resnet50_deeplabv2")
    assert backbone.channels == (256, 512, 1024, 2048) and backbone.strides == (4, 8, 8, 8)
    assert backbone.maxpool.ceil_mode
    # stride in the first 1×1 conv of the downsampling block, never in the 3×3
    assert backbone.layer2[0].conv1.stride == (2, 2) and backbone.layer2[0].conv2.stride == (1, 1)
    assert backbone.layer2[0].downsample[0].stride == (2, 2)
    for layer, dilation in ((backbone.layer3, 2), (backbone.layer4, 4)):
        assert layer[0].downsample is not None and layer[0].conv1.stride == (1, 1)
        assert all(b.conv2.dilation == (dilation, dilation) and b.conv2.padding == (dilation, dilation) for b in layer)
    h, w = 100, 60  # ceil-mode pooling shows on odd intermediate sizes
    feats = backbone.eval()(torch.randn(1, 3, h, w))
    (h4, h8), (w4, w8) = _deeplab_size(h), _deeplab_size(w)
    assert [tuple(f.shape[-2:]) for f in feats] == [(h4, w4), (h8, w8), (h8, w8), (h8, w8)]
    assert (h4, w4) == (26, 16)  # floor-mode pooling would give 25×15


def test_deeplabv2_norm_modes():
    x = torch.randn(2, 3, 40, 40)
    frozen_affine = DeepLabV2ResNet((1, 1, 1, 1), norm_mode="frozen_affine").train()
    bns = [m for m in frozen_affine.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not p.requires_grad for m in bns for p in m.parameters())
    before = bns[0].running_mean.clone()
    frozen_affine(x)
    assert not torch.equal(before, bns[0].running_mean)  # batch statistics, as the reference

    frozen = DeepLabV2ResNet((1, 1, 1, 1), norm_mode="frozen").train()
    bn = next(m for m in frozen.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    frozen(x)
    assert not bn.training and torch.equal(before, bn.running_mean)

    trainable = DeepLabV2ResNet((1, 1, 1, 1), norm_mode="trainable")
    assert all(p.requires_grad for p in trainable.parameters())
    with pytest.raises(ValueError):
        DeepLabV2ResNet(norm_mode="sync")


def test_deeplabv2_keys_match_adaptsegnet_checkpoints():
    keys = set(create_backbone("resnet50_deeplabv2").state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.weight", "layer4.2.bn3.bias"):
        assert key in keys


def test_tiny_cnn_width_and_dilated_variant():
    net = create_backbone("tiny_cnn", width=12)
    assert net.channels == (12, 24, 48, 96) and net.strides == (4, 8, 16, 32)
    dilated = create_backbone("tiny_cnn", width=8, output_stride=8)
    assert dilated.strides == (4, 8, 8, 8)
    feats = _check_protocol(dilated, size=(64, 64))
    assert feats[-1].shape[-2:] == (8, 8)
    with pytest.raises(ValueError):
        create_backbone("tiny_cnn", output_stride=16)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_BACKBONES)
def test_large_backbones(name):
    backbone = create_backbone(name)
    _check_protocol(backbone, size=(64, 64), batch=1)


@pytest.mark.slow
def test_mit_b5_architecture():
    b5 = create_backbone("mit_b5")
    assert [len(s) for s in (b5.block1, b5.block2, b5.block3, b5.block4)] == [3, 6, 40, 3]
    assert b5.channels == (64, 128, 320, 512)
    assert b5.block4[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert b5.block1[0].norm1.eps == 1e-6
    assert sum(p.numel() for p in b5.parameters()) / 1e6 == pytest.approx(81.4, abs=0.5)
