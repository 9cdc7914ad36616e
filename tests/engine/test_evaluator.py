"""evaluate() over a dataset (single process and DDP), the inference sampler, saved predictions."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from udaseg import dist
from udaseg.data.catalog import TRAIN_ID_TO_LABEL_ID
from udaseg.engine.evaluator import evaluate, evaluate_predictions, index_predictions
from udaseg.engine.export import export_prediction
from udaseg.errors import DataError


def _reference_iou(dataset, shift: int, num_classes: int = 19) -> np.ndarray:
    """Per-class IoU straight from the definition, with boolean masks over all pixels."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for i in range(len(dataset)):
        item = dataset[i]
        label = item["label"].numpy()
        pred = (item["img"][0].long().numpy() + shift) % num_classes
        valid = label != 255
        for c in range(num_classes):
            inter[c] += np.sum((pred == c) & (label == c) & valid)
            union[c] += np.sum(((pred == c) | (label == c)) & valid)
    with np.errstate(invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def test_perfect_predictions(fake_dataset, fakes):
    result = evaluate(fakes.LookupModel(), fake_dataset, progress=False)
    iou = result.iou
    assert np.all(iou[~np.isnan(iou)] == 1.0)
    assert result.num_images == 5 and result.means["mIoU19"] == 1.0 and result.pixel_accuracy == 1.0


@pytest.mark.parametrize("shift", [1, 7])
def test_evaluate_matches_the_definition(shift, fakes):
    dataset = fakes.FakeSegDataset(n=4, sizes=[(24, 40), (24, 40), (30, 20), (24, 40)])  # mixed sizes, batched runs
    result = evaluate(fakes.LookupModel(shift=shift), dataset, batch_size=3, progress=False)
    np.testing.assert_allclose(result.iou, _reference_iou(dataset, shift), equal_nan=True)
    out = result.to_json()
    assert set(out) >= {"per_class_iou", "mIoU19", "mIoU16", "mIoU13", "dataset", "split", "mode", "flip",
                        "network", "num_images"}
    assert out["dataset"] == "fake" and out["split"] == "val" and out["mode"] == "whole"


def test_protocol_recorded_and_model_mode_restored(fakes):
    model = fakes.LookupModel().train()
    result = evaluate(model, fakes.FakeSegDataset(n=2), mode="slide", window=(16, 16), stride=(8, 8), flip=True,
                      network="teacher", progress=False)
    out = result.to_json()
    assert (out["mode"], out["window"], out["stride"], out["flip"], out["network"]) == (
        "slide", [16, 16], [8, 8], True, "teacher")
    assert result.means["mIoU19"] == 1.0  # a pointwise model is unaffected by sliding and flipping
    assert model.training


def test_seven_class_space_reports_miou7(fakes):
    dataset = fakes.FakeSegDataset(n=2, label_space="seven")
    out = evaluate(fakes.LookupModel(num_classes=7), dataset, progress=False).to_json()
    assert out["mIoU7"] == 1.0 and "mIoU19" not in out and len(out["per_class_iou"]) == 7


def test_class_count_mismatch_is_an_error(fake_dataset, fakes):
    with pytest.raises(ValueError, match="16 classes"):
        evaluate(fakes.LookupModel(num_classes=16), fake_dataset, progress=False)


@pytest.mark.parametrize("n,world", [(0, 1), (1, 4), (5, 2), (7, 3), (500, 8), (10, 10), (3, 8)])
def test_inference_sampler_scores_each_index_once(n, world):
    shards = [list(dist.InferenceSampler(n, r, world)) for r in range(world)]
    flat = [i for shard in shards for i in shard]
    assert flat == list(range(n))  # contiguous, in order, no padding, no duplicate
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("n", [5, 1])
def test_ddp_every_image_scored_exactly_once(tmp_path, n, fakes):
    """Two gloo ranks under torchrun: each image is read by one rank only, the summed matrix
    equals the single-process one and the image count equals len(dataset) (1 image: rank 1
    gets an empty shard and must still join the all-reduce)."""
    world = 2
    worker = Path(__file__).with_name("ddp_eval_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                           str(worker), str(tmp_path), str(n)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = evaluate(fakes.LookupModel(shift=3), fakes.FakeSegDataset(n=n), progress=False)
    seen = []
    for r in range(world):
        np.testing.assert_array_equal(np.load(tmp_path / f"conf{r}.npy"), single.confusion)
        count, size, *indices = (tmp_path / f"rank{r}.txt").read_text().split()
        assert (int(count), int(size)) == (n, world)
        seen += [int(i) for i in indices]
    assert sorted(seen) == list(range(n))


# --- saved predictions ---------------------------------------------------------------------------
def _export_all(dataset, out_dir, shift, fmt):
    for i in range(len(dataset)):
        item = dataset[i]
        pred = (item["img"][0].long() + shift) % 19
        export_prediction(pred, out_dir / ("a" if i % 2 else "b"), item["name"], fmt, dataset.label_space)


@pytest.mark.parametrize("fmt", ["labelid", "trainid"])
def test_exported_predictions_score_like_the_model(tmp_path, fmt, fakes):
    dataset = fakes.FakeSegDataset(n=3)
    _export_all(dataset, tmp_path, shift=2, fmt=fmt)
    scored = evaluate_predictions(tmp_path, dataset, pred_format=fmt, progress=False)
    live = evaluate(fakes.LookupModel(shift=2), dataset, progress=False)
    np.testing.assert_array_equal(scored.confusion, live.confusion)


def test_labelid_export_values():
    from udaseg.data.catalog import get_label_space
    from udaseg.engine.export import to_label_ids

    ids = to_label_ids(np.array([[0, 13, 18, 255]]), get_label_space("cityscapes19"))
    assert ids.tolist() == [[7, 26, 33, 0]] and TRAIN_ID_TO_LABEL_ID[13] == 26


def test_prediction_matching_errors(tmp_path, fakes):
    dataset = fakes.FakeSegDataset(n=3)
    _export_all(dataset, tmp_path, shift=0, fmt="trainid")
    os.remove(tmp_path / "a" / "city_000001_000019_labelTrainIds.png")
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(tmp_path / "city_000002_000019_color.png")
    with pytest.raises(DataError) as err:
        evaluate_predictions(tmp_path, dataset, "trainid", progress=False)
    message = str(err.value)
    assert "no PNG for 1 image(s): city_000001_000019" in message
    assert "several PNGs for 1 image(s): city_000002_000019" in message


def test_prediction_size_error_names_the_file(tmp_path, fakes):
    dataset = fakes.FakeSegDataset(n=1)
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(tmp_path / "city_000000_000019_x.png")
    with pytest.raises(DataError, match=r"city_000000_000019_x\.png: prediction is 20x12"):
        evaluate_predictions(tmp_path, dataset, "trainid", progress=False)


def test_stem_prefix_must_end_at_a_separator(tmp_path):
    for name in ("00001.png", "000010.png", "00002_pred.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    index = index_predictions(tmp_path)
    assert [p.name for p in index["00001"]] == ["00001.png"]
    assert [p.name for p in index["00002"]] == ["00002_pred.png"]
    assert not any(p.name == "notes.txt" for paths in index.values() for p in paths)


def test_export_formats(tmp_path):
    from udaseg.data.catalog import get_label_space

    space = get_label_space("cityscapes19")
    pred = torch.tensor([[0, 10], [13, 255]])
    img = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    color = np.asarray(Image.open(export_prediction(pred, tmp_path, "x", "color", space)))
    assert color[0, 0].tolist() == [128, 64, 128] and color[1, 1].tolist() == [0, 0, 0]
    overlay = np.asarray(Image.open(export_prediction(pred, tmp_path, "x", "overlay", space, image=img)))
    assert overlay[0, 0].tolist() == [114, 82, 114]  # (100 + colour) / 2, rounded
    trainid = np.asarray(Image.open(export_prediction(pred, tmp_path, "x", "trainid", space)))
    assert trainid.tolist() == [[0, 10], [13, 255]] and trainid.dtype == np.uint8


def test_entropy_histogram_by_hand():
    import math

    from udaseg.engine.evaluator import EntropyHistogram

    hist = EntropyHistogram(num_classes=2, bins=4)
    scores = torch.tensor([[[[0.0, 20.0, 20.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]])  # [1, 2, 1, 4]
    label = torch.tensor([[[0, 0, 1, 255]]])
    hist.update(scores, label)
    out = hist.to_json()
    # pixel 0: uniform, H = ln 2 = the maximum → last bin; argmax 0 = label: correct.
    # pixel 1: confident class 0 (H ≈ 0) and right; pixel 2: the same prediction, label 1: wrong.
    assert out["max"] == pytest.approx(math.log(2)) and out["bins"] == 4
    assert out["correct"] == [1, 0, 0, 1] and out["wrong"] == [1, 0, 0, 0]  # the ignored pixel counts nowhere
