"""Evaluation (docs/contracts.md §4): one confusion matrix over the whole split, every protocol from it.

* :class:`ConfusionMatrix` accumulates an ``int64`` matrix at **full label resolution** with one
  ``bincount`` per image. Rows are ground-truth classes (pixels labelled 255 are skipped);
  columns are predicted classes plus one last column for predictions outside the label space —
  a void label id in a submitted PNG. A GT pixel predicted "void" is a false negative of its
  class and a false positive of none, exactly as cityscapesscripts counts it.
* Per-class IoU = TP / (TP + FP + FN), **NaN when the class occurs in neither ground truth nor
  prediction**; each mean of the label space's ``eval_subsets`` (mIoU19 / mIoU16 / mIoU13, or
  mIoU7) is the NaN-skipping mean over its classes of that *same* vector — mIoU16 is never
  mIoU19·19/16.
* :func:`evaluate` runs a model over a dataset (whole / slide / flip, see
  :mod:`udaseg.models.inference`). Under DDP each rank takes a contiguous, non-padded shard, the
  matrices and image counts are summed with ``all_reduce``, and the count must equal
  ``len(dataset)``: every image is scored exactly once.
* :func:`evaluate_predictions` scores saved PNGs the way the Cityscapes server finds them.

IoUs are **fractions in [0, 1]** (as cityscapesscripts, torchmetrics and mmseg's JSON report
them); reports multiply by 100. ``EvalResult.to_json()`` is the ``eval.json`` schema (§4).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from udaseg import dist
from udaseg.data.catalog import IGNORE_INDEX, LabelSpace, raw_to_space_lut
from udaseg.errors import DataError
from udaseg.models.inference import describe, infer_logits


# ---------------------------------------------------------------------------------------------
# The metric
class ConfusionMatrix:
    """``int64 [C, C+1]`` counts: row = ground truth class, column = prediction (last column:
    predicted outside ``0…C−1``). Ground truth must be in ``0…C−1`` or ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes + 1), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        pred = torch.as_tensor(pred, device=self.matrix.device).reshape(-1).long()
        label = torch.as_tensor(label, device=self.matrix.device).reshape(-1).long()
        if pred.shape != label.shape:
            raise ValueError(f"prediction and label differ in size: {pred.numel()} vs {label.numel()} pixels")
        valid = label != self.ignore_index
        label, pred = label[valid], pred[valid]
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= self.num_classes):
            raise ValueError(f"label values must be in 0..{self.num_classes - 1} or {self.ignore_index}; "
                             f"found {int(label.min())}..{int(label.max())}")
        other = self.num_classes
        pred = torch.where((pred >= 0) & (pred < self.num_classes), pred, torch.full_like(pred, other))
        width = self.num_classes + 1
        counts = torch.bincount(label * width + pred, minlength=self.num_classes * width)
        self.matrix += counts.view(self.num_classes, width)

    def all_reduce(self) -> ConfusionMatrix:
        dist.all_reduce_sum(self.matrix)
        return self

    def numpy(self) -> np.ndarray:
        return self.matrix.cpu().numpy()


ENTROPY_BINS = 40


