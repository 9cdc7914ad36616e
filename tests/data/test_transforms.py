"""Paired geometry: mmseg resize sizes, the cat_max_ratio crop rule, flip/pad, joint application."""

from __future__ import annotations

import numpy as np
import pytest

from udaseg.data.transforms import (
    CROP_CHECKS,
    DIGA_CROP_TRIES,
    TrainPipeline,
    choose_crop,
    crop_accepted,
    diga_crop_accepted,
    fit_size,
    hflip_sample,
    pad_sample,
    pad_to_aspect,
    rescale_size,
    resize_sample,
)


@pytest.mark.parametrize("hw, img_scale, expected", [
    ((1052, 1914), (1280, 720), (704, 1280)),    # GTA5: 1052*0.66876 = 703.5 -> int(x + 0.5) = 704
    ((760, 1280), (1280, 760), (760, 1280)),     # SYNTHIA: unchanged
    ((1024, 2048), (1024, 512), (512, 1024)),    # Cityscapes
    ((1080, 1920), (960, 540), (540, 960)),      # ACDC / Dark Zurich
    ((1080, 1920), (540, 960), (540, 960)),      # (long, short) order does not matter
    ((2048, 1024), (1024, 512), (1024, 512)),    # portrait: long edge is the height
])
def test_rescale_size_mmseg(hw, img_scale, expected):
    assert rescale_size(*hw, img_scale) == expected


def test_fit_size_for_mapillary():
    # 1500x1000 (WxH) into 1024x768: scale = min(768/1000, 1024/1500) = 0.68267 -> 683x1024
    assert fit_size(1000, 1500, (768, 1024)) == (683, 1024)
    assert fit_size(600, 600, (768, 1024)) == (768, 768)


def _sample(h=20, w=30, seed=0):
    """A sample whose image encodes its label (R = 10*label) and whose depth equals the label,
    so that any misalignment between the three arrays shows."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 5, (-(-h // 8), -(-w // 8))).astype(np.uint8)
    label = np.kron(blocks, np.ones((8, 8), np.uint8))[:h, :w]  # 8x8 blocks: interpolation stays local
    img = np.stack([label * 10, label * 10 + 1, np.full_like(label, 7)], axis=-1).astype(np.uint8)
    return {"img": img, "label": label, "depth": label.astype(np.float32), "name": "x", "meta": {}}


def test_resize_uses_nearest_for_label_and_depth():
    s = resize_sample(_sample(), (40, 60))
    assert s["img"].shape == (40, 60, 3) and s["label"].shape == (40, 60) and s["depth"].shape == (40, 60)
    assert set(np.unique(s["label"])) <= set(range(5))
    assert np.array_equal(s["depth"], s["label"].astype(np.float32))
    assert s["name"] == "x"


def test_crop_accepted_rule():
    two = np.zeros((10, 10), np.uint8)
    two[:8] = 1                                  # 80 / 20
    assert not crop_accepted(two, 0.75)
    two[:7] = 1
    two[7:] = 2                                  # 70 / 30
    assert crop_accepted(two, 0.75)
    assert not crop_accepted(np.ones((10, 10), np.uint8), 0.75)       # a single class
    with_ignore = np.full((10, 10), 255, np.uint8)
    with_ignore[0, :6] = 3
    with_ignore[1, :4] = 4                       # 6 / 4 of the non-ignore pixels: 0.6 < 0.75
    assert crop_accepted(with_ignore, 0.75)
    only_ignore_and_one = np.full((10, 10), 255, np.uint8)
    only_ignore_and_one[0] = 3
    assert not crop_accepted(only_ignore_and_one, 0.75)


class CountingRng:
    """A Generator wrapper that records every crop offset drawn."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.draws = []

    def integers(self, low, high):
        value = self.rng.integers(low, high)
        self.draws.append(int(value))
        return value

    def random(self):
        return self.rng.random()


def test_choose_crop_keeps_the_draw_after_ten_failed_checks():
    label = np.ones((40, 40), np.uint8)          # no crop can ever pass
    rng = CountingRng(0)
    box = choose_crop(label, 40, 40, (10, 10), rng, cat_max_ratio=0.75)
    assert len(rng.draws) == 2 * (CROP_CHECKS + 1)   # first draw + one per failed check
    assert box[:2] == tuple(rng.draws[-2:])          # the last box drawn is kept


