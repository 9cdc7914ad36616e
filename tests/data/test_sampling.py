"""Rare Class Sampling (probabilities, candidates, the re-crop rule) and the stateless streams."""

from __future__ import annotations

import math

import data_fixtures as F
import numpy as np
import pytest
import torch

from udaseg.data.prepare import prepare
from udaseg.data.registry import create_dataset
from udaseg.data.sampling import RCS_RECROPS, RareClassSampling, TrainStream, rcs_class_probabilities
from udaseg.data.transforms import TrainPipeline
from udaseg.errors import DataError

STATS = [
    {"0": 500, "5": 100, "11": 40, "file": "a.png"},
    {"0": 100, "5": 200, "11": 60, "file": "b.png"},
]


def test_rcs_probabilities_by_hand():
    classes, p = rcs_class_probabilities({0: 600, 5: 300, 11: 100}, 0.01)
    assert classes.tolist() == [11, 5, 0]        # ascending by pixel count, as DAFormer sorts them
    # f = 0.1, 0.3, 0.6 -> logits (1 - f) / 0.01 = 90, 70, 40
    z = math.exp(90) + math.exp(70) + math.exp(40)
    expected = [math.exp(90) / z, math.exp(70) / z, math.exp(40) / z]
    assert np.allclose(p, expected, rtol=0, atol=1e-12)
    assert abs(p.sum() - 1) < 1e-12
    classes, p = rcs_class_probabilities({1: 1, 2: 1}, 0.5)
    assert np.allclose(p, [0.5, 0.5], atol=1e-12)
    # a warm temperature, where every term matters: f = 0.25, 0.75 -> logits 0.75, 0.25
    classes, p = rcs_class_probabilities({3: 1, 4: 3}, 1.0)
    assert np.allclose(p, [math.exp(0.75) / (math.exp(0.75) + math.exp(0.25)),
                           math.exp(0.25) / (math.exp(0.75) + math.exp(0.25))], atol=1e-12)


def test_rcs_totals_and_candidates_at_the_min_pixels_boundary():
    with_class = {"0": [["a.png", 500], ["b.png", 100]], "5": [["a.png", 100], ["b.png", 200]],
                  "11": [["a.png", 40], ["b.png", 60]]}
    index = {"a.png": [0], "b.png": [1]}
    rcs = RareClassSampling(STATS, with_class, index, min_pixels=40, class_temp=0.01)
    assert rcs.class_pixels == {0: 600, 5: 300, 11: 100}
    assert rcs.candidates[11].tolist() == [1]     # 40 is not > 40; 60 is
    assert rcs.candidates[0].tolist() == [0, 1] and rcs.candidates[5].tolist() == [0, 1]
    with pytest.raises(DataError, match="class 11"):
        RareClassSampling(STATS, with_class, index, min_pixels=60)   # 60 is not > 60


def test_rcs_choice_follows_the_probabilities():
    with_class = {"0": [["a.png", 500]], "5": [["a.png", 100], ["b.png", 200]], "11": [["b.png", 60]]}
    rcs = RareClassSampling(STATS, with_class, {"a.png": [0], "b.png": [1]}, min_pixels=0, class_temp=0.5)
    rng = np.random.default_rng(0)
    draws = [rcs.choose(rng) for _ in range(20000)]
    freq = {c: sum(1 for d, _ in draws if d == c) / len(draws) for c in (0, 5, 11)}
    expected = dict(zip(rcs.classes.tolist(), rcs.probabilities.tolist()))
    for c in freq:
        assert abs(freq[c] - expected[c]) < 0.015
    assert all(i == 0 for c, i in draws if c == 0) and all(i == 1 for c, i in draws if c == 11)


def test_rcs_rejects_statistics_of_another_dataset_or_space():
    with pytest.raises(DataError, match="belongs to the dataset"):
        RareClassSampling(STATS, {"0": [["zzz.png", 500]]}, {"a.png": [0]}, min_pixels=0)
    with pytest.raises(DataError, match="label space"):
        RareClassSampling(STATS, {}, {}, class_names=("a", "b", "c"))


