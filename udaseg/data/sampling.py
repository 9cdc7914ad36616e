"""Stateless, resumable training streams and Rare Class Sampling (RCS).

**Streams.** :class:`TrainStream` is a map-style ``torch.utils.data.Dataset`` indexed by a *draw
number*: ``stream[k]`` is the k-th training sample of a run, and every random choice it makes
(which image, RCS class, crop, flip) comes from ``np.random.default_rng([seed, k])``. Sample k is
therefore a pure function of ``(seed, k)``: the trainer maps (iteration, rank, batch slot) to a
draw number, which makes resuming exact and DDP ranks different without any sampler state, in any
number of DataLoader workers.

Without RCS the image index follows epoch permutations: with ``n = len(dataset)``,
``epoch = k // n`` and ``index = default_rng([seed, epoch, 1]).permutation(n)[k % n]``, so every
image is seen once per epoch of n consecutive draws. (The third entropy word keeps this generator
apart from the per-draw ones, whose seed sequence ``[seed, k]`` is padded with zeros.)

**Rare Class Sampling** (DAFormer, Hoyer et al. CVPR 2022, ``mmseg/datasets/uda_dataset.py``),
from the statistics ``udaseg data prepare`` writes at full label resolution:

1. ``n_c`` = pixels of class c over the source set, for the classes that occur;
   ``f_c = n_c / Σ n``; ``P(c) = softmax((1 − f_c) / T)`` with ``T = class_temp`` (0.01).
2. Candidates of c: the images with **more than** ``min_pixels`` pixels of c (3000 at real
   resolution; scale it with the image area for small images). An empty list is an error.
3. Per draw: ``c ~ P``, an image uniformly from c's candidates, then the source pipeline with a
   fresh crop; while the crop holds ≤ ``min_pixels · min_crop_ratio`` pixels of c, the **same
   image** is cropped again, at most 10 times, and the last crop is kept. (Re-sampling the image
   instead would favour images with many c pixels; DAFormer PR #8.) ``min_crop_ratio`` is 0.5 for
   DAFormer, 2.0 for HRDA/MIC.

Differences from the reference: probabilities are computed in float64 (DAFormer: float32), the
statistics name files relative to the dataset root, and the random streams are numpy generators
seeded per draw rather than numpy's global state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from udaseg.data.base import (
    PREPARED_MANIFEST,
    SAMPLE_CLASS_STATS,
    SAMPLES_WITH_CLASS,
    SegDataset,
    read_prepared_space,
    to_tensors,
)
from udaseg.data.transforms import TrainPipeline
from udaseg.errors import DataError

# DAFormer re-crops the chosen image this many times at most.
RCS_RECROPS = 10


def rcs_class_probabilities(class_pixels: Mapping[int, int], class_temp: float) -> tuple[np.ndarray, np.ndarray]:
    """Classes (ascending by pixel count, as DAFormer orders them) and ``softmax((1 − f_c)/T)``."""
    if class_temp <= 0:
        raise ValueError(f"class_temp must be positive, got {class_temp}")
    items = sorted(((int(c), int(n)) for c, n in class_pixels.items() if n > 0), key=lambda t: (t[1], t[0]))
    classes = np.array([c for c, _ in items], dtype=np.int64)
    counts = np.array([n for _, n in items], dtype=np.float64)
    logits = (1.0 - counts / counts.sum()) / class_temp
    logits -= logits.max()  # the softmax is shift-invariant; this keeps exp() finite
    probabilities = np.exp(logits)
    return classes, probabilities / probabilities.sum()


class RareClassSampling:
    """Chooses (class, image) pairs for the source stream by DAFormer's RCS (module docstring).

    Built from a dataset whose root holds prepare's statistics (:meth:`from_dataset`), or from
    the statistics themselves (:meth:`__init__`, for tests and custom pipelines).
    ``index_by_file`` maps a statistics file name to the dataset indices of that label file.
    """

    def __init__(self, sample_class_stats: Sequence[Mapping[str, Any]], samples_with_class: Mapping[str, Sequence],
                 index_by_file: Mapping[str, Sequence[int]], *, class_temp: float = 0.01, min_pixels: int = 3000,
                 min_crop_ratio: float = 0.5, class_names: Sequence[str] | None = None, source: str = "statistics"):
        self.class_temp = float(class_temp)
        self.min_pixels = int(min_pixels)
        self.min_crop_ratio = float(min_crop_ratio)
        totals: dict[int, int] = {}
        for stats in sample_class_stats:
            for key, count in stats.items():
                if key != "file":
                    totals[int(key)] = totals.get(int(key), 0) + int(count)
        if not totals:
            raise DataError(f"{source}: the class statistics list no pixels; "
                            "expected prepare's sample_class_stats.json")
        if class_names is not None:
            unknown = sorted(c for c in totals if not 0 <= c < len(class_names))
            if unknown:
                raise DataError(f"{source}: class ids {unknown} are not in the dataset's label space "
                                f"({len(class_names)} classes); re-run `udaseg data prepare` with its label space")
        self.class_pixels = totals
        self.classes, self.probabilities = rcs_class_probabilities(totals, self.class_temp)

        per_class = {int(k): v for k, v in samples_with_class.items()}
        known_files = [f for entries in per_class.values() for f, _ in entries]
        if known_files and not any(f in index_by_file for f in known_files):
            raise DataError(f"{source}: none of the files it names (e.g. {known_files[0]!r}) belongs to the dataset; "
                            "expected statistics written by `udaseg data prepare` for this folder")
        self.candidates: dict[int, np.ndarray] = {}
        for c in self.classes.tolist():
            indices = [i for file, count in per_class.get(c, []) if count > self.min_pixels
                       for i in index_by_file.get(file, ())]
            if not indices:
                name = f" ({class_names[c]})" if class_names is not None else ""
                raise DataError(
                    f"{source}: no image has more than min_pixels={self.min_pixels} pixels of class {c}{name}; "
                    "expected at least one (min_pixels counts full-resolution label pixels: lower it for small images)")
            self.candidates[c] = np.array(indices, dtype=np.int64)

    @classmethod
    def from_dataset(cls, dataset: SegDataset, *, class_temp: float = 0.01, min_pixels: int = 3000,
                     min_crop_ratio: float = 0.5, stats_dir: str | Path | None = None) -> RareClassSampling:
        """Read ``sample_class_stats.json`` and ``samples_with_class.json`` from the dataset root
        (or ``stats_dir``), checking that they were written in the dataset's label space."""
        folder = Path(stats_dir) if stats_dir is not None else dataset.root
        stats_space = read_prepared_space(folder) or "cityscapes19"
        if stats_space != dataset.label_space.name:
            raise DataError(f"RCS statistics in {folder} count classes of label space {stats_space!r} "
                            f"({PREPARED_MANIFEST}); the dataset is read in {dataset.label_space.name!r}. "
                            f"Run `udaseg data prepare {dataset.name} {dataset.root} --label-space "
                            f"{dataset.label_space.name} --force`")
        loaded = []
        for filename in (SAMPLE_CLASS_STATS, SAMPLES_WITH_CLASS):
            path = folder / filename
            try:
                loaded.append(json.loads(path.read_text()))
            except FileNotFoundError:
                raise DataError(f"RCS needs {path}; run `udaseg data prepare {dataset.name} {dataset.root}`") from None
            except (OSError, ValueError) as err:
                raise DataError(f"cannot read {path} ({err}); expected prepare's JSON statistics") from None
        return cls(loaded[0], loaded[1], dataset.index_by_label_file(), class_temp=class_temp,
                   min_pixels=min_pixels, min_crop_ratio=min_crop_ratio,
                   class_names=dataset.label_space.classes, source=str(folder / SAMPLE_CLASS_STATS))

    @property
    def crop_min_pixels(self) -> float:
        """A crop must hold more than this many pixels of the drawn class to be accepted."""
        return self.min_pixels * self.min_crop_ratio

    def choose(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw a class by P(c), then one of its candidate images uniformly: ``(class, index)``."""
        c = int(self.classes[rng.choice(len(self.classes), p=self.probabilities)])
        candidates = self.candidates[c]
        return c, int(candidates[rng.integers(len(candidates))])

    def describe(self) -> str:
        rows = [f"  class {c:3d}: P={p:.4g}, {len(self.candidates[c])} candidate image(s)"
                for c, p in zip(self.classes.tolist(), self.probabilities.tolist())]
        return (f"RCS: T={self.class_temp}, min_pixels={self.min_pixels}, min_crop_ratio={self.min_crop_ratio}\n"
                + "\n".join(rows))


class TrainStream(torch.utils.data.Dataset):
    """``stream[draw]`` → one transformed training sample (tensor dict of the dataset contract
    plus ``"index"`` and ``"draw"``; with RCS, ``meta`` also holds ``rcs_class`` and ``recrops``).
    ``len(stream)`` is one epoch (``len(dataset)``); any non-negative draw number is valid."""

    def __init__(self, dataset: SegDataset, pipeline: TrainPipeline | None, seed: int,
                 rcs: RareClassSampling | None = None):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.dataset = dataset
        self.pipeline = pipeline or TrainPipeline(flip_prob=0.0)
        self.seed = int(seed)
        self.rcs = rcs
        self._permutation: tuple[int, np.ndarray] | None = None  # (epoch, permutation) cache

    def __len__(self) -> int:
        return len(self.dataset)

    def index_for_draw(self, draw: int) -> int:
        """The dataset index of ``draw`` without RCS (epoch permutations)."""
        n = len(self.dataset)
        epoch = draw // n
        if self._permutation is None or self._permutation[0] != epoch:
            self._permutation = (epoch, np.random.default_rng([self.seed, epoch, 1]).permutation(n))
        return int(self._permutation[1][draw % n])

    def __getitem__(self, draw: int) -> dict[str, Any]:
        draw = int(draw)
        if draw < 0:
            raise IndexError(f"draw numbers are non-negative, got {draw}")
        rng = np.random.default_rng([self.seed, draw])
        if self.rcs is None:
            index = self.index_for_draw(draw)
            sample = self.pipeline(self.dataset.load(index), rng)
        else:
            rare_class, index = self.rcs.choose(rng)
            sample, recrops = self._rcs_crop(self.dataset.load(index), rare_class, rng)
            sample["meta"] = {**sample["meta"], "rcs_class": rare_class, "recrops": recrops}
        out = to_tensors(sample)
        out["index"] = index
        out["draw"] = draw
        return out

    def _rcs_crop(self, loaded: dict[str, Any], rare_class: int, rng: np.random.Generator) -> tuple[dict, int]:
        """Crop ``loaded`` until the crop holds enough pixels of ``rare_class`` (at most
        :data:`RCS_RECROPS` re-crops of the same image; the last crop is kept)."""
        assert self.rcs is not None  # called only when rare class sampling is on
        resized = self.pipeline.resize(loaded, rng)
        sample = self.pipeline.augment(resized, rng)
        recrops = 0
        if self.rcs.min_crop_ratio > 0:
            while recrops < RCS_RECROPS and not (sample["label"] == rare_class).sum() > self.rcs.crop_min_pixels:
                if self.pipeline.resize_is_random:
                    resized = self.pipeline.resize(loaded, rng)
                sample = self.pipeline.augment(resized, rng)
                recrops += 1
        return sample, recrops


UNION_MIXES = ("concat", "balanced")


class UnionDataset:
    """Several datasets as one training set (e.g. Foggy + Rain Cityscapes as one adverse target):
    ``concat`` — every image once per epoch, so the parts weigh by their size; ``balanced`` —
    the parts take turns (index i → part i mod k, its image (i div k) mod n_part), so each part
    is drawn equally often whatever its size; an epoch is k × the largest part."""

    def __init__(self, parts: Sequence[Any], mix: str = "concat"):
        if mix not in UNION_MIXES:
            raise ValueError(f"mix must be one of {UNION_MIXES}, got {mix!r}")
        if not parts:
            raise ValueError("a union needs at least one dataset")
        self.parts, self.mix = list(parts), mix
        self.label_space = self.parts[0].label_space
        for part in self.parts[1:]:
            if part.label_space.name != self.label_space.name:
                raise DataError(f"cannot join datasets of label spaces {self.label_space.name} "
                                f"and {part.label_space.name}")
        self.has_labels = all(getattr(p, "has_labels", True) for p in self.parts)
        self._offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        if self.mix == "balanced":
            return len(self.parts) * max(len(p) for p in self.parts)
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(part, index in the part) of a union index."""
        if self.mix == "balanced":
            part = index % len(self.parts)
            return part, (index // len(self.parts)) % len(self.parts[part])
        part = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return part, index - int(self._offsets[part])

    def load(self, index: int) -> dict[str, Any]:
        part, i = self.locate(int(index))
        return self.parts[part].load(i)