class EntropyHistogram:
    """Counts of the per-pixel prediction entropy (nats, of the softmax of the evaluated scores)
    over the labelled pixels, in ``ENTROPY_BINS`` equal bins over [0, ln C], separately for
    correctly and wrongly predicted pixels — how confident a model is where it is right and
    where it is wrong (EBDA's entropy balance acts on exactly this)."""

    def __init__(self, num_classes: int, bins: int = ENTROPY_BINS, device: torch.device | str = "cpu"):
        self.bins, self.max_entropy = bins, float(np.log(num_classes))
        self.counts = torch.zeros(2, bins, dtype=torch.int64, device=device)  # [correct, wrong]

    def update(self, scores: torch.Tensor, label: torch.Tensor) -> None:
        log_p = scores.float().log_softmax(dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1)
        valid = label != IGNORE_INDEX
        wrong = (log_p.argmax(dim=1) != label)[valid].long()
        index = (entropy[valid] / self.max_entropy * self.bins).long().clamp_(0, self.bins - 1)
        self.counts += torch.bincount(wrong * self.bins + index, minlength=2 * self.bins).reshape(2, self.bins)

    def all_reduce(self) -> EntropyHistogram:
        dist.all_reduce_sum(self.counts)
        return self

    def to_json(self) -> dict:
        counts = self.counts.cpu().tolist()
        return {"max": self.max_entropy, "bins": self.bins, "correct": counts[0], "wrong": counts[1]}


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU per class (``float64 [C]``) from a ``[C, C+1]`` (or ``[C, C]``) confusion matrix;
    NaN where the class is absent from both ground truth and prediction."""
    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = matrix.shape[0]
    tp = np.diag(matrix[:, :num_classes])
    fn = matrix.sum(axis=1) - tp
    fp = matrix[:, :num_classes].sum(axis=0) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN when there are none (no warning)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def subset_means(iou: np.ndarray, label_space: LabelSpace) -> dict[str, float]:
    """The label space's named means (mIoU19, mIoU16, …) over the same per-class vector."""
    return {name: nanmean(iou[list(indices)]) for name, indices in label_space.eval_subsets.items()}


def pixel_accuracy(matrix: np.ndarray) -> float:
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    return float(np.trace(matrix[:, :matrix.shape[0]]) / total) if total else float("nan")


def _json_number(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


@dataclass
class EvalResult:
    """One evaluation. ``per_class_iou`` and ``means`` hold fractions (NaN = class absent)."""

    label_space: LabelSpace
    confusion: np.ndarray  # int64 [C, C+1]
    num_images: int
    dataset: str = ""
    split: str = ""
    network: str = "student"
    protocol: dict[str, Any] = field(default_factory=lambda: {"mode": "whole", "flip": False, "test_scale": None})
    entropy: dict | None = None  # EntropyHistogram.to_json() of the prediction

    @property
    def iou(self) -> np.ndarray:
        return per_class_iou(self.confusion)

    @property
    def per_class_iou(self) -> dict[str, float]:
        return dict(zip(self.label_space.classes, self.iou.tolist()))

    @property
    def means(self) -> dict[str, float]:
        return subset_means(self.iou, self.label_space)

    @property
    def miou(self) -> float:
        """The mean over every class of the label space (its first subset: mIoU19/mIoU16/mIoU7)."""
        return next(iter(self.means.values()))

    @property
    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.confusion)

    def to_json(self) -> dict:
        """The ``eval.json`` schema: per_class_iou (name → IoU or null), one key per subset mean
        (mIoU19/mIoU16/mIoU13 or mIoU7), pixel_accuracy, dataset, split, label_space, mode, flip,
        test_scale (+ window, stride for slide), network, num_images. IoUs are fractions."""
        out: dict[str, Any] = {
            "per_class_iou": {k: _json_number(v) for k, v in self.per_class_iou.items()},
            **{k: _json_number(v) for k, v in self.means.items()},
            "pixel_accuracy": _json_number(self.pixel_accuracy),
            "dataset": self.dataset,
            "split": self.split,
            "label_space": self.label_space.name,
            **self.protocol,
            "network": self.network,
            "num_images": self.num_images,
        }
        if self.entropy is not None:
            out["entropy_histogram"] = self.entropy
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def table(self) -> str:
        """A plain-text table (class, IoU %) followed by the means, for terminals and logs."""
        width = max(len(c) for c in self.label_space.classes)
        rows = [f"{name:<{width}}  {'  n/a' if np.isnan(v) else f'{100 * v:5.1f}'}"
                for name, v in self.per_class_iou.items()]
        rows.append("-" * (width + 7))
        rows += [f"{name:<{width}}  {'  n/a' if np.isnan(v) else f'{100 * v:5.1f}'}" for name, v in self.means.items()]
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Evaluating a model
def _dataset_info(dataset, dataset_name: str | None, split: str | None) -> tuple[str, str]:
    name = dataset_name or getattr(dataset, "dataset_name", None) or getattr(dataset, "name", None)
    if not isinstance(name, str):
        name = type(dataset).__name__
    split = split or getattr(dataset, "split", None) or ""
    return name, str(split)


