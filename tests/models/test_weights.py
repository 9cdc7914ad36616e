"""Loading pretrained weights and checkpoints from local files; never downloads."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from udaseg.models import (
    CheckpointMismatchError,
    create_backbone,
    create_model,
    load_checkpoint,
    load_pretrained,
    load_state_dict_strict,
)

TINY = {"backbone": "tiny_cnn", "head": "segformer", "backbone_options": {"width": 8},
        "head_options": {"embed_dim": 16}}


def _randomised(module):
    torch.manual_seed(123)
    for p in module.parameters():
        p.data.normal_()
    return module


def test_pretrained_backbone_from_prefixed_file_with_extra_keys(tmp_path, caplog):
    donor = _randomised(create_backbone("tiny_cnn", width=8))
    state = {f"module.backbone.{k}": v for k, v in donor.state_dict().items()}
    state["module.backbone.head.weight"] = torch.zeros(1000, 64)  # e.g. an ImageNet classifier
    path = tmp_path / "pretrained.pth"
    torch.save({"state_dict": state}, path)

    with caplog.at_level(logging.INFO):
        model = create_model({**TINY, "pretrained": str(path)})
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[k], v)
    assert "module.backbone.head.weight" in caplog.text  # reported as unused


def test_adaptsegnet_style_checkpoint_scale_prefix_and_layer5(tmp_path):
    donor = _randomised(create_backbone("resnet50_deeplabv2"))
    state = {f"Scale.{k}": v for k, v in donor.state_dict().items()}
    state["Scale.layer5.conv2d_list.0.weight"] = torch.zeros(21, 2048, 3, 3)
    path = tmp_path / "DeepLab_resnet_pretrained_init.pth"
    torch.save(state, path)
    target = create_backbone("resnet50_deeplabv2")
    report = target.load_pretrained(str(path))
    assert report["prefix"] == "Scale." and report["unexpected"] == ["Scale.layer5.conv2d_list.0.weight"]
    torch.testing.assert_close(target.layer4[2].conv3.weight, donor.layer4[2].conv3.weight)


def test_safetensors_file(tmp_path):
    donor = _randomised(create_backbone("tiny_cnn", width=8))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    target = create_backbone("tiny_cnn", width=8)
    load_pretrained(target, path)
    torch.testing.assert_close(target.stem[0][0].weight, donor.stem[0][0].weight)


def test_shape_mismatch_is_an_error_listing_keys(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(create_backbone("tiny_cnn", width=16).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch.*stem\.0\.0\.weight"):
        create_model({**TINY, "pretrained": str(path)})


def test_weights_of_another_model_are_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(3)}, path)
    with pytest.raises(CheckpointMismatchError, match="another model"):
        create_model({**TINY, "pretrained": str(path)})


def test_missing_file_is_a_clear_error(tmp_path):
    from udaseg.errors import UdasegError

    with pytest.raises(UdasegError, match="not found"):
        create_model({**TINY, "pretrained": str(tmp_path / "nope.pth")})


def test_load_checkpoint_picks_the_student_of_a_daformer_style_file(tmp_path):
    student, teacher = _randomised(create_model(TINY)), create_model(TINY)
    state = {**{f"model.{k}": v for k, v in student.state_dict().items()},
             **{f"ema_model.{k}": torch.zeros_like(v) for k, v in teacher.state_dict().items()}}
    path = tmp_path / "iter_40000.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    fresh = create_model(TINY)
    assert load_checkpoint(fresh, path) == "model."
    for k, v in student.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


def test_load_checkpoint_of_another_model_lists_mismatched_keys(tmp_path):
    path = tmp_path / "ckpt.pt"
    state = create_model(TINY, num_classes=7).state_dict()
    torch.save({"modules": {f"student.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(create_model(TINY, num_classes=19), path)
    message = str(err.value)
    assert "another model" in message and "decode_head.classifier.weight" in message and "(16, 7" not in message
    assert "(7, 16, 1, 1)" in message and "(19, 16, 1, 1)" in message


def test_load_state_dict_strict_reports_missing_and_unexpected():
    model = create_model(TINY)
    state = dict(model.state_dict())
    state.pop("decode_head.classifier.bias")
    state["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match=r"missing \(1\): decode_head\.classifier\.bias") as err:
        load_state_dict_strict(model, state)
    assert "unexpected (1): decode_head.extra.weight" in str(err.value)
    ddp_state = {f"module.{k}": v for k, v in model.state_dict().items()}
    load_state_dict_strict(model, ddp_state)  # a uniform DDP prefix is fine
