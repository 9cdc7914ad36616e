"""create_model, the segmentor's three steps, and input normalisation conventions."""

import logging

import pytest
import torch
from omegaconf import OmegaConf

from udaseg.errors import ConfigError
from udaseg.models import EncoderDecoder, create_model

TINY = {"backbone": "tiny_cnn", "head": "segformer", "backbone_options": {"width": 8},
        "head_options": {"embed_dim": 16}}


@pytest.mark.parametrize("backbone,head,head_options", [
    ("tiny_cnn", "segformer", {"embed_dim": 16}),
    ("tiny_cnn", "daformer", {"embed_dim": 16}),
    ("mit_b0", "daformer", {"embed_dim": 32}),
    ("mit_b0", "segformer", {"embed_dim": 32}),
    ("resnet50_deeplabv2", "deeplabv2_aspp", {}),
    ("resnet50_deeplabv2", "proda_aspp", {"channels": 32, "groups": 8}),
])
def test_create_model_forward_backward(backbone, head, head_options):
    torch.manual_seed(0)
    model = create_model({"backbone": backbone, "head": head, "head_options": head_options}, num_classes=7)
    assert isinstance(model, EncoderDecoder) and model.num_classes == 7
    img = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    x = model.normalize(img)
    logits = model(x)
    assert logits.shape[:2] == (2, 7)
    assert logits.shape[-1] in (64 // model.output_stride, 64 // model.output_stride + 1)
    logits.mean().backward()
    model.eval()
    torch.testing.assert_close(model.decode(model.extract_features(x)), model(x))


def test_config_mapping_omegaconf_and_errors():
    model = create_model(OmegaConf.create({**TINY, "name": "tiny", "num_classes": 5, "pretrained": None}))
    assert model.num_classes == 5
    with pytest.raises(ConfigError, match="'bakbone'"):
        create_model({**TINY, "bakbone": "x"})
    with pytest.raises(ConfigError, match="unknown backbone 'resnet_9000'"):
        create_model({**TINY, "backbone": "resnet_9000"})
    with pytest.raises(ConfigError, match="unknown head"):
        create_model({**TINY, "head": "fpn"})
    with pytest.raises(ConfigError, match="head_options for segformer"):
        create_model({**TINY, "head_options": {"embed_dims": 3}})


def test_random_init_notice(caplog):
    with caplog.at_level(logging.INFO, logger="udaseg.models.factory"):
        create_model(TINY)
    notices = [r for r in caplog.records if "random" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()


def test_family_defaults():
    mit = create_model({"backbone": "mit_b0", "head": "daformer", "head_options": {"embed_dim": 16}})
    assert mit.preprocess.spec.bgr is False and mit.align_corners is False
    dl = create_model({"backbone": "resnet50_deeplabv2", "head": "deeplabv2_aspp"})
    assert dl.preprocess.spec.bgr is True and dl.align_corners is True
    custom = create_model({**TINY, "normalization": "caffe_bgr", "align_corners": True})
    assert custom.preprocess.spec.bgr and custom.align_corners


def test_imagenet_normalization_by_hand():
    model = create_model(TINY)
    img = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    img[0, 0] = 255  # pure red
    x = model.normalize(img).flatten()
    expected = torch.tensor([(255 - 123.675) / 58.395, -116.28 / 57.12, -103.53 / 57.375])
    torch.testing.assert_close(x, expected)


def test_caffe_bgr_normalization_by_hand():
    model = create_model({**TINY, "normalization": "caffe_bgr"})
    img = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    img[0, 0] = 255  # pure red → BGR (0, 0, 255), minus the BGR mean, no std
    x = model.normalize(img).flatten()
    torch.testing.assert_close(x, torch.tensor([-104.008, -116.669, 255 - 122.679]))


@pytest.mark.parametrize("normalization", ["imagenet", "caffe_bgr"])
def test_normalization_round_trip_and_input_ranges(normalization):
    model = create_model({**TINY, "normalization": normalization})
    img = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    x = model.normalize(img)
    torch.testing.assert_close(model.denormalize(x), img.float() / 255)
    torch.testing.assert_close(model.normalize(img.float() / 255), x)  # float means [0, 1]
    torch.testing.assert_close(model.normalize(img.float(), value_range=255.0), x)


def test_normalization_buffers_follow_the_model_but_stay_out_of_state_dict():
    model = create_model(TINY).double()
    assert not any(k.startswith("preprocess") for k in model.state_dict())
    assert model.normalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8)).dtype == torch.float64