class OneImage:
    """A dataset of one 20x20 image whose label holds class 3 in a 4x4 corner only."""

    def __init__(self):
        self.label = np.zeros((20, 20), np.uint8)
        self.label[:4, :4] = 3
        self.loads = 0

    def __len__(self):
        return 1

    def load(self, index):
        self.loads += 1
        img = np.repeat(self.label[..., None] * 50, 3, axis=-1)
        return {"img": img, "label": self.label.copy(), "name": "one", "meta": {"index": index}}


class CountingPipeline(TrainPipeline):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.resizes = 0
        self.crops = []

    def resize(self, sample, rng):
        self.resizes += 1
        return super().resize(sample, rng)

    def augment(self, sample, rng):
        out = super().augment(sample, rng)
        self.crops.append(out["label"].copy())
        return out


def _one_image_rcs(min_pixels, min_crop_ratio=0.5):
    stats = [{"0": 384, "3": 16, "file": "one.png"}]
    return RareClassSampling(stats, {"0": [["one.png", 384]], "3": [["one.png", 16]]}, {"one.png": [0]},
                             min_pixels=min_pixels, min_crop_ratio=min_crop_ratio, class_temp=100.0)


def test_rcs_recrops_the_same_image_ten_times_then_keeps_the_last_crop():
    # 16 > min_pixels=15 makes the image a candidate; a crop needs > 15*1.1 = 16.5 pixels of class 3,
    # but a 6x6 crop holds at most the 16 of the corner: every crop fails
    dataset, pipeline = OneImage(), CountingPipeline(crop_size=(6, 6), flip_prob=0.0)
    stream = TrainStream(dataset, pipeline, seed=0, rcs=_one_image_rcs(min_pixels=15, min_crop_ratio=1.1))
    for draw in range(30):
        dataset.loads, pipeline.resizes, pipeline.crops = 0, 0, []
        item = stream[draw]
        if item["meta"]["rcs_class"] != 3:
            continue
        assert item["meta"]["recrops"] == RCS_RECROPS
        assert dataset.loads == 1 and pipeline.resizes == 1      # same image, loaded and resized once
        assert len(pipeline.crops) == RCS_RECROPS + 1
        assert np.array_equal(item["label"].numpy(), pipeline.crops[-1])   # the last crop is kept
        break
    else:
        pytest.fail("class 3 was never drawn")


def test_rcs_stops_recropping_when_the_crop_holds_enough_pixels():
    dataset, pipeline = OneImage(), CountingPipeline(crop_size=(6, 6), flip_prob=0.0)
    stream = TrainStream(dataset, pipeline, seed=1, rcs=_one_image_rcs(min_pixels=4, min_crop_ratio=0.5))
    seen = 0
    for draw in range(40):
        pipeline.crops = []
        item = stream[draw]
        if item["meta"]["rcs_class"] != 3:
            continue
        seen += 1
        counts = [int((crop == 3).sum()) for crop in pipeline.crops]
        assert item["meta"]["recrops"] == len(counts) - 1
        assert all(c <= 2 for c in counts[:-1])          # every rejected crop had <= 4*0.5 pixels
        if item["meta"]["recrops"] < RCS_RECROPS:
            assert counts[-1] > 2
    assert seen


