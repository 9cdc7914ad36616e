"""A training stream built from an earlier pipeline stage's artefacts (``udaseg.engine.pipeline``).

:class:`StageView` wraps a dataset and, by the stream options of the same names:

* ``subset`` — keeps the samples named in a text file (one sample name per line, the names the
  dataset gives, e.g. Cityscapes ``<city>_<seq>_<frame>``), in the dataset's order; an unknown
  name is an error (the file belongs to another dataset or split);
* ``labels_from`` — replaces each sample's label by ``FOLDER/<name>.png`` (8-bit train ids in the
  run's label space, 255 = ignore): e.g. the easy split's pseudo-labels as IDA's labelled source;
* ``pseudo_labels`` — adds ``FOLDER/<name>.png`` as the batch key ``pseudo_label`` beside the
  image (e.g. BAFFT step 2's target); unlike ``label``, the trainer does not strip it from target
  batches: it is the method's own offline output, not ground truth.

A label map of another size than its image is resized to it with nearest neighbour (BAFFT writes
its pseudo-labels at the network's input size). A missing or unreadable file is a
:class:`~udaseg.errors.DataError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from udaseg.errors import DataError


def read_names(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise DataError(f"cannot read the sample list {path}: {err.strerror or err}") from None
    if not names:
        raise DataError(f"the sample list {path} is empty; expected one sample name per line")
    return names


def read_train_ids(path: Path, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """An 8-bit train-id PNG as uint8 [H, W] of ``size``; ids ≥ ``num_classes`` other than 255 are an error."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DataError(f"{path}: expected an 8-bit single-channel train-id PNG, got mode {im.mode}")
            label: np.ndarray = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing label map {path} (written by an earlier stage?)") from None
    except (OSError, SyntaxError) as err:
        raise DataError(f"cannot read label map {path}: {err}") from None
    bad = np.setdiff1d(np.unique(label), np.r_[np.arange(num_classes), 255])
    if bad.size:
        raise DataError(f"{path}: ids {bad.tolist()} are outside the label space ({num_classes} classes, 255 = ignore)")
    if label.shape != tuple(size):
        label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return label


class StageView:
    """``dataset`` seen through a stage's artefacts; everything else is the dataset's own."""

    def __init__(self, dataset: Any, *, subset: str | None = None, labels_from: str | None = None,
                 pseudo_labels: str | None = None):
        self.dataset = dataset
        self.labels_from = Path(labels_from) if labels_from else None
        self.pseudo_labels = Path(pseudo_labels) if pseudo_labels else None
        self.indices = list(range(len(dataset)))
        if subset:
            names = read_names(Path(subset))
            position = {s.name: i for i, s in enumerate(dataset.samples)}
            unknown = [n for n in names if n not in position]
            if unknown:
                raise DataError(f"{subset}: {len(unknown)} name(s) are not samples of {dataset!r}, "
                                f"e.g. {unknown[0]!r}")
            self.indices = sorted(position[n] for n in set(names))
        self.samples = [dataset.samples[i] for i in self.indices]
        self.has_labels = dataset.has_labels or self.labels_from is not None

    def __getattr__(self, name: str) -> Any:  # name, root, label_space, …
        return getattr(self.__dict__["dataset"], name)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> dict[str, Any]:
        sample = self.dataset.load(self.indices[index])
        size = sample["img"].shape[:2]
        n = self.dataset.label_space.num_classes
        if self.labels_from is not None:
            sample["label"] = read_train_ids(self.labels_from / f"{sample['name']}.png", size, n)
        if self.pseudo_labels is not None:
            sample["pseudo_label"] = read_train_ids(self.pseudo_labels / f"{sample['name']}.png", size, n)
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        from udaseg.data.base import to_tensors

        return to_tensors(self.load(index))

    def index_by_label_file(self):
        raise DataError("rare class sampling needs the dataset's own label statistics; it cannot be used "
                        "with subset / labels_from / pseudo_labels")

    def __repr__(self) -> str:
        return f"StageView({self.dataset!r}, samples={len(self)})"
