"""Whole / slide / flip inference on models with known outputs."""

import numpy as np
import pytest
import torch
from torch import nn

from udaseg.errors import ConfigError
from udaseg.models import create_model
from udaseg.models.inference import (
    infer_logits,
    inference_settings,
    keep_ratio_size,
    predict,
    slide_windows,
)


def test_keep_ratio_size_mmcv_rule():
    assert keep_ratio_size(1024, 2048, (1024, 512)) == (512, 1024)  # Cityscapes, DAFormer
    assert keep_ratio_size(1052, 1914, (1280, 720)) == (704, 1280)  # GTA5, docs/methods.md D1.5
    assert keep_ratio_size(760, 1280, (1280, 760)) == (760, 1280)  # SYNTHIA unchanged
    assert keep_ratio_size(1080, 1920, (960, 540)) == (540, 960)  # ACDC
    assert keep_ratio_size(100, 200, None) == (100, 200)


def test_slide_windows_hand_computed():
    # HRDA: 1024×2048, window 1024, stride 512 → one row, windows at x = 0, 512, 1024 (docs/methods.md D6)
    assert slide_windows(1024, 2048, (1024, 1024), (512, 512)) == [
        (0, 1024, 0, 1024), (0, 1024, 512, 1536), (0, 1024, 1024, 2048)]
    # 64×96, window 32, stride 24: rows = (64−32+23)//24+1 = 3, cols = (96−32+23)//24+1 = 4;
    # the last row/column is clamped to end at the border (y 32..64, x 64..96)
    boxes = slide_windows(64, 96, (32, 32), (24, 24))
    assert len(boxes) == 12
    assert sorted({(y1, y2) for y1, y2, _, _ in boxes}) == [(0, 32), (24, 56), (32, 64)]
    assert sorted({(x1, x2) for _, _, x1, x2 in boxes}) == [(0, 32), (24, 56), (48, 80), (64, 96)]
    # an image smaller than the window: one window, the whole image
    assert slide_windows(20, 30, (32, 32), (24, 24)) == [(0, 20, 0, 30)]


class PositionModel(nn.Module):
    """Stride-2 logits that depend on the pixel value and on the position inside the window —
    so sliding differs from whole and overlap averaging is observable."""

    align_corners = False

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls = []

    def normalize(self, img, value_range=None):
        return img.float() / (value_range or 255.0)

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        b, _, h, w = x.shape
        ramp = torch.linspace(0, 1, w // 2).expand(b, 1, h // 2, w // 2)
        small = nn.functional.avg_pool2d(x[:, :1], 2)
        return torch.cat([small, ramp], dim=1)


def test_slide_inference_averages_overlapping_windows():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8)
    model = PositionModel()
    out = infer_logits(model, img, mode="slide", window=(16, 16), stride=(8, 8))
    assert model.calls == [(4, 3, 16, 16)]  # 2 windows × 2 images, one batched forward
    # by hand: windows at x 0..16 and 8..24; each window's logits upsampled to 16×16, summed,
    # divided by the count (1 | 2 | 1 across the three 8-pixel column bands)
    x = img.float() / 255
    canvas = torch.zeros(2, 2, 16, 24)
    count = torch.zeros(1, 1, 16, 24)
    for x1 in (0, 8):
        win = PositionModel()(x[:, :, :, x1:x1 + 16])
        canvas[:, :, :, x1:x1 + 16] += nn.functional.interpolate(win, size=(16, 16), mode="bilinear",
                                                                 align_corners=False)
        count[:, :, :, x1:x1 + 16] += 1
    torch.testing.assert_close(out, canvas / count)
    assert count[0, 0, 0].tolist() == [1] * 8 + [2] * 8 + [1] * 8


def test_slide_equals_whole_for_a_pointwise_model():
    model = create_model({"backbone": "tiny_cnn", "head": "segformer", "backbone_options": {"width": 8},
                          "head_options": {"embed_dim": 8}})
    pointwise = nn.Conv2d(3, 5, 1)

    class Pointwise(nn.Module):
        align_corners = False
        normalize = staticmethod(model.normalize)

        def __init__(self):
            super().__init__()
            self.conv = pointwise

        def forward(self, x):
            return self.conv(x)

    net = Pointwise()
    img = torch.randint(0, 256, (1, 3, 20, 28), dtype=torch.uint8)
    whole = infer_logits(net, img)
    slide = infer_logits(net, img, mode="slide", window=(12, 12), stride=(5, 7))
    torch.testing.assert_close(whole, slide)


def test_whole_with_test_scale_returns_label_resolution():
    model = PositionModel()
    img = torch.randint(0, 256, (1, 3, 32, 64), dtype=torch.uint8)
    out = infer_logits(model, img, test_scale=(32, 16))
    assert model.calls == [(1, 3, 16, 32)] and out.shape == (1, 2, 32, 64)
    out = infer_logits(model, img, out_size=(40, 80))
    assert out.shape == (1, 2, 40, 80)


def test_flip_averages_probabilities():
    model = PositionModel()
    img = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    x = img.float() / 255

    def up(logits):
        return nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)

    plain = up(PositionModel()(x))
    flipped_back = up(PositionModel()(x.flip(-1))).flip(-1)
    assert not torch.allclose(plain, flipped_back)  # the position ramp is not flip-invariant
    expected = (plain.softmax(1) + flipped_back.softmax(1)) / 2
    out = infer_logits(model, img, flip=True)
    torch.testing.assert_close(out.softmax(1), expected)
    torch.testing.assert_close(out.exp(), expected)  # returned as log-probabilities
    torch.testing.assert_close(infer_logits(model, img), plain)