def test_stream_is_a_pure_function_of_seed_and_draw(tmp_path):
    root = F.make_gta5(tmp_path / "gta", n=5, size=(16, 24))
    ds = create_dataset("gta5", root)
    pipeline = TrainPipeline(img_scale=(24, 16), crop_size=(8, 8), cat_max_ratio=0.75)
    a, b = TrainStream(ds, pipeline, seed=3), TrainStream(ds, pipeline, seed=3)
    for draw in (7, 0, 123):
        x, y = a[draw], b[draw]
        assert x["index"] == y["index"] and torch.equal(x["img"], y["img"]) and torch.equal(x["label"], y["label"])
    other = TrainStream(ds, pipeline, seed=4)
    assert [a[d]["index"] for d in range(5)] != [other[d]["index"] for d in range(5)]
    # each epoch of n draws visits every image once, in a different order
    epochs = [[a.index_for_draw(e * 5 + k) for k in range(5)] for e in range(3)]
    assert all(sorted(ep) == list(range(5)) for ep in epochs) and len({tuple(ep) for ep in epochs}) > 1
    assert a[2]["draw"] == 2 and a[2]["img"].dtype == torch.uint8 and a[2]["label"].dtype == torch.int64


def test_stream_with_rcs_from_prepared_statistics(tmp_path):
    root = F.make_gta5(tmp_path / "gta", n=6, size=(16, 24))
    prepare("gta5", root, progress=False, workers=1)
    ds = create_dataset("gta5", root)
    rcs = RareClassSampling.from_dataset(ds, min_pixels=10, min_crop_ratio=0.5)
    assert set(rcs.classes.tolist()) <= set(range(19))
    stream = TrainStream(ds, TrainPipeline(crop_size=(8, 8)), seed=0, rcs=rcs)
    item = stream[5]
    c = item["meta"]["rcs_class"]
    assert item["index"] in rcs.candidates[c].tolist()
    batch = torch.utils.data.default_collate([stream[0], stream[1]])
    assert batch["img"].shape == (2, 3, 8, 8)
    with pytest.raises(DataError, match="label space"):
        RareClassSampling.from_dataset(create_dataset("gta5", root, label_space="synthia16"))


def test_rcs_without_statistics_says_how_to_make_them(tmp_path):
    ds = create_dataset("gta5", F.make_gta5(tmp_path / "gta"))
    with pytest.raises(DataError, match="udaseg data prepare gta5"):
        RareClassSampling.from_dataset(ds)


def test_stream_in_a_dataloader_with_workers_matches_in_process(tmp_path):
    ds = create_dataset("gta5", F.make_gta5(tmp_path / "gta", n=4, size=(16, 24)))
    stream = TrainStream(ds, TrainPipeline(crop_size=(8, 8)), seed=9)
    loader = torch.utils.data.DataLoader(stream, batch_size=2, sampler=[10, 11, 12, 13], num_workers=2)
    batches = list(loader)
    assert [int(i) for b in batches for i in b["index"]] == [stream[d]["index"] for d in (10, 11, 12, 13)]
    assert torch.equal(batches[1]["img"][1], stream[13]["img"])


class _Part:
    def __init__(self, name, n, space="cityscapes19"):
        from udaseg.data.catalog import get_label_space

        self.name, self.n, self.label_space = name, n, get_label_space(space)

    def __len__(self):
        return self.n

    def load(self, i):
        assert 0 <= i < self.n
        return (self.name, i)


def test_union_of_datasets_concat_and_balanced():
    from udaseg.data.sampling import UnionDataset

    fog, rain = _Part("fog", 5), _Part("rain", 2)
    concat = UnionDataset([fog, rain], "concat")
    assert len(concat) == 7
    assert [concat.load(i) for i in (0, 4, 5, 6)] == [("fog", 0), ("fog", 4), ("rain", 0), ("rain", 1)]
    balanced = UnionDataset([fog, rain], "balanced")
    assert len(balanced) == 10  # 2 parts × the largest (5)
    drawn = [balanced.load(i) for i in range(10)]
    assert drawn[:4] == [("fog", 0), ("rain", 0), ("fog", 1), ("rain", 1)] and drawn[5] == ("rain", 0)
    assert sum(1 for d in drawn if d[0] == "rain") == 5  # each part half of the epoch
    with pytest.raises(ValueError, match="mix"):
        UnionDataset([fog], "weighted")
    with pytest.raises(DataError, match="label spaces"):
        UnionDataset([fog, _Part("syn", 2, "synthia16")])
