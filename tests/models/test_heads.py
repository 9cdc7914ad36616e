"""Decode heads: the protocol over the registry, DAFormer's exact structure (docs/methods.md D5), the
DeepLab-v2 classifier's sum of four branches vs AdaptSegNet's two-branch quirk."""

import pytest
import torch
from torch import nn

from udaseg.models import create_head, list_heads

CHANNELS, STRIDES = (32, 64, 160, 256), (4, 8, 16, 32)
SMALL_OPTIONS = {"daformer": {"embed_dim": 32}, "segformer": {"embed_dim": 32},
                 "proda_aspp": {"channels": 32, "groups": 8}}


def _features(batch=2, size=32, channels=CHANNELS, strides=STRIDES):
    return [torch.randn(batch, c, size // s, size // s, requires_grad=True) for c, s in zip(channels, strides)]


@pytest.mark.parametrize("name", list_heads())
def test_head_protocol_forward_backward(name):
    torch.manual_seed(0)
    head = create_head(name, CHANNELS, STRIDES, 19, **SMALL_OPTIONS.get(name, {}))
    feats = _features()
    logits = head(feats)
    side = 32 // head.output_stride
    assert logits.shape == (2, 19, side, side)
    emb = head.embed(feats)
    assert emb.shape[1] == head.embed_channels
    head.eval()
    torch.testing.assert_close(head.classify(head.embed(feats)), head(feats))
    head.train()
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def _convs(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_daformer_head_structure_matches_spec():
    torch.manual_seed(0)
    head = create_head("daformer", (64, 128, 320, 512), STRIDES, 19)
    # per-stage token-wise Linear C_i → 256, no norm, no activation
    assert [(m.proj.in_features, m.proj.out_features) for m in head.embed_layers] == [
        (64, 256), (128, 256), (320, 256), (512, 256)]
    aspp = head.fuse_layer
    assert len(aspp.aspp_modules) == 4
    first = aspp.aspp_modules[0]  # dilation 1: 1×1 conv 1024 → 256, BN, ReLU
    assert first.conv.kernel_size == (1, 1) and (first.conv.in_channels, first.conv.out_channels) == (1024, 256)
    assert isinstance(first.bn, nn.BatchNorm2d) and isinstance(first.activate, nn.ReLU)
    for branch, d in zip(aspp.aspp_modules[1:], (6, 12, 18)):  # depthwise-separable branches
        dw, pw = branch.depthwise_conv.conv, branch.pointwise_conv.conv
        assert dw.kernel_size == (3, 3) and dw.dilation == (d, d) and dw.padding == (d, d)
        assert dw.groups == dw.in_channels == dw.out_channels == 1024
        assert pw.kernel_size == (1, 1) and (pw.in_channels, pw.out_channels) == (1024, 256)
        assert isinstance(branch.depthwise_conv.bn, nn.BatchNorm2d)
        assert isinstance(branch.pointwise_conv.bn, nn.BatchNorm2d)
    bottleneck = aspp.bottleneck.conv
    assert bottleneck.kernel_size == (3, 3) and (bottleneck.in_channels, bottleneck.out_channels) == (1024, 256)
    # no conv bias before a norm; plain BatchNorm
    assert all(c.bias is None for c in _convs(head.fuse_layer))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in head.modules())
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    cls = head.classifier
    assert cls.kernel_size == (1, 1) and (cls.in_channels, cls.out_channels) == (256, 19)
    assert cls.weight.std().item() == pytest.approx(0.01, rel=0.05) and abs(cls.weight.mean().item()) < 1e-3
    assert torch.all(cls.bias == 0)
    assert head.output_stride == 4


def test_daformer_head_upsamples_every_stage_to_stride_4():
    head = create_head("daformer", CHANNELS, STRIDES, 19, embed_dim=16).eval()
    feats = _features(batch=1, size=64)
    assert head(feats).shape[-2:] == (16, 16)


def test_segformer_head_defaults():
    head = create_head("segformer", (64, 128, 320, 512), STRIDES, 19)
    assert all(m.proj.out_features == 768 for m in head.embed_layers)
    fuse = head.fuse_layer.conv
    assert fuse.kernel_size == (1, 1) and (fuse.in_channels, fuse.out_channels) == (4 * 768, 768)
    assert head.classifier.in_channels == 768


def test_deeplabv2_aspp_sums_four_branches():
    torch.manual_seed(0)
    head = create_head("deeplabv2_aspp", (8, 8, 8, 16), (4, 8, 8, 8), 5)
    assert [c.dilation[0] for c in head.conv2d_list] == [6, 12, 18, 24]
    assert [c.padding[0] for c in head.conv2d_list] == [6, 12, 18, 24]
    assert all(c.bias is not None and c.kernel_size == (3, 3) and c.in_channels == 16 for c in head.conv2d_list)
    big = create_head("deeplabv2_aspp", (256, 512, 1024, 2048), (4, 8, 8, 8), 19)
    assert big.conv2d_list[0].weight.std().item() == pytest.approx(0.01, rel=0.02)
    x = torch.randn(1, 16, 30, 30)
    feats = [None, None, None, x]
    assert head.embed(feats) is x and head.output_stride == 8
    expected = sum(conv(x) for conv in head.conv2d_list)
    torch.testing.assert_close(head(feats), expected)


def test_deeplabv2_aspp_two_branch_quirk():
    torch.manual_seed(0)
    head = create_head("deeplabv2_aspp", (8, 8, 8, 16), (4, 8, 8, 8), 5, two_branch_quirk=True)
    x = torch.randn(1, 16, 30, 30)
    torch.testing.assert_close(head([x] * 4), head.conv2d_list[0](x) + head.conv2d_list[1](x))
    # the unused branches stay in the state dict (checkpoints keep their shape) but are frozen
    assert len(head.conv2d_list) == 4
    assert [c.weight.requires_grad for c in head.conv2d_list] == [True, True, False, False]


def test_proda_head_structure():
    head = create_head("proda_aspp", (8, 8, 8, 64), (4, 8, 8, 8), 19)
    assert len(head.branches) == 5
    assert [b[0].dilation[0] for b in head.branches] == [1, 6, 12, 18, 24]
    assert all(isinstance(b[1], nn.GroupNorm) and b[1].num_groups == 32 for b in head.branches)
    assert head.classifier.bias is None and head.embed_channels == 256
    assert torch.all(head.bottleneck[0].bias == 0)
    assert head.bottleneck[-1].__class__ is nn.GroupNorm  # no ReLU after the last GroupNorm
