"""DAF's depth branch (docs/methods.md B.4): shapes on the tiny CNN and the R101, forward()
still logits only, the SE attention and the layer-4 gate by hand, ×10 parameter groups, configs."""

from __future__ import annotations

import pytest
import torch

from udaseg import config as config_lib
from udaseg.errors import ConfigError
from udaseg.models import create_model, param_groups
from udaseg.models.depth import ChannelAttention, DepthAwareSegmentor, DepthHead


def tiny_depth_model(output_stride=8, internal_size=None, **depth):
    return create_model({"backbone": "tiny_cnn", "head": "deeplabv2_aspp", "align_corners": True,
                         "backbone_options": {"width": 8, "depths": [1, 1, 1, 1], "output_stride": output_stride},
                         "depth": {"internal_size": internal_size, **depth}}, num_classes=5)


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_depth_shapes_on_tiny_cnn(size):
    torch.manual_seed(0)
    model = tiny_depth_model().eval()
    x = torch.randn(2, 3, *size)
    features = model.backbone(x)
    assert [f.shape[1] for f in features] == [8, 16, 32, 64]
    stride8 = features[1].shape[-2:]
    assert tuple(stride8) == (size[0] // 8, size[1] // 8)
    fused = model.depth_head.fuse(features)
    assert fused.shape == (2, 64, *stride8)  # 4 × 16 up-projections → 64, at B2's size
    logits, depth = model.forward_with_depth(x)
    assert logits.shape == (2, 5, *stride8)
    assert depth.shape == (2, 1, *stride8)
    # With the released internal resize the depth map is always 228×304.
    _, depth = tiny_depth_model(internal_size=[228, 304]).eval().forward_with_depth(x)
    assert depth.shape == (2, 1, 228, 304)


def test_stride32_backbone_gets_a_resized_gate():
    model = tiny_depth_model(output_stride=32).eval()
    x = torch.randn(1, 3, 64, 64)
    logits, depth = model.forward_with_depth(x)
    assert logits.shape == (1, 5, 2, 2) and depth.shape == (1, 1, 8, 8)


def test_forward_returns_logits_only_and_matches_forward_with_depth():
    torch.manual_seed(0)
    model = tiny_depth_model().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        both = model.forward_with_depth(x)
        decoded = model.decode(model.extract_features(x))
    assert torch.is_tensor(logits)
    assert torch.allclose(logits, both[0]) and torch.allclose(logits, decoded)
    out = model(x, with_depth=True, return_features=True)
    assert len(out) == 3 and out[1].shape[1] == 1 and len(out[2]) == 4


def test_channel_attention_by_hand():
    att = ChannelAttention(32, reduction=16)
    assert att.squeeze.weight.shape == (2, 32, 1, 1) and att.squeeze.bias is None and att.excite.bias is None
    torch.nn.init.zeros_(att.excite.weight)  # σ(0) = ½ on every channel
    x = torch.randn(1, 32, 3, 3)
    assert torch.allclose(att(x), 0.5 * x)


def test_gate_multiplies_the_last_stage_before_the_classifier():
    model = tiny_depth_model().eval()
    gate = model.depth_head.gate
    assert gate.in_channels == 64 and gate.out_channels == 64  # 64 → C4 (the last stage's channels)
    torch.nn.init.zeros_(gate.weight)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        raw_last = model.backbone(x)[-1]
        torch.nn.init.constant_(gate.bias, 2.0)  # G = ReLU(2) = 2 → B4′ = 2·B4
        assert torch.allclose(model.extract_features(x)[-1], 2 * raw_last)
        torch.nn.init.constant_(gate.bias, -1.0)  # G = ReLU(−1) = 0 → ASPP sees zeros: logits = Σ biases
        logits = model(x)
    bias_sum = sum(conv.bias for conv in model.decode_head.conv2d_list)
    assert torch.allclose(logits, bias_sum.view(1, -1, 1, 1).expand_as(logits), atol=1e-6)


def test_depth_branch_layers_and_init():
    head = DepthHead((8, 16, 32, 64))
    assert head.up[0][0].kernel_size == (5, 5) and head.up[0][0].bias is None and head.up[0][0].out_channels == 16
    assert head.fusion[0].in_channels == 64 and head.fusion[0].out_channels == 64
    assert head.regressor[-1].out_channels == 1 and head.regressor[-1].bias is not None
    assert head.regressor[0][0].kernel_size == (5, 5)
    assert float(head.fusion[0].weight.detach().std()) == pytest.approx(0.01, rel=0.1)  # N(0, 0.01)
    assert torch.all(head.fusion[1].weight == 1) and torch.all(head.fusion[1].bias == 0)


def test_every_depth_parameter_gets_the_head_learning_rate():
    model = tiny_depth_model()
    groups = param_groups(model, base_lr=1.0, weight_decay=0.0, head_lr_mult=10.0, no_decay_norm=False)
    lr_of = {name: g["lr"] for g in groups for name in g["param_names"]}
    depth_names = [n for n, _ in model.named_parameters() if n.startswith("depth_head.")]
    assert depth_names and all(lr_of[n] == 10.0 for n in depth_names)
    assert all(lr_of[n] == 1.0 for n in lr_of if n.startswith("backbone."))


def test_bad_depth_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        tiny_depth_model(channels=3)
    with pytest.raises(ConfigError, match="hrda"):
        create_model({"backbone": "tiny_cnn", "head": "segformer", "depth": {}, "hrda": {"hr_crop_size": [8, 8]}})
    plain = create_model({"backbone": "tiny_cnn", "head": "segformer", "backbone_options": {"width": 8}})
    assert not isinstance(plain, DepthAwareSegmentor)


@pytest.mark.parametrize("name", ["minicity_deeplab", "minicity_deeplab_daf"])
def test_minicity_deeplab_presets_build(name):
    cfg = config_lib.compose([f"model={name}", "benchmark=minicity_synthia2cs", "method=source_only",
                              "schedule=minicity"])
    model = create_model(cfg.model, num_classes=16).eval()
    assert isinstance(model, DepthAwareSegmentor) == name.endswith("_daf") and model.output_stride == 8
    assert model.align_corners
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 16, 8, 8)


def test_r101_daf_preset():
    cfg = config_lib.compose(["model=deeplabv2_r101_daf", "benchmark=minicity_synthia2cs", "method=daf_ida",
                              "schedule=poly09_sgd"])
    model = create_model(cfg.model, num_classes=16).eval()
    assert [a.squeeze.in_channels for a in model.depth_head.attention] == [256, 512, 1024, 2048]
    assert [a.squeeze.out_channels for a in model.depth_head.attention] == [16, 32, 64, 128]
    assert model.depth_head.gate.out_channels == 2048
    with torch.no_grad():
        logits, depth = model.forward_with_depth(torch.randn(1, 3, 33, 33))
    assert logits.shape == (1, 16, 5, 5) and depth.shape == (1, 1, 228, 304)