def _collate(items: list[dict]) -> list[dict]:
    return items


def _batches_of_equal_size(items: list[dict]) -> list[list[dict]]:
    """Consecutive runs of items whose images share a size (so they can be stacked)."""
    runs: list[list[dict]] = []
    for item in items:
        if runs and runs[-1][0]["img"].shape == item["img"].shape and runs[-1][0]["label"].shape == item["label"].shape:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


@torch.no_grad()
def evaluate(model: nn.Module, dataset, mode: str = "whole", flip: bool = False,
             test_scale: tuple[int, int] | None = None, window: tuple[int, int] | None = None,
             stride: tuple[int, int] | None = None, device: torch.device | str | None = None,
             network: str = "student", batch_size: int = 1, progress: bool = True,
             amp_dtype: torch.dtype | None = None, num_workers: int = 0,
             dataset_name: str | None = None, split: str | None = None,
             scales: tuple[float, ...] | None = None, interpolation: str = "bilinear") -> EvalResult:
    """Score ``model`` on every labelled image of ``dataset`` (items with ``img`` uint8
    [3, H, W], ``label`` int64 [H, W] in ``dataset.label_space``, 255 = ignore).

    ``network`` only labels the result (pass the teacher module to evaluate the teacher). The
    model runs where its parameters are, in eval mode (restored afterwards); ``device`` (default:
    the model's) is where images are sent and the confusion matrix is accumulated. Items of equal
    size are batched up to ``batch_size``.
    """
    label_space: LabelSpace = dataset.label_space
    num_classes = getattr(model, "num_classes", label_space.num_classes)
    if num_classes != label_space.num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but the dataset's label space "
                         f"{label_space.name!r} has {label_space.num_classes}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    name, split = _dataset_info(dataset, dataset_name, split)

    sampler = dist.InferenceSampler(len(dataset))
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, batch_size), sampler=sampler,
                                         num_workers=num_workers, collate_fn=_collate)
    confusion = ConfusionMatrix(label_space.num_classes, device=device)
    entropy = EntropyHistogram(label_space.num_classes, device=device)
    seen = torch.zeros((), dtype=torch.int64)
    bar = None
    if progress and dist.is_main():
        from tqdm import tqdm

        bar = tqdm(total=len(sampler), desc=f"eval {name} {split}".strip(), unit="img", leave=False)

    was_training = model.training
    model.eval()
    try:
        for items in loader:
            for run in _batches_of_equal_size(items):
                if any("label" not in item for item in run):
                    raise DataError(f"{name} {split}: item {run[0].get('name', '?')!r} "
                                    "has no label to evaluate against")
                img = torch.stack([item["img"] for item in run]).to(device)
                label = torch.stack([item["label"] for item in run]).to(device)
                scores = infer_logits(model, img, mode=mode, test_scale=test_scale, window=window, stride=stride,
                                      flip=flip, out_size=(label.shape[-2], label.shape[-1]), amp_dtype=amp_dtype,
                                      scales=scales, interpolation=interpolation)
                confusion.update(scores.argmax(dim=1), label)
                entropy.update(scores, label)
                seen += len(run)
                if bar is not None:
                    bar.update(len(run))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()

    confusion.all_reduce()
    entropy.all_reduce()
    dist.all_reduce_sum(seen)
    if int(seen) != len(dataset):
        raise RuntimeError(f"evaluated {int(seen)} images but the dataset has {len(dataset)}")
    return EvalResult(label_space, confusion.numpy(), int(seen), name, split, network,
                      describe(mode, test_scale, window, stride, flip, scales, interpolation), entropy.to_json())


# ---------------------------------------------------------------------------------------------
# Evaluating saved predictions
PRED_FORMATS = ("labelid", "trainid")
_SEPARATOR = re.compile(r"[^0-9A-Za-z]")