def test_batched_equals_per_image_and_predict():
    model = create_model({"backbone": "tiny_cnn", "head": "segformer", "backbone_options": {"width": 8},
                          "head_options": {"embed_dim": 8}}).eval()
    img = torch.randint(0, 256, (3, 3, 32, 48), dtype=torch.uint8)
    batched = infer_logits(model, img, mode="slide", window=(32, 32), stride=(16, 16), flip=True)
    single = torch.cat([infer_logits(model, img[i:i + 1], mode="slide", window=(32, 32), stride=(16, 16), flip=True)
                        for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert predict(model, img).shape == (3, 32, 48)


def test_bad_arguments():
    model = PositionModel()
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="window"):
        infer_logits(model, img, mode="slide")
    with pytest.raises(ValueError, match="mode"):
        infer_logits(model, img, mode="tta")


def test_two_scale_max_fusion():
    """scales=(1, 0.5): the element-wise max of the full-size and the half-size logits (DiGA §9)."""
    from udaseg.models.inference import describe

    model = PositionModel()
    img = torch.randint(0, 256, (1, 3, 16, 32), dtype=torch.uint8)
    x = img.float() / 255

    def up(logits):
        return nn.functional.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=False)

    full = up(PositionModel()(x))
    half = up(PositionModel()(nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)))
    assert not torch.allclose(full, half)
    fused = infer_logits(model, img, scales=(1.0, 0.5))
    torch.testing.assert_close(fused, torch.maximum(full, half))
    assert model.calls[-2:] == [(1, 3, 16, 32), (1, 3, 8, 16)]
    assert describe("whole", scales=(1.0, 0.5))["scales"] == [1.0, 0.5] and "scales" not in describe("whole")
    with pytest.raises(ValueError, match="whole-image"):
        infer_logits(model, img, mode="slide", window=(8, 8), stride=(4, 4), scales=(1.0, 0.5))


def test_upsample_probabilities_softmaxes_at_the_output_size():
    """BAFFT's generator (docs/methods.md A.9): softmax at the network's stride, then upsample the probabilities."""
    img = torch.randint(0, 256, (1, 3, 16, 32), dtype=torch.uint8)
    native = PositionModel()(img.float() / 255)  # [1, 2, 8, 16]
    expected = nn.functional.interpolate(native.softmax(1), size=(16, 32), mode="bilinear", align_corners=False)
    scores = infer_logits(PositionModel(), img, upsample="probabilities")
    torch.testing.assert_close(scores.softmax(1), expected)
    torch.testing.assert_close(scores.exp(), expected)  # the log of probabilities that sum to 1
    logits_first = infer_logits(PositionModel(), img).softmax(1)
    assert not torch.allclose(logits_first, expected)  # the order matters (at the boundaries of the stride)
    with pytest.raises(ValueError, match="upsample"):
        infer_logits(PositionModel(), img, upsample="nearest")
    with pytest.raises(ValueError, match="logits"):
        infer_logits(PositionModel(), img, scales=(1.0, 0.5), upsample="probabilities")


def test_bicubic_test_scale_resize_is_pils_antialiased_bicubic():
    """The DeepLab-v2 line's loaders resize with PIL BICUBIC; interpolation="bicubic" matches it."""
    from PIL import Image

    from udaseg.models.inference import resize_image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(img).resize((16, 8), Image.BICUBIC)).astype(np.float32)
    ours = resize_image(torch.from_numpy(img).permute(2, 0, 1)[None], (8, 16), "bicubic")[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - pil).max() <= 1.0  # rounding of the last unit only
    bilinear = resize_image(torch.from_numpy(img).permute(2, 0, 1)[None], (8, 16))[0].permute(1, 2, 0).numpy()
    assert np.abs(bilinear - pil).max() > 5  # the mmcv-style resize is another image
    model = PositionModel()
    big = torch.from_numpy(img).permute(2, 0, 1)[None]
    a = infer_logits(model, big, test_scale=(16, 8), interpolation="bicubic")
    b = infer_logits(model, big, test_scale=(16, 8))
    assert a.shape == b.shape == (1, 2, 16, 32) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="interpolation"):
        infer_logits(model, big, test_scale=(16, 8), interpolation="area")


def test_inference_settings_read_the_spec_and_let_given_flags_override():
    assert inference_settings(None) == {"mode": "whole", "test_scale": None, "window": None, "stride": None,
                                        "flip": False, "scales": None, "interpolation": "bilinear"}
    spec = {"mode": "slide", "test_scale": [1024, 512], "window": [64, 64], "stride": [32, 32], "flip": True,
            "scales": None, "interpolation": "bicubic"}
    got = inference_settings(spec, mode=None, window=(48, 48), flip=False, scales=None)
    assert got == {"mode": "slide", "test_scale": (1024, 512), "window": (48, 48), "stride": (32, 32),
                   "flip": True, "scales": None, "interpolation": "bicubic"}  # --flip absent keeps the spec's
    two = {"mode": "whole", "scales": [1, 0.5]}
    assert inference_settings(two)["scales"] == (1.0, 0.5)
    assert inference_settings(two, scales=[1.0])["scales"] is None  # --scales 1: plain inference
    assert inference_settings(two, mode="slide", window=(8, 8), stride=(4, 4), scales=[1])["mode"] == "slide"
    with pytest.raises(ConfigError, match=r"scales \[1.0, 0.5\] fuse whole-image inference only"):
        inference_settings(two, mode="slide")
    with pytest.raises(TypeError, match="unknown setting 'windows'"):
        inference_settings(two, windows=(8, 8))
