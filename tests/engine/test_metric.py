"""The IoU arithmetic on hand-made confusions, and parity with torchmetrics and cityscapesscripts."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from udaseg.data.catalog import LabelSpace, get_label_space, raw_to_space_lut
from udaseg.engine.evaluator import (
    ConfusionMatrix,
    EvalResult,
    evaluate_predictions,
    nanmean,
    per_class_iou,
    pixel_accuracy,
    subset_means,
)


def test_iou_by_hand():
    # GT:   0 0 1 1 2 255 | pred: 0 1 1 1 0 2   (class 3 absent from both)
    label = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    m = cm.numpy()
    assert m.dtype == np.int64 and m.shape == (4, 5)
    assert m[0].tolist() == [1, 1, 0, 0, 0] and m[1].tolist() == [0, 2, 0, 0, 0] and m[2].tolist() == [1, 0, 0, 0, 0]
    iou = per_class_iou(m)
    # road: TP 1, FP 1 (the class-2 pixel), FN 1 → 1/3; class 1: TP 2, FP 1 → 2/3; class 2: 0/1
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])
    assert nanmean(iou) == pytest.approx(1 / 3)
    assert pixel_accuracy(m) == pytest.approx(3 / 5)  # the ignored pixel does not count


def test_prediction_outside_label_space_is_a_false_negative_only():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([255, 0, 1]), torch.tensor([0, 0, 1]))
    iou = per_class_iou(cm.numpy())
    np.testing.assert_allclose(iou, [1 / 2, 1.0])  # road: TP 1, FN 1; class 1 unaffected


def test_label_outside_the_space_is_an_error():
    with pytest.raises(ValueError, match="label values"):
        ConfusionMatrix(3).update(torch.tensor([0]), torch.tensor([7]))


def test_subset_means_use_the_same_vector_with_nan_skip():
    space = get_label_space("cityscapes19")
    iou = np.full(19, np.nan)
    iou[[0, 1, 3, 9]] = [0.9, 0.5, 0.1, 0.3]  # terrain (9) is outside mIoU16, wall (3) outside mIoU13
    means = subset_means(iou, space)
    assert means["mIoU19"] == pytest.approx((0.9 + 0.5 + 0.1 + 0.3) / 4)
    assert means["mIoU16"] == pytest.approx((0.9 + 0.5 + 0.1) / 3)
    assert means["mIoU13"] == pytest.approx((0.9 + 0.5) / 2)
    assert math.isnan(subset_means(np.full(19, np.nan), space)["mIoU19"])


def test_eval_result_json_schema():
    space = LabelSpace("toy", ("a", "b", "c"), ((0, 0, 0),) * 3, {"mIoU3": (0, 1, 2), "mIoU2": (0, 1)})
    matrix = np.array([[3, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]])
    out = EvalResult(space, matrix, 4, "fake", "val", "teacher",
                     {"mode": "slide", "flip": True, "test_scale": None, "window": [8, 8], "stride": [4, 4]}).to_json()
    assert out["per_class_iou"] == {"a": pytest.approx(0.75), "b": pytest.approx(2 / 3), "c": None}
    assert out["mIoU3"] == pytest.approx((0.75 + 2 / 3) / 2) and out["mIoU2"] == out["mIoU3"]
    assert (out["mode"], out["window"], out["stride"], out["flip"]) == ("slide", [8, 8], [4, 4], True)
    assert (out["dataset"], out["split"], out["network"], out["num_images"]) == ("fake", "val", "teacher", 4)
    import json

    json.dumps(out, allow_nan=False)  # null, never NaN, in eval.json


def test_matches_torchmetrics_jaccard():
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    metric = MulticlassJaccardIndex(num_classes=19, ignore_index=255, average="none")
    cm = ConfusionMatrix(19)
    for _ in range(4):
        label = torch.randint(0, 17, (48, 64), generator=g)  # classes 17, 18 never in GT
        label[torch.rand(48, 64, generator=g) < 0.2] = 255
        pred = torch.where(torch.rand(48, 64, generator=g) < 0.6, label.clamp(max=18),
                           torch.randint(0, 18, (48, 64), generator=g))
        pred[label == 255] = torch.randint(0, 19, (int((label == 255).sum()),), generator=g)
        metric.update(pred, label)
        cm.update(pred, label)
    ours = per_class_iou(cm.numpy())
    theirs = metric.compute().double().numpy()
    present = ~np.isnan(ours)
    np.testing.assert_allclose(ours[present], theirs[present], atol=1e-6)
    assert np.isnan(ours[18]) and theirs[18] == 0  # absent from GT and prediction: NaN vs 0 (zero_division)


# --- cityscapesscripts parity ------------------------------------------------------------------
class _CityscapesGTDataset:
    """gtFine label-id PNGs read as the dataset contract would present them."""

    def __init__(self, files):
        self.files = files
        self.label_space = get_label_space("cityscapes19")
        self.lut = raw_to_space_lut("cityscapes_id", "cityscapes19")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        ids = np.asarray(Image.open(self.files[i]))
        stem = self.files[i].name.replace("_gtFine_labelIds.png", "")
        return {"label": torch.from_numpy(self.lut[ids].astype(np.int64)), "name": stem,
                "img": torch.zeros(3, *ids.shape, dtype=torch.uint8)}


def _write_cityscapes_like(root, n=4, size=(48, 96), seed=0):
    """GT label ids (void ids included) and label-id predictions, nested differently."""
    rng = np.random.default_rng(seed)
    gt_files, pred_files = [], []
    for i in range(n):
        city = ("aachen", "bremen")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        gt = rng.integers(0, 34, size=size).astype(np.uint8)  # every Cityscapes label id 0..33
        gt[: size[0] // 4] = 23  # some structure: a sky band
        keep = rng.random(size) < 0.55  # predictions: correct, a random id (void ones too), or a class id
        random_ids = rng.integers(0, 34, size=size).astype(np.uint8)
        pred = np.where(keep, gt, random_ids)
        pred[pred == 31] = 32  # train never predicted: its IoU is 0 where it occurs in GT
        gt_dir = root / "gtFine" / "val" / city
        pred_dir = root / "results" / ("nested" if i % 2 else "") / city
        gt_dir.mkdir(parents=True, exist_ok=True)
        pred_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(pred).save(pred_dir / f"{stem}_leftImg8bit.png")
        gt_files.append(gt_dir / f"{stem}_gtFine_labelIds.png")
        pred_files.append(pred_dir / f"{stem}_leftImg8bit.png")
    return gt_files, pred_files


def _cityscapesscripts(gt_files, pred_files, tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    args = cs_eval.args
    args.evalInstLevelScore = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.evalPixelAccuracy = False
    args.predictionPath = None
    args.predictionWalk = None
    args.exportFile = str(tmp_path / "cs_result.json")
    try:
        return cs_eval.evaluateImgLists([str(p) for p in pred_files], [str(p) for p in gt_files], args)
    except SystemExit as err:  # printError exits
        pytest.fail(f"cityscapesscripts exited: {err}")


def test_parity_with_cityscapesscripts(tmp_path):
    gt_files, pred_files = _write_cityscapes_like(tmp_path)
    reference = _cityscapesscripts(gt_files, pred_files, tmp_path)
    ours = evaluate_predictions(tmp_path / "results", _CityscapesGTDataset(gt_files), "labelid", progress=False)
    checked = 0
    for name, iou in ours.per_class_iou.items():
        ref = reference["classScores"][name]
        if math.isnan(ref):
            assert math.isnan(iou), name
        else:
            assert iou == pytest.approx(ref, abs=1e-6), name
            checked += 1
    assert checked == 19 and ours.per_class_iou["train"] == 0.0
    assert ours.means["mIoU19"] == pytest.approx(reference["averageScoreClasses"], abs=1e-6)
    assert ours.num_images == len(gt_files)


def test_parity_with_cityscapesscripts_when_classes_are_absent(tmp_path):
    gt_files, pred_files = _write_cityscapes_like(tmp_path, n=3, seed=1)
    for path in gt_files + pred_files:  # remove bus (28) and bicycle (33) from GT and predictions
        ids = np.asarray(Image.open(path)).copy()
        ids[np.isin(ids, (28, 33))] = 7
        Image.fromarray(ids).save(path)
    reference = _cityscapesscripts(gt_files, pred_files, tmp_path)
    ours = evaluate_predictions(tmp_path / "results", _CityscapesGTDataset(gt_files), "labelid", progress=False)
    assert math.isnan(reference["classScores"]["bus"]) and math.isnan(ours.per_class_iou["bus"])
    assert ours.means["mIoU19"] == pytest.approx(reference["averageScoreClasses"], abs=1e-6)
    # mIoU16/13 are means of the same per-class vector, never rescaled
    iou = ours.iou
    assert ours.means["mIoU16"] == pytest.approx(np.nanmean(iou[list(ours.label_space.eval_subsets["mIoU16"])]))