def index_predictions(pred_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Every ``*.png`` under ``pred_dir`` (recursively), keyed by each prefix of its file name
    that ends right before a non-alphanumeric character or at the end — the stems the file can
    stand for. ``aachen_000000_000019_leftImg8bit.png`` is found under ``aachen``,
    ``aachen_000000``, ``aachen_000000_000019`` …; ``000010.png`` is *not* found under ``00001``."""
    index: dict[str, list[Path]] = {}
    for root, _, files in os.walk(os.fspath(pred_dir)):
        for file in files:
            if not file.lower().endswith(".png"):
                continue
            base = file[:-4]
            cuts = {m.start() for m in _SEPARATOR.finditer(base)} | {len(base)}
            for cut in cuts:
                if cut:
                    index.setdefault(base[:cut], []).append(Path(root) / file)
    return index


def _read_prediction(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise DataError(f"{path}: expected a single-channel PNG of class ids, got mode {im.mode}")
        return np.asarray(im).astype(np.int64)


def evaluate_predictions(pred_dir: str | os.PathLike, dataset, pred_format: str = "labelid",
                         progress: bool = True, dataset_name: str | None = None,
                         split: str | None = None) -> EvalResult:
    """Score prediction PNGs found anywhere under ``pred_dir`` against ``dataset``'s labels.

    Each ground-truth image ``ds[i]`` is matched to the one PNG whose file name starts with
    ``ds[i]["name"]`` followed by a separator or ``.png`` (the Cityscapes server's rule); none or
    several matches is an error naming the stems. ``labelid``: Cityscapes label ids, mapped into
    the dataset's label space through the catalog (void ids count as "no class"); ``trainid``:
    ids of the label space itself. Predictions must have the ground truth's size.
    """
    if pred_format not in PRED_FORMATS:
        raise ValueError(f"pred_format must be one of {PRED_FORMATS}, got {pred_format!r}")
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder not found: {pred_dir}")
    label_space: LabelSpace = dataset.label_space
    lut = raw_to_space_lut("cityscapes_id", label_space.name).astype(np.int64) if pred_format == "labelid" else None
    index = index_predictions(pred_dir)
    name, split = _dataset_info(dataset, dataset_name, split)

    confusion = ConfusionMatrix(label_space.num_classes)
    missing: list[str] = []
    ambiguous: list[str] = []
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"score {name} {split}".strip(), unit="img", leave=False)
    for i in indices:
        item = dataset[i]
        stem = item["name"]
        found = index.get(stem, [])
        if len(found) != 1:
            if found:
                ambiguous.append(f"{stem} ({', '.join(str(p.relative_to(pred_dir)) for p in found[:3])})")
            else:
                missing.append(stem)
            continue
        if missing or ambiguous:
            continue  # already failing: only collect the names for the error
        path, label = found[0], item["label"]
        pred = _read_prediction(path)
        if pred.shape != tuple(label.shape):
            raise DataError(f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} (w x h) but the ground truth "
                            f"of {stem} is {label.shape[-1]}x{label.shape[-2]}")
        if lut is not None:
            pred = lut[np.clip(pred, 0, 255)]
        confusion.update(pred, label)
    if missing or ambiguous:
        lines = [f"predictions in {pred_dir} do not match {name} {split}".rstrip()]
        if missing:
            lines.append(f"  no PNG for {len(missing)} image(s): {', '.join(missing[:10])}"
                         + (" …" if len(missing) > 10 else ""))
        if ambiguous:
            lines.append(f"  several PNGs for {len(ambiguous)} image(s): {'; '.join(ambiguous[:5])}"
                         + (" …" if len(ambiguous) > 5 else ""))
        raise DataError("\n".join(lines))
    return EvalResult(label_space, confusion.numpy(), len(dataset), name, split, network="predictions",
                      protocol={"mode": "predictions", "pred_format": pred_format, "flip": False, "test_scale": None})