def test_choose_crop_accepts_the_first_good_box():
    label = np.zeros((40, 40), np.uint8)
    label[:, 20:] = 1                            # only boxes straddling column 20 hold two classes
    rng = CountingRng(3)
    y0, x0, y1, x1 = choose_crop(label, 40, 40, (10, 10), rng, cat_max_ratio=0.75)
    assert crop_accepted(label[y0:y1, x0:x1], 0.75)
    # every earlier draw failed the test
    boxes = list(zip(rng.draws[::2], rng.draws[1::2]))
    assert boxes[-1] == (y0, x0)
    for by, bx in boxes[:-1]:
        assert not crop_accepted(label[by:by + 10, bx:bx + 10], 0.75)


def test_diga_crop_rule_by_hand():
    """DiGA (docs/methods.md G3.3): ≥ 2 non-ignore classes each over 2 % of the crop's pixels (ignored included)."""
    label = np.full((10, 10), 255, np.uint8)
    label[0, :3] = 0                     # 3 % road
    label[1, :3] = 1                     # 3 % sidewalk
    assert diga_crop_accepted(label)
    label[1, 2] = 255                    # sidewalk 2 %: not *more* than 2 %
    assert not diga_crop_accepted(label)
    assert not diga_crop_accepted(np.zeros((10, 10), np.uint8))  # one class
    three = np.zeros((10, 10), np.uint8)
    three[:, 5:] = 255
    three[0, :3] = 2                     # road 47 %, building 3 %, ignore 50 %: two non-ignore classes pass
    assert diga_crop_accepted(three)


def test_diga_crop_rule_draws_five_times_at_most():
    rng = CountingRng(0)
    choose_crop(np.ones((40, 40), np.uint8), 40, 40, (10, 10), rng, rule="diga")
    assert len(rng.draws) == 2 * DIGA_CROP_TRIES  # never passes: five draws, the last kept
    label = np.zeros((40, 40), np.uint8)
    label[:, 20:] = 1
    rng = CountingRng(3)
    y0, x0, y1, x1 = choose_crop(label, 40, 40, (10, 10), rng, rule="diga")
    assert len(rng.draws) <= 2 * DIGA_CROP_TRIES
    if len(rng.draws) < 2 * DIGA_CROP_TRIES:
        assert diga_crop_accepted(label[y0:y1, x0:x1])


def test_diga_size_jitter_scales_height_and_width_independently():
    sample = {"img": np.zeros((100, 200, 3), np.uint8), "label": np.zeros((100, 200), np.uint8)}
    pipe = TrainPipeline(size_jitter=(0.7, 1.0), crop_size=(50, 80), flip_prob=0.0)
    sizes = {pipe.resize(sample, np.random.default_rng(seed))["img"].shape[:2] for seed in range(40)}
    assert all(70 <= h <= 100 and 140 <= w <= 200 for h, w in sizes)
    assert len({round(w / h, 2) for h, w in sizes}) > 5  # the aspect ratio changes
    # an image that falls short of the crop is resized to the crop (spec: "simply resized to 512×896")
    small = {"img": np.zeros((55, 300, 3), np.uint8), "label": np.zeros((55, 300), np.uint8)}
    shapes = [pipe.resize(small, np.random.default_rng(seed))["img"].shape[:2] for seed in range(20)]
    assert (50, 80) in shapes and all(h >= 50 and w >= 80 for h, w in shapes)
    assert pipe(sample, np.random.default_rng(0))["img"].shape[:2] == (50, 80)
    with pytest.raises(ValueError, match="crop_size"):
        TrainPipeline(size_jitter=(0.7, 1.0))
    with pytest.raises(ValueError, match="crop_rule"):
        TrainPipeline(crop_rule="dacs")


def test_choose_crop_without_ratio_draws_once():
    rng = CountingRng(0)
    choose_crop(np.ones((40, 40), np.uint8), 40, 40, (10, 10), rng, cat_max_ratio=1.0)
    assert len(rng.draws) == 2


