"""DAFormer's parameter-group rule on our module names (docs/methods.md D4)."""

import pytest
import torch

from udaseg.models import create_model, param_groups


def _group_of(groups):
    return {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["param_names"]}


def test_daformer_rule_on_mit_b0():
    model = create_model({"backbone": "mit_b0", "head": "daformer", "head_options": {"embed_dim": 16}})
    groups = param_groups(model, base_lr=6e-5, weight_decay=0.01)
    where = _group_of(groups)
    assert set(where) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert groups[0]["lr"] == 6e-5 and groups[0]["weight_decay"] == 0.01  # backbone group first
    # MiT LayerNorms (block, stage, patch-embed and spatial-reduction norms): no decay, lr ×1
    for name in ("backbone.block1.0.norm1.weight", "backbone.block1.0.norm1.bias", "backbone.norm4.weight",
                 "backbone.patch_embed1.norm.weight", "backbone.block1.0.attn.norm.weight"):
        assert where[name] == (6e-5, 0.0), name
    # other backbone parameters, biases included, keep decay
    for name in ("backbone.block1.0.attn.q.weight", "backbone.block1.0.attn.q.bias",
                 "backbone.patch_embed1.proj.bias"):
        assert where[name] == (6e-5, 0.01), name
    # the whole head ×10, its BatchNorms ("bn") keep decay, "head" is matched before "norm"
    head_names = [n for n in where if n.startswith("decode_head.")]
    assert head_names and all(where[n] == (pytest.approx(6e-4), 0.01) for n in head_names)
    assert "decode_head.fuse_layer.bottleneck.bn.weight" in head_names
    assert len(groups) == 3


def test_sgd_convention_and_frozen_parameters():
    model = create_model({"backbone": "resnet50_deeplabv2", "head": "deeplabv2_aspp",
                          "head_options": {"two_branch_quirk": True}})
    groups = param_groups(model, base_lr=2.5e-4, weight_decay=5e-4, no_decay_norm=False)
    where = _group_of(groups)
    assert not any(".bn" in n or "downsample.1" in n for n in where)  # frozen BN affine left out
    assert "decode_head.conv2d_list.2.weight" not in where  # the quirk's unused branches are frozen
    assert where["decode_head.conv2d_list.0.weight"] == (pytest.approx(2.5e-3), 5e-4)
    assert where["backbone.conv1.weight"] == (2.5e-4, 5e-4)
    assert [g["lr"] for g in groups] == [2.5e-4, pytest.approx(2.5e-3)]


def test_custom_keys_longest_first():
    model = torch.nn.Sequential()
    model.add_module("head_norm", torch.nn.LayerNorm(2))
    groups = param_groups(model, 1.0, 1.0, custom_keys={"norm": {"decay_mult": 0.0}, "head_norm": {"lr_mult": 3.0}})
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(3.0, 1.0)]


def test_groups_work_with_adamw():
    model = create_model({"backbone": "tiny_cnn", "head": "segformer", "head_options": {"embed_dim": 8}})
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 0.01), lr=1e-3)
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    opt.step()
