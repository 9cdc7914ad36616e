"""``udaseg data prepare DATASET ROOT``: train-id label files and Rare Class Sampling statistics.

What it does, per dataset family:

* **GTA5, SYNTHIA, Cityscapes** (and Foggy/Rain Cityscapes, whose labels are Cityscapes' gtFine):
  writes ``*_labelTrainIds.png`` (8-bit grey) beside each raw label, holding ids of the chosen
  label space (``cityscapes19`` by default) with 255 = ignore — DAFormer's converters
  (``tools/convert_datasets/{gta,synthia,cityscapes}.py``) write the same files.
* **ACDC, Dark Zurich** ship train ids already; **Mapillary** and **custom** datasets are mapped
  on the fly. For these, only the statistics are written.

Statistics, from the full-resolution labels of the family's statistics split (GTA5/SYNTHIA: all;
Cityscapes: ``train``; ACDC: ``train``, all conditions; Dark Zurich: ``val``; Mapillary:
``training``; custom: the class map's ``stats_split``), in the ROOT folder:

``sample_class_stats.json``  a list with one dict per label file,
                             ``{"<class id>": pixel count, ..., "file": <label path>}``, listing only
                             classes with a count > 0 (255 is never listed);
``samples_with_class.json``  ``{"<class id>": [[<label path>, count], ...]}``;
``udaseg_prepared.json``     the label space of both and of the train-id files.

Unlike DAFormer's converters, label paths are **relative to ROOT** (POSIX separators), so a
prepared dataset can be moved or mounted elsewhere. ``file`` names the train-id file where one is
written, otherwise the label file the statistics were read from.

Safety: running prepare again leaves identical files alone (pixel content is compared, not
bytes); a file whose content differs is refused with a :class:`~udaseg.errors.DataError` naming it,
unless ``force``. Every file is written to a temporary name in its folder and renamed, so no
half-written file is ever visible, and temporary files are removed on failure. While a run
changes the label space of a root, the manifest marks it as unfinished and loaders read the raw
labels instead of the prepared ones. Label files are processed in parallel worker processes.

Staleness: a raw label edited after prepare leaves its train-id file older than its source;
loaders then read the raw file and warn (:class:`~udaseg.data.base.StalePreparedWarning`), and
``udaseg data check`` lists it, until prepare runs again (``--force`` when the content changed).
Every train-id file prepare writes or finds unchanged is given a time no older than its source.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from udaseg.data.base import (
    PREPARED_MANIFEST,
    SAMPLE_CLASS_STATS,
    SAMPLES_WITH_CLASS,
    PrepareJob,
    StalePreparedWarning,
    atomic_write,
    parallel_map,
    read_label,
    read_prepared_state,
    relative,
)
from udaseg.data.catalog import IGNORE_INDEX, LabelSpace
from udaseg.data.registry import open_splits
from udaseg.errors import DataError

MANIFEST_FORMAT = 1


@dataclass
class PrepareReport:
    """What a prepare run did; ``describe()`` is what the CLI prints."""

    dataset: str
    root: Path
    label_space: str
    splits: list[str]
    label_files: dict[str, int] = field(default_factory=dict)  # status → count
    statistics_files: dict[str, str] = field(default_factory=dict)  # file name → status
    counted: int = 0
    class_pixels: dict[int, int] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    seconds: float = 0.0

    def describe(self) -> str:
        lines = [f"prepared {self.dataset} at {self.root} (label space {self.label_space}; "
                 f"splits {', '.join(self.splits)}) in {self.seconds:.1f} s"]
        if self.label_files:
            parts = ", ".join(f"{n} {status}" for status, n in self.label_files.items() if n)
            lines.append(f"  train-id label files (*_labelTrainIds.png): {parts or 'none'}")
        else:
            lines.append("  train-id label files: none needed (labels are read directly)")
        stats = ", ".join(f"{name} ({status})" for name, status in self.statistics_files.items())
        lines.append(f"  statistics of {self.counted} label file(s): {stats}")
        total = sum(self.class_pixels.values())
        if total:
            present = sorted(self.class_pixels, key=lambda c: self.class_pixels[c])
            rare = ", ".join(f"{self._name(c)} {100 * self.class_pixels[c] / total:.2g}%" for c in present[:5])
            lines.append(f"  classes present: {len(present)} of {len(self.class_names)}; rarest: {rare}")
        return "\n".join(lines)

    def _name(self, c: int) -> str:
        return self.class_names[c] if c < len(self.class_names) else str(c)


def prepare(dataset: str, root: Path, *, force: bool = False, label_space: str = "cityscapes19",
            progress: bool = True, workers: int | None = None, **options: Any) -> PrepareReport:
    """Write train-id files and RCS statistics for dataset ``dataset`` at ``root`` (module docstring).

    ``options`` are dataset options (e.g. ``class_map=`` for custom datasets, ``conditions=``).
    For ``custom`` the label space is the class map's; ``label_space`` is then ignored unless it
    names another space, which is an error.
    """
    started = time.perf_counter()
    root = Path(root)
    if dataset == "custom":
        if label_space not in (None, "cityscapes19"):
            options["label_space"] = label_space
    else:
        options["label_space"] = label_space
    with warnings.catch_warnings():  # prepare reads the raw files and refreshes stale prepared ones
        warnings.simplefilter("ignore", StalePreparedWarning)
        datasets, _ = open_splits(dataset, root, labelled=True, **options)
    space: LabelSpace = datasets[0].label_space
    jobs = _unique_jobs(job for ds in datasets for job in ds.prepare_jobs())
    report = PrepareReport(dataset, root, space.name, [ds.split for ds in datasets],
                           class_names=space.classes)

    state = read_prepared_state(root)
    writes = any(job.out is not None for job in jobs)
    switching = (state.label_space if state else "cityscapes19") != space.name
    if writes and switching:  # until this run finishes, prepared files are a mix: loaders must not read them
        _write_json(root / PREPARED_MANIFEST, _manifest(space.name, complete=False), force=True)

    results = parallel_map(_run_job, jobs, (space, force), workers=workers, progress=progress,
                           desc=f"prepare {dataset}")
    if writes:
        report.label_files = {status: sum(1 for s, _ in results if s == status)
                              for status in ("written", "unchanged", "overwritten", "refused")}
    refused = [job.out for job, (status, _) in zip(jobs, results) if status == "refused" and job.out is not None]
    if refused:
        shown = "\n  ".join(relative(p, root) for p in refused[:10])
        more = f"\n  … and {len(refused) - 10} more" if len(refused) > 10 else ""
        raise DataError(
            f"prepare {dataset}: {len(refused)} existing label file(s) under {root} differ from what prepare "
            f"would write in label space {space.name!r}:\n  {shown}{more}\n"
            "They were left alone (statistics not written). Re-run with --force to overwrite them.")

    per_file: list[dict[str, Any]] = []
    for job, (_, counts) in zip(jobs, results):
        if not job.count:
            continue
        entry: dict[str, Any] = {str(c): int(counts[c]) for c in np.flatnonzero(counts) if c != IGNORE_INDEX}
        entry["file"] = relative(job.out or job.source.path, root)
        per_file.append(entry)
    per_file.sort(key=lambda e: e["file"])
    if not per_file:
        raise DataError(f"prepare {dataset}: no labelled image in the statistics split(s) "
                        f"{', '.join(datasets[0].stats_splits)} under {root}; expected at least one")
    report.counted = len(per_file)
    samples_with_class: dict[str, list[list[Any]]] = {}
    for entry in per_file:
        for key, count in entry.items():
            if key != "file":
                samples_with_class.setdefault(key, []).append([entry["file"], count])
                report.class_pixels[int(key)] = report.class_pixels.get(int(key), 0) + count
    samples_with_class = dict(sorted(samples_with_class.items(), key=lambda kv: int(kv[0])))

    for name, content in ((SAMPLE_CLASS_STATS, per_file), (SAMPLES_WITH_CLASS, samples_with_class)):
        report.statistics_files[name] = _write_json(root / name, content, force=force)
    # Label files and statistics are now verified (or forced): the manifest just records that.
    report.statistics_files[PREPARED_MANIFEST] = _write_json(
        root / PREPARED_MANIFEST, _manifest(space.name, complete=True), force=True)
    report.seconds = time.perf_counter() - started
    return report


def _unique_jobs(jobs) -> list[PrepareJob]:
    seen: dict[Path, PrepareJob] = {}
    for job in jobs:
        seen.setdefault(job.source.path, job)
    return list(seen.values())


def _manifest(space: str, complete: bool) -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "label_space": space, "status": "complete" if complete else "in progress"}


def _run_job(context: tuple[LabelSpace, bool], job: PrepareJob) -> tuple[str, np.ndarray]:
    """Read and map one label; write its train-id file when needed. Returns (status, class counts)."""
    space, force = context
    read = read_label(job.source, space)
    if job.out is None:
        return "counted", read.counts
    status = "written"
    if job.out.exists():
        if _same_label(job.out, read.label):
            _mark_fresh(job.out, job.source.path)
            return "unchanged", read.counts
        if not force:
            return "refused", read.counts
        status = "overwritten"
    atomic_write(job.out, lambda tmp: _write_png(tmp, read.label))
    _mark_fresh(job.out, job.source.path)
    return status, read.counts


def _mark_fresh(out: Path, source: Path) -> None:
    """A train-id file older than its source (unchanged after the raw file was touched or edited
    back, or a source time ahead of the clock): give it the current time, so that loaders stop
    taking it for stale (``SegDataset`` compares modification times)."""
    try:
        made, edited = os.stat(out).st_mtime_ns, os.stat(source).st_mtime_ns
        if made < edited:
            now = max(time.time_ns(), edited)  # a source time in the future (clock skew) too
            os.utime(out, ns=(now, now))
    except OSError:  # e.g. a read-only copy: loaders keep reading the raw file, with their warning
        pass


def _same_label(path: Path, label: np.ndarray) -> bool:
    try:
        with Image.open(path) as im:
            existing = np.asarray(im)
    except (OSError, SyntaxError, ValueError):
        return False  # unreadable (e.g. truncated): different
    return existing.shape == label.shape and existing.dtype == label.dtype and np.array_equal(existing, label)


def _write_png(path: Path, label: np.ndarray) -> None:
    if not cv2.imwrite(str(path), label):
        raise DataError(f"cannot write {path}; expected a writable dataset folder")


def _write_json(path: Path, content: Any, *, force: bool) -> str:
    """Write ``content`` as JSON unless identical content is there; refuse differing content
    unless ``force``. Returns the status."""
    if path.exists():
        try:
            if json.loads(path.read_text()) == content:
                return "unchanged"
        except (OSError, ValueError):
            pass
        if not force:
            raise DataError(f"{path} exists with different content; re-run with --force to overwrite it")
        status = "overwritten"
    else:
        status = "written"
    text = json.dumps(content, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return status