def test_flip_and_pad():
    s = _sample(4, 6)
    f = hflip_sample(s)
    assert np.array_equal(f["label"], s["label"][:, ::-1]) and np.array_equal(f["img"], s["img"][:, ::-1])
    p = pad_sample(s, (6, 9))
    assert p["img"].shape == (6, 9, 3) and p["label"].shape == (6, 9)
    assert (p["label"][4:] == 255).all() and (p["label"][:, 6:] == 255).all()
    assert (p["img"][4:] == 0).all() and (p["depth"][:, 6:] == 0).all()
    assert np.array_equal(p["label"][:4, :6], s["label"])


def test_pad_to_aspect():
    assert pad_to_aspect(np.zeros((100, 100), np.uint8), 2.0).shape == (100, 200)
    assert pad_to_aspect(np.zeros((100, 300), np.uint8), 2.0).shape == (150, 300)


@pytest.mark.parametrize("kwargs", [
    dict(img_scale=(60, 40), crop_size=(16, 16), cat_max_ratio=0.75),
    dict(img_scale=(60, 40), ratio_range=(0.5, 2.0), crop_size=(16, 16)),
    dict(fit_size=(24, 48)),
    dict(resize_to=(10, 12), interpolation="bicubic", crop_size=(16, 16)),  # crop larger than image: padded
])
def test_pipeline_keeps_image_label_and_depth_aligned(kwargs):
    pipeline = TrainPipeline(**kwargs)
    for seed in range(5):
        out = pipeline(_sample(), np.random.default_rng(seed))
        label, img, depth = out["label"], out["img"], out["depth"]
        expected = kwargs.get("crop_size") or kwargs.get("fit_size")
        if expected:
            assert label.shape == tuple(expected) and img.shape == (*expected, 3)
        valid = label != 255
        # the image is interpolated, the label sampled: they agree away from block borders
        agree = np.abs(img[..., 0][valid].astype(int) - 10 * label[valid].astype(int)) <= 5
        assert agree.mean() > 0.7   # (>= 0.75 aligned; typically 0.1-0.5 when the label is flipped alone)
        assert np.array_equal(depth[valid], label[valid].astype(np.float32))
        assert (img[~valid] == 0).all() and (depth[~valid] == 0).all()
        assert img.flags.c_contiguous and label.flags.c_contiguous


def test_pipeline_is_a_function_of_the_generator():
    pipeline = TrainPipeline(img_scale=(60, 40), crop_size=(16, 16), cat_max_ratio=0.75)
    a = pipeline(_sample(), np.random.default_rng(7))
    b = pipeline(_sample(), np.random.default_rng(7))
    assert all(np.array_equal(a[k], b[k]) for k in ("img", "label", "depth"))


def test_pipeline_rejects_two_resize_modes():
    with pytest.raises(ValueError, match="one resize mode"):
        TrainPipeline(img_scale=(10, 10), fit_size=(10, 10))


def test_pseudo_margins_follow_resize_crop_flip_and_pad():
    from udaseg.data.transforms import TrainPipeline, pseudo_margin_mask

    mask = pseudo_margin_mask(6, 8, (1, 2, 1, 3))
    assert mask.tolist()[0] == [0] * 8 and mask.tolist()[1] == [0, 1, 1, 1, 1, 0, 0, 0]
    assert mask[4:].sum() == 0
    img = np.zeros((40, 80, 3), np.uint8)
    label = np.zeros((40, 80), np.uint8)
    pipe = TrainPipeline(img_scale=(40, 20), crop_size=(16, 16), flip_prob=0.0, pseudo_margins=(4, 8, 0, 0))
    out = pipe({"img": img, "label": label}, np.random.default_rng(0))
    # Resized by 0.5 (40×80 → 20×40): the margins become 2 rows on top and 4 at the bottom, and the
    # 16-row crop of 20 rows sees part of them depending on its offset.
    assert out["valid_pseudo"].shape == (16, 16) and out["valid_pseudo"].dtype == np.uint8
    full = TrainPipeline(img_scale=(40, 20), flip_prob=0.0, pseudo_margins=(4, 8, 0, 0))(
        {"img": img, "label": label}, np.random.default_rng(0))["valid_pseudo"]
    assert full[:, 0].tolist() == [0, 0] + [1] * 14 + [0, 0, 0, 0]
    padded = TrainPipeline(crop_size=(48, 80), flip_prob=0.0, pseudo_margins=(0, 0, 0, 0))(
        {"img": img, "label": label}, np.random.default_rng(0))["valid_pseudo"]
    assert padded[40:].sum() == 0 and padded[:40].all()  # padding is not valid
