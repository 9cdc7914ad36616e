"""``udaseg data check DATASET ROOT``: read every file of a dataset and report what is wrong.

For each split (the ones named, or every split whose folder exists) it counts images and labelled
images, then reads every image, every label file (raw ids *and* prepared train ids) and depth map,
and reports:

* missing split folders, and splits without any usable sample;
* unpaired files (an image without a label, a label without an image, an image without depth);
* unreadable files (truncated, corrupt, not an image, a multi-channel label);
* image/label (and image/depth) size mismatches;
* label values outside the file's id set (e.g. 40 in a Cityscapes ``_labelIds`` file), with the values;
* stale prepared files: a ``*_labelTrainIds.png`` older than the raw label it was made from (the
  raw one was edited after ``udaseg data prepare``; loaders read the raw one and warn);

and a class histogram: each class's share of the labelled pixels, in the dataset's label space,
over all checked splits. ``report.ok`` is False on any problem (the CLI then exits with 1);
``report.describe()`` names the problem files (long lists are cut, with a count).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from udaseg.data.base import (
    PREPARED_MANIFEST,
    SAMPLE_CLASS_STATS,
    EmptySplitError,
    LabelValueError,
    SegDataset,
    SizeMismatchError,
    StalePreparedWarning,
    UnreadableFileError,
    check_same_size,
    parallel_map,
    read_depth_metres,
    read_label,
    read_prepared_state,
    read_rgb,
    relative,
)
from udaseg.data.catalog import IGNORE_INDEX, LabelSpace
from udaseg.data.registry import get_dataset_class, open_splits
from udaseg.errors import DataError

PROBLEM_KINDS: dict[str, str] = {
    "missing_split": "missing split folders",
    "layout": "layout problems",
    "empty_split": "empty splits",
    "unpaired": "unpaired files",
    "unreadable": "unreadable files",
    "size_mismatch": "size mismatches",
    "label_values": "label values outside the id set",
    "stale_prepared": "prepared label files older than their raw label (run prepare --force)",
}
LISTED_PER_KIND = 10


@dataclass
class SplitCounts:
    images: int
    labelled: int


@dataclass
class CheckReport:
    dataset: str
    root: Path
    label_space: LabelSpace | None = None
    splits: dict[str, SplitCounts] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    prepared: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    @property
    def problem_count(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def add(self, kind: str, message: str) -> None:
        self.problems[kind].append(message.replace(str(self.root) + os.sep, ""))

    def describe(self) -> str:
        space = self.label_space.name if self.label_space else "?"
        verdict = "OK" if self.ok else f"{self.problem_count} PROBLEM(S)"
        lines = [f"check {self.dataset} at {self.root} (label space {space}): {verdict}  [{self.seconds:.1f} s]"]
        for split, counts in self.splits.items():
            lines.append(f"  split {split}: {counts.images} image(s), {counts.labelled} labelled")
        if self.prepared:
            lines.append(f"  prepare: {self.prepared}")
        for kind, title in PROBLEM_KINDS.items():
            items = self.problems[kind]
            if not items:
                continue
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {item}" for item in items[:LISTED_PER_KIND]]
            if len(items) > LISTED_PER_KIND:
                lines.append(f"  … and {len(items) - LISTED_PER_KIND} more")
        lines += self._histogram()
        return "\n".join(lines)

    def _histogram(self) -> list[str]:
        if self.label_space is None:
            return []
        n = self.label_space.num_classes
        labelled = int(self.class_pixels[:n].sum())
        total = labelled + int(self.class_pixels[IGNORE_INDEX])
        if total == 0:
            return []
        ignored = 100 * self.class_pixels[IGNORE_INDEX] / total
        lines = [f"class histogram (share of labelled pixels; ignore = {ignored:.1f}% of all pixels):"]
        width = max(len(c) for c in self.label_space.classes)
        for c, name in enumerate(self.label_space.classes):
            share = self.class_pixels[c] / labelled if labelled else 0.0
            bar = "#" * int(round(40 * share))
            lines.append(f"  {c:3d} {name:<{width}} {100 * share:6.2f}% {bar}" + ("  (absent)" if share == 0 else ""))
        return lines


def check(dataset: str, root: Path, *, splits: list[str] | None = None, class_map: str | None = None,
          label_space: str = "cityscapes19", workers: int | None = None, progress: bool = False) -> CheckReport:
    """Check dataset ``dataset`` at ``root`` (module docstring). A missing root, an unknown
    split name or an unreadable class map raise :class:`DataError`; everything else is reported."""
    started = time.perf_counter()
    root = Path(root)
    cls = get_dataset_class(dataset)
    options: dict[str, Any] = {"unpaired": "skip", **cls.check_options(root)} if root.is_dir() else {}
    if dataset == "custom":
        if class_map is not None:
            options["class_map"] = class_map
    else:
        if class_map is not None:
            raise DataError(f"--class-map applies to custom datasets only, not to {dataset!r}")
        options["label_space"] = label_space
    report = CheckReport(dataset, root)
    names = list(splits) if splits else list(cls.split_names(root, options)) if root.is_dir() else []
    if splits and root.is_dir():
        known = list(cls.split_names(root, options))
        unknown = [s for s in splits if s not in known and s not in cls.split_aliases]
        if unknown:
            raise DataError(f"{dataset}: unknown split(s) {unknown}; expected some of {known}")
    opened: list[SegDataset] = []
    to_open: list[str | None] = [*names] or [None]  # None: every split the folder has
    for split in to_open:
        try:
            with warnings.catch_warnings():  # listed below as problems instead
                warnings.simplefilter("ignore", StalePreparedWarning)
                found, missing = open_splits(dataset, root, [split] if split else None, **options)
        except EmptySplitError as err:
            report.add("empty_split", str(err).split("; expected")[0])
            for item in err.unpaired:
                report.add("unpaired", item.describe(root))
            continue
        except DataError as err:
            if split is None or not root.is_dir():
                raise
            report.add("layout", str(err))
            continue
        for absent in missing:
            if splits:  # asked for explicitly: its absence is a problem
                report.add("missing_split", str(absent).split("; expected")[0])
        opened += found
    if not opened and not any(report.problems.values()):
        raise DataError(f"{dataset}: no split folder found under {root}; expected {cls.layout}")

    for ds in opened:
        report.label_space = ds.label_space
        for item in ds.unpaired:
            report.add("unpaired", item.describe(root))
        for prepared, raw in ds.stale_prepared:
            report.add("stale_prepared", f"{relative(prepared, root)} is older than {relative(raw, root)}")
        results = parallel_map(_check_sample, list(range(len(ds))), ds, workers=workers, progress=progress,
                               desc=f"check {dataset} {ds.split}")
        for problems, counts in results:
            for kind, message in problems:
                report.add(kind, message)
            if counts is not None:
                report.class_pixels += counts
        report.splits[ds.split] = SplitCounts(len(ds), len(ds) if ds.has_labels else 0)
    report.prepared = _describe_prepared(root, dataset)
    report.seconds = time.perf_counter() - started
    return report


def _check_sample(ds: SegDataset, index: int) -> tuple[list[tuple[str, str]], np.ndarray | None]:
    """Read everything of sample ``index``; return its problems and its class counts in the
    dataset's label space (None when its label could not be read)."""
    sample = ds.samples[index]
    problems: list[tuple[str, str]] = []
    image = None
    try:
        image = read_rgb(sample.image)
    except UnreadableFileError as err:
        problems.append(("unreadable", str(err)))
    chosen = ds.label_source(index)
    counts = None
    for source in sample.labels:
        try:
            space = ds.label_space if source.encoding.supports(ds.label_space) else None
            read = read_label(source, space)
            if image is not None:
                check_same_size(sample.image, image, source.path, read.label)
            if source is chosen:
                counts = read.counts
        except UnreadableFileError as err:
            problems.append(("unreadable", str(err)))
        except LabelValueError as err:
            problems.append(("label_values", str(err)))
        except SizeMismatchError as err:
            problems.append(("size_mismatch", str(err)))
    if sample.depth is not None:
        try:
            depth = read_depth_metres(sample.depth)
            if image is not None:
                check_same_size(sample.image, image, sample.depth, depth)
        except UnreadableFileError as err:
            problems.append(("unreadable", str(err)))
        except SizeMismatchError as err:
            problems.append(("size_mismatch", str(err)))
    if problems:
        counts = None
    return problems, counts


def _describe_prepared(root: Path, dataset: str) -> str:
    try:
        state = read_prepared_state(root)
    except DataError as err:
        return str(err)
    if state is None:
        if (root / SAMPLE_CLASS_STATS).is_file():
            return "RCS statistics present (no manifest: taken as cityscapes19)"
        return f"not prepared (run `udaseg data prepare {dataset} {root}` for train-id files and RCS statistics)"
    if not state.complete:
        return f"the last prepare run did not finish ({relative(root / PREPARED_MANIFEST, root)}); run it again"
    return f"prepared in label space {state.label_space}"
