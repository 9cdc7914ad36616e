"""The common base of every dataset loader, and the file readers they share.

A dataset is the list of samples of **one split** of one dataset folder, read in one **label
space** (``cityscapes19`` by default; ``synthia16``, ``seven`` or a custom space). The contract the
engine relies on:

``len(ds)``
    number of samples.
``ds[i]``
    a dict of tensors: ``"img"`` ``torch.uint8 [3, H, W]`` RGB; ``"label"`` ``torch.int64 [H, W]``
    with ids of the label space and 255 = ignore (absent for unlabelled splits such as test);
    ``"depth"`` ``torch.float32 [H, W]`` in metres (SYNTHIA with ``depth=True``); ``"name"`` the stem
    used for prediction export (Cityscapes ``<city>_<seq>_<frame>``, ACDC/Dark Zurich
    ``<seq>_frame_<n>``, GTA5 ``00001`` …); ``"meta"`` a small dict of strings and numbers (image
    path, city/condition …) that ``torch.utils.data.default_collate`` can batch.
``ds.load(i)``
    the same as numpy arrays for the paired transforms: ``"img"`` ``uint8 [H, W, 3]``, ``"label"``
    ``uint8 [H, W]`` (space ids, 255 ignore), ``"depth"`` ``float32 [H, W]``.
``ds.label_space``, ``ds.name`` (registry name), ``ds.split``, ``ds.root``, ``ds.has_labels``.

How labels are read. A sample can have several label files for the same pixels: the dataset's
*raw* ids (GTA5 palette indices, Cityscapes ``_labelIds``, SYNTHIA class ids …) and a
``*_labelTrainIds.png`` written by ``udaseg data prepare`` (or shipped by ACDC/Dark Zurich). Each
file has a :class:`LabelEncoding` that says which values it may hold and how they translate into
each label space. The loader reads a file whose values already *are* ids of the requested space
when there is one (fast path, e.g. prepared train ids for ``cityscapes19``); otherwise it reads the
raw ids and maps them through the catalog's lookup table — so unprepared folders work too, only a
little slower. ``udaseg_prepared.json`` (written by prepare) records which label space the
prepared files hold; without it they are taken as Cityscapes train ids, which is what DAFormer's
converters write.
A prepared file older than the raw file of its sample (the raw one was edited after prepare) is
*stale*: the raw file is read instead and a :class:`StalePreparedWarning` says so once per dataset.

Every label read is checked: values outside the encoding's id set, an image/label size mismatch
or an unreadable file raise a :class:`~udaseg.errors.DataError` subclass that names the file and
what was expected. Pairing problems (an image without a label, a label without an image) and
empty or missing splits are found when the dataset is constructed.

A family module (``gta5.py``, ``cityscapes.py`` …) subclasses :class:`SegDataset` and implements
:meth:`SegDataset.scan`, which lists the split's files and pairs them with :func:`pair_files`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from PIL import Image

from udaseg.data import catalog
from udaseg.data.catalog import IGNORE_INDEX, LabelSpace
from udaseg.errors import DataError

# Files that ``udaseg data prepare`` writes into a dataset root.
PREPARED_MANIFEST = "udaseg_prepared.json"
SAMPLE_CLASS_STATS = "sample_class_stats.json"
SAMPLES_WITH_CLASS = "samples_with_class.json"
TRAIN_IDS_SUFFIX = "_labelTrainIds"

# Decoding a full Cityscapes frame is ~25 Mpx; keep PIL's bomb check for absurd files only.
Image.MAX_IMAGE_PIXELS = 1 << 30


# ---------------------------------------------------------------------------------------------
# Errors with the details ``udaseg data check`` reports. Every argument but the message has a
# default: a DataLoader worker's error is rebuilt from its message alone (udaseg/errors.py), and
# then keeps its class (the details are lost; the message names the file).
class MissingSplitError(DataError):
    """The folder of a split (or the dataset root) does not exist."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class PairingError(DataError):
    """Images without labels or labels without images, found when a dataset is constructed."""

    def __init__(self, message: str, unpaired: Sequence[Unpaired] = ()):
        super().__init__(message)
        self.unpaired = list(unpaired)


class EmptySplitError(DataError):
    """A split folder exists but holds no usable sample."""

    def __init__(self, message: str, path: Path | None = None, unpaired: Sequence[Unpaired] = ()):
        super().__init__(message)
        self.path = path
        self.unpaired = list(unpaired)


class UnreadableFileError(DataError):
    """A file that cannot be decoded (truncated, corrupt, not an image, wrong channel layout)."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class SizeMismatchError(DataError):
    """An image and its label (or depth map) have different sizes."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class LabelValueError(DataError):
    """A label file holds values outside its encoding's id set."""

    def __init__(self, message: str, path: Path | None = None, values: Sequence[int] = ()):
        super().__init__(message)
        self.path = path
        self.values = list(values)


class StalePreparedWarning(UserWarning):
    """Prepared ``*_labelTrainIds.png`` files older than the raw label files they were made from
    (the raw files were edited after ``udaseg data prepare``): the raw files are read instead."""


# ---------------------------------------------------------------------------------------------
# Readers. Module-level functions so that samples pickle into DataLoader and prepare workers.
def read_rgb(path: Path) -> np.ndarray:
    """An image file as ``uint8 [H, W, 3]`` RGB. Grey, palette and RGBA images are converted;
    16-bit images (grey or RGB, PNG or TIFF) keep the high byte of each value (``v >> 8``).

    Why ``>> 8`` rather than ``round(v / 257)``: it is what OpenCV's ``IMREAD_COLOR`` (the loader
    of mmseg-based tools such as DAFormer) and Pillow's own 16-bit RGB decoder do, so a 16-bit
    image reads exactly as those tools read it, and a 16-bit copy of an 8-bit image (``v * 257``)
    reads back as the 8-bit original. Without this, Pillow's ``convert("RGB")`` clips 16-bit grey
    to 255 (nearly white). Floating-point and 32-bit images have no agreed scale and are refused.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "L", "P", "RGBA", "LA", "PA", "1", "CMYK", "YCbCr", "RGBX", "La", "RGBa"):
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                return np.array(rgb)  # writable (torch.from_numpy warns on read-only arrays)
            mode = im.mode
            array = np.asarray(im)
    except FileNotFoundError:
        raise UnreadableFileError(f"image {path} does not exist; expected an image file", path) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableFileError(
            f"cannot read image {path} ({_why_unreadable(path, err)}); expected a complete, readable image file",
            path) from None
    if mode.startswith("I;16") or (mode == "I" and array.size and array.min() >= 0 and array.max() <= 0xFFFF):
        grey = (array.astype(np.uint16) >> 8).astype(np.uint8)  # mode "I": 16-bit PNGs in older Pillow
        return np.repeat(grey[..., None], 3, axis=2)
    kind = {"F": "32-bit floating point", "I": "32-bit integer"}.get(mode[:1], "multi-channel")
    raise UnreadableFileError(
        f"image {path} is a {kind} image (Pillow mode {mode}); expected an 8- or 16-bit RGB or grey image", path)


def _why_unreadable(path: Path, err: BaseException) -> str:
    """The decoder's complaint, or "0 bytes" for an empty file (the usual cause, and clearer)."""
    try:
        if os.path.getsize(path) == 0:
            return "0 bytes"
    except OSError:
        pass
    return str(err)


def read_index_label(path: Path) -> np.ndarray:
    """A single-channel label image (8-bit grey, palette indices, 16-bit grey) as a 2-D integer
    array. A 3-channel file whose channels are equal (a grey mask saved as RGB) is accepted."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.array(im)
    except FileNotFoundError:
        raise UnreadableFileError(f"label {path} does not exist; expected a label image", path) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableFileError(
            f"cannot read label {path} ({_why_unreadable(path, err)}); expected a complete single-channel label PNG",
            path) from None
    if array.dtype == bool:  # 1-bit masks
        array = array.astype(np.uint8)
    if array.ndim == 3:
        if array.shape[2] >= 3 and (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all():
            array = np.ascontiguousarray(array[..., 0])
        else:
            raise UnreadableFileError(
                f"label {path} is a {mode} image with different channels; expected a single-channel "
                "label image (grey or palette) whose values are class ids", path)
    return array


def read_synthia_label(path: Path) -> np.ndarray:
    """SYNTHIA ``GT/LABELS`` file: 16-bit 3-channel PNG; the class id is the R channel, which is
    the *last* channel of OpenCV's BGR order (the G channel holds the instance id)."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise UnreadableFileError(
            f"cannot read SYNTHIA label {path}; expected a complete 16-bit 3-channel PNG "
            "(class id in R, instance id in G)", path)
    if array.ndim != 3 or array.shape[2] < 3:
        raise UnreadableFileError(
            f"SYNTHIA label {path} has shape {array.shape}; expected a 3-channel PNG with the class id in R",
            path)
    return np.ascontiguousarray(array[..., 2])


def read_depth_metres(path: Path) -> np.ndarray:
    """SYNTHIA ``Depth/Depth`` file: 16-bit single-channel depth in centimetres → float32 metres."""
    array = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    if array is None or array.ndim != 2:
        raise UnreadableFileError(
            f"cannot read depth map {path}; expected a complete 16-bit single-channel PNG in centimetres",
            path)
    return array.astype(np.float32) / 100.0


# ---------------------------------------------------------------------------------------------
def format_ids(ids: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7, 255]`` → ``"0-3, 7, 255"`` for messages."""
    values = sorted(set(int(i) for i in ids))
    runs: list[list[int]] = []  # [first, last] of each run of consecutive ids
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class LabelEncoding:
    """How the values stored in one kind of label file translate into label spaces.

    ``valid_ids`` are the values a well-formed file may hold; ``mappings`` give, per label-space
    name, raw value → space id (values not listed become 255). ``native_space`` names the space
    whose ids the file already holds, if any (such files are read without a lookup).
    """

    def __init__(self, name: str, valid_ids: Iterable[int], mappings: Mapping[str, Mapping[int, int]],
                 native_space: str | None = None):
        self.name = name
        self.valid_ids = frozenset(int(v) for v in valid_ids)
        if any(not 0 <= v < 256 for v in self.valid_ids):
            raise ValueError(f"{name}: label values must lie in 0..255")
        self.valid_mask = np.zeros(256, dtype=bool)
        self.valid_mask[sorted(self.valid_ids)] = True
        self.mappings = {space: dict(m) for space, m in mappings.items()}
        self.native_space = native_space
        self._luts: dict[str, np.ndarray] = {}

    def supports(self, space: LabelSpace) -> bool:
        return space.name in self.mappings

    def lut(self, space: LabelSpace) -> np.ndarray:
        """256-entry uint8 table raw value → id of ``space`` (255 = ignore)."""
        if space.name not in self._luts:
            table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
            for raw, target in self.mappings[space.name].items():
                table[raw] = target
            self._luts[space.name] = table
        return self._luts[space.name]

    def __repr__(self) -> str:
        return f"LabelEncoding({self.name!r}, ids {format_ids(self.valid_ids)})"


def catalog_encoding(scheme: str, description: str) -> LabelEncoding:
    """Encoding of one of the catalog's raw id schemes, mapped into every catalog label space."""
    mappings = {space: catalog.raw_mapping(scheme, space) for space in catalog.LABEL_SPACES}
    native = "cityscapes19" if scheme == "train_id" else None
    return LabelEncoding(description, catalog.valid_raw_ids(scheme), mappings, native)


def space_encoding(space: LabelSpace) -> LabelEncoding:
    """Encoding of files that already hold ids of ``space`` (prepared files of a non-Cityscapes
    space, custom datasets stored as class indices)."""
    ids = range(space.num_classes)
    return LabelEncoding(f"{space.name} ids", [*ids, IGNORE_INDEX], {space.name: {i: i for i in ids}},
                         native_space=space.name)


CITYSCAPES_LABEL_IDS = catalog_encoding("cityscapes_id", "Cityscapes label ids")
CITYSCAPES_TRAIN_IDS = catalog_encoding("train_id", "Cityscapes train ids")
SYNTHIA_CLASS_IDS = catalog_encoding("synthia_id", "SYNTHIA class ids")


@dataclass(frozen=True)
class LabelSource:
    """One label file of a sample: where it is, what its values mean and how to decode it.
    ``prepared`` marks files written by ``udaseg data prepare`` (skipped with ``use_prepared=False``)."""

    path: Path
    encoding: LabelEncoding
    reader: Callable[[Path], np.ndarray] = read_index_label
    prepared: bool = False


@dataclass
class LabelRead:
    """A label read into a label space, with its per-class pixel counts (index 255 = ignore)."""

    label: np.ndarray  # uint8 [H, W]
    counts: np.ndarray  # int64 [256]


def read_label(source: LabelSource, space: LabelSpace | None) -> LabelRead:
    """Read ``source``, check its values against its encoding and map them into ``space``
    (``space`` None: only check; the label and counts are then the raw values)."""
    raw = source.reader(source.path)
    if raw.ndim != 2:
        raise UnreadableFileError(f"label {source.path} has shape {raw.shape}; expected a 2-D id image",
                                  source.path)
    if raw.dtype.kind == "i" and raw.size and raw.min() < 0:
        bad = sorted(set(np.unique(raw[raw < 0]).tolist()))
        raise LabelValueError(_bad_values_message(source, bad), source.path, bad)
    if raw.dtype.kind not in "ui":
        raise UnreadableFileError(f"label {source.path} holds {raw.dtype} values; expected integer ids",
                                  source.path)
    raw_counts = np.bincount(raw.ravel(), minlength=256)
    present = np.flatnonzero(raw_counts)
    in_table = present < 256
    bad_mask = ~in_table
    bad_mask[in_table] = ~source.encoding.valid_mask[present[in_table]]
    if bad_mask.any():
        bad = present[bad_mask].tolist()
        raise LabelValueError(_bad_values_message(source, bad), source.path, bad)
    raw8 = raw if raw.dtype == np.uint8 else raw.astype(np.uint8)
    if space is None:
        return LabelRead(raw8, raw_counts[:256].astype(np.int64))
    lut = source.encoding.lut(space)
    counts = np.bincount(lut, weights=raw_counts[:256], minlength=256).astype(np.int64)
    if source.encoding.native_space == space.name:
        return LabelRead(raw8, counts)
    return LabelRead(lut[raw8], counts)


def _bad_values_message(source: LabelSource, bad: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in bad[:12]) + (f" … ({len(bad)} values)" if len(bad) > 12 else "")
    return (f"label {source.path} holds values {shown} outside the valid {source.encoding.name} "
            f"{{{format_ids(source.encoding.valid_ids)}}}")


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareJob:
    """One label file for prepare: read ``source``, write its train ids to ``out`` (None: only
    statistics), and count its classes into the statistics when ``count``."""

    source: LabelSource
    out: Path | None
    count: bool


@dataclass
class SampleFiles:
    """The files of one sample. ``labels`` lists every label file found for it (raw ids first,
    then train ids); ``meta`` holds only strings and numbers (it is batched by default_collate)."""

    name: str
    image: Path
    labels: tuple[LabelSource, ...] = ()
    depth: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unpaired:
    """A file whose partner is missing: ``expected`` says which file should be there."""

    path: Path
    expected: str

    def describe(self, root: Path | None = None) -> str:
        return f"{relative(self.path, root)}: {self.expected}"


@dataclass
class SplitScan:
    """What :meth:`SegDataset.scan` found: the paired samples and the files left without partner."""

    samples: list[SampleFiles]
    unpaired: list[Unpaired] = field(default_factory=list)
    folder: Path | None = None  # the split's image folder, for messages


def relative(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` in POSIX form when it lies under it (portable file names)."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def pair_files(
    images: Iterable[tuple[str, Path, str]],
    labels: Mapping[str, Sequence[LabelSource]] | None,
    *,
    expected_label: Callable[[Path], str],
    expected_image: Callable[[str], str],
    labels_need_images: bool = True,
    make_sample: Callable[[str, Path, tuple[LabelSource, ...]], SampleFiles] = SampleFiles,
) -> tuple[list[SampleFiles], list[Unpaired]]:
    """Pair images with labels by key.

    ``images`` yields ``(image_key, image_path, label_key)``; several images may share one label
    (Foggy/Rain Cityscapes). ``labels`` maps label key → its label files, or is None for an
    unlabelled split. Labels no image refers to are reported when ``labels_need_images``.
    ``make_sample(image_key, image_path, label_sources)`` builds each sample (by default a plain
    ``SampleFiles``).
    """
    samples: list[SampleFiles] = []
    unpaired: list[Unpaired] = []
    used: set[str] = set()
    for image_key, image_path, label_key in sorted(images, key=lambda t: str(t[1])):
        if labels is None:
            samples.append(make_sample(image_key, image_path, ()))
            continue
        sources = labels.get(label_key)
        if not sources:
            unpaired.append(Unpaired(image_path, f"image without label (expected {expected_label(image_path)})"))
            continue
        used.add(label_key)
        samples.append(make_sample(image_key, image_path, tuple(sources)))
    if labels is not None and labels_need_images:
        for key in sorted(set(labels) - used):
            unpaired.append(Unpaired(labels[key][0].path, f"label without image (expected {expected_image(key)})"))
    return samples, unpaired


def files_with_suffix(folder: Path, suffix: str, *, depth: int = 1) -> list[Path]:
    """Files under ``folder`` whose names end with ``suffix``, ``depth`` levels down
    (1 = directly inside, 2 = inside its sub-folders …), sorted."""
    pattern = "/".join(["*"] * (depth - 1) + [f"*{suffix}"])
    return sorted(p for p in folder.glob(pattern) if p.is_file())


@dataclass(frozen=True)
class PreparedState:
    """What ``udaseg_prepared.json`` says about the files prepare wrote under a root: the label
    space of the ``*_labelTrainIds.png`` files and statistics, and whether the run finished.
    ``complete`` is False while prepare is switching a root to another label space (the prepared
    files are then a mix and are not read)."""

    label_space: str
    complete: bool = True


def read_prepared_state(root: Path) -> PreparedState | None:
    """The manifest of ``root``, or None when there is none: prepared files without a manifest are
    Cityscapes train ids, which is what DAFormer's converters write."""
    manifest = root / PREPARED_MANIFEST
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        return PreparedState(str(data["label_space"]), data.get("status", "complete") == "complete")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"cannot read {manifest} ({err}); expected the JSON manifest written by "
                        "`udaseg data prepare` (delete it and run prepare again)") from None


def read_prepared_space(root: Path) -> str | None:
    """The label space of the statistics and train-id files prepare wrote under ``root`` (None: no
    manifest). Raises when the last prepare run did not finish."""
    state = read_prepared_state(root)
    if state is not None and not state.complete:
        raise DataError(f"{root / PREPARED_MANIFEST}: the last `udaseg data prepare` run on {root} did not finish; "
                        "run it again (with --force if it refused to overwrite files)")
    return state.label_space if state is not None else None


def parallel_map(function: Callable[[Any, Any], Any], items: Sequence[Any], context: Any, *,
                 workers: int | None = None, progress: bool = False, desc: str = "") -> list[Any]:
    """``[function(context, item) for item in items]``, over worker processes when it pays off.
    ``context`` (e.g. a dataset) is sent once per worker, not once per item."""
    from tqdm.auto import tqdm

    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(items) < 4 * workers:
            results = []
            for item in items:
                results.append(function(context, item))
                bar.update()
            return results
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, len(items) // (workers * 8))
        with ProcessPoolExecutor(workers, initializer=_set_worker_context, initargs=(function, context)) as pool:
            results = []
            for result in pool.map(_call_in_worker, items, chunksize=chunk):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()


_WORKER_CONTEXT: tuple[Callable, Any] | None = None


def _set_worker_context(function: Callable, context: Any) -> None:
    global _WORKER_CONTEXT
    cv2.setNumThreads(1)  # one process per core already
    _WORKER_CONTEXT = (function, context)


def _call_in_worker(item: Any) -> Any:
    assert _WORKER_CONTEXT is not None, "the pool's initializer sets the worker context"
    function, context = _WORKER_CONTEXT
    return function(context, item)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(tmp)`` on a temporary name in the same folder, then rename.
    Readers never see a half-written file, and the temporary file is removed on any failure."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def to_tensors(sample: Mapping[str, Any]) -> dict[str, Any]:
    """numpy sample (``load`` / transform output) → the tensor dict of the dataset contract."""
    out = dict(sample)
    out["img"] = torch.from_numpy(np.ascontiguousarray(sample["img"].transpose(2, 0, 1)))
    for key in ("label", "pseudo_label"):
        if key in sample:
            out[key] = torch.from_numpy(sample[key].astype(np.int64))
    if "depth" in sample:
        out["depth"] = torch.from_numpy(np.ascontiguousarray(sample["depth"], dtype=np.float32))
    if "valid_pseudo" in sample:
        out["valid_pseudo"] = torch.from_numpy(np.ascontiguousarray(sample["valid_pseudo"], dtype=np.float32))
    return out


def parse_choice(value: str | Iterable[str], allowed: Sequence[str], option: str, dataset: str,
                 present: Sequence[str] | None = None) -> tuple[str, ...]:
    """An option that takes one value, several, or ``"all"`` (→ ``present`` or ``allowed``)."""
    if isinstance(value, str):
        if value == "all":
            return tuple(present if present is not None else allowed)
        values = [v.strip() for v in value.split(",")]
    else:
        values = [str(v) for v in value]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise DataError(f"{dataset}: unknown {option} {unknown or values!r}; expected one or more of "
                        f"{list(allowed)} or 'all'")
    return tuple(dict.fromkeys(values))


# ---------------------------------------------------------------------------------------------
class SegDataset(torch.utils.data.Dataset):
    """Base class of the dataset families (see the module docstring for the contract).

    Subclasses set the class attributes and implement :meth:`scan`; their ``__init__`` takes the
    family's options as keyword-only arguments, stores them, then calls ``super().__init__``.
    Common options: ``label_space`` (a name from the catalog or a :class:`LabelSpace`),
    ``use_prepared`` (read ``*_labelTrainIds.png`` when they hold the requested space; False reads
    the raw ids), ``unpaired`` (``"error"``: unpaired files raise; ``"skip"``: they are left out and
    listed in ``ds.unpaired``).
    """

    name: ClassVar[str] = ""  # set by @register_dataset
    # The split lists are class defaults; a dataset whose splits come from its files (custom) sets them per instance.
    splits: tuple[str, ...] = ("train", "val")
    labelled_splits: tuple[str, ...] = ("train", "val")
    split_aliases: ClassVar[dict[str, str]] = {}
    # A sentence used in messages about a missing or malformed root.
    layout: ClassVar[str] = ""
    # prepare: write *_labelTrainIds.png beside the raw labels, and count statistics over these splits.
    writes_train_ids: ClassVar[bool] = False
    stats_splits: tuple[str, ...] = ("train",)

    def __init__(self, root: str | Path, split: str = "train", *, label_space: str | LabelSpace = "cityscapes19",
                 use_prepared: bool = True, unpaired: str = "error"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingSplitError(f"dataset root {self.root} does not exist; expected {self.layout}", self.root)
        self.split = self.resolve_split(split)
        self.label_space = label_space if isinstance(label_space, LabelSpace) else self._space(label_space)
        if unpaired not in ("error", "skip"):
            raise DataError(f"{self.name}: unpaired={unpaired!r}; expected 'error' or 'skip'")
        self.use_prepared = bool(use_prepared)
        self.prepared_state = read_prepared_state(self.root)
        scan = self.scan()
        self.unpaired = scan.unpaired
        self.folder = scan.folder or self.root
        if scan.unpaired and unpaired == "error":
            shown = "\n  ".join(u.describe(self.root) for u in scan.unpaired[:10])
            more = f"\n  … and {len(scan.unpaired) - 10} more" if len(scan.unpaired) > 10 else ""
            raise PairingError(
                f"{self.name} split {self.split!r} under {self.root}: {len(scan.unpaired)} unpaired file(s)"
                f"\n  {shown}{more}\n(pass unpaired='skip' to leave them out; `udaseg data check` lists all)",
                scan.unpaired)
        if not scan.samples:
            raise EmptySplitError(
                f"{self.name} split {self.split!r}: no usable samples in {self.folder}"
                + (f" ({len(scan.unpaired)} unpaired file(s))" if scan.unpaired else "")
                + f"; expected {self.layout}", self.folder, scan.unpaired)
        self.samples = scan.samples
        self.has_labels = bool(self.samples[0].labels)
        self._label_choice = [self._choose_label(s) for s in self.samples] if self.has_labels else []
        self.stale_prepared = self._avoid_stale_prepared()

    # -- hooks ----------------------------------------------------------------------------------
    def scan(self) -> SplitScan:
        """List and pair the files of ``self.split`` (raise :class:`MissingSplitError` when the
        split's image folder is missing, :class:`DataError` for other layout problems)."""
        raise NotImplementedError

    def meta(self, sample: SampleFiles) -> dict[str, Any]:
        return {"dataset": self.name, "split": self.split, "image": str(sample.image), **sample.meta}

    # -- helpers for subclasses ------------------------------------------------------------------
    def resolve_split(self, split: str) -> str:
        split = self.split_aliases.get(split, split)
        if split not in self.splits:
            raise DataError(f"{self.name}: unknown split {split!r}; expected one of {list(self.splits)}")
        return split

    def require_split_dir(self, folder: Path) -> Path:
        if not folder.is_dir():
            raise MissingSplitError(
                f"{self.name}: split folder {folder} does not exist (split {self.split!r}); expected {self.layout}",
                folder)
        return folder

    def require_dir(self, folder: Path, what: str) -> Path:
        if not folder.is_dir():
            raise DataError(f"{self.name}: folder {folder} does not exist; expected {what}")
        return folder

    def prepared_encoding(self) -> LabelEncoding | None:
        """Encoding of the ``*_labelTrainIds.png`` files prepare writes for this root (None while a
        prepare run that changes their label space has not finished: they are then not read)."""
        state = self.prepared_state
        if state is None or (state.complete and state.label_space == "cityscapes19"):
            return CITYSCAPES_TRAIN_IDS
        if not state.complete:
            return None
        return space_encoding(self._space(state.label_space))

    def flat_labels(self, labels_dir: Path, raw: Callable[[Path], LabelSource]) -> dict[str, list[LabelSource]]:
        """Label sources of a folder of raw ``<key>.png`` labels beside the ``<key>_labelTrainIds.png``
        files prepare writes there: per key the raw file first (``raw(path)`` says how to read it),
        then the prepared one while it is readable. A key with only a prepared file (its raw label
        deleted) is still a labelled sample."""
        prepared = self.prepared_encoding()
        labels: dict[str, list[LabelSource]] = {}
        for path in files_with_suffix(labels_dir, ".png"):
            if not path.stem.endswith(TRAIN_IDS_SUFFIX):
                labels.setdefault(path.stem, []).insert(0, raw(path))
            elif prepared is not None:
                key = path.stem[: -len(TRAIN_IDS_SUFFIX)]
                labels.setdefault(key, []).append(LabelSource(path, prepared, prepared=True))
        return labels

    def train_ids_path(self, raw: Path) -> Path:
        """Where prepare writes the train ids of raw label file ``raw``:
        ``x_labelIds.png`` → ``x_labelTrainIds.png``, ``x.png`` → ``x_labelTrainIds.png``."""
        if raw.name.endswith("_labelIds.png"):
            return raw.with_name(raw.name[: -len("_labelIds.png")] + "_labelTrainIds.png")
        return raw.with_name(raw.stem + TRAIN_IDS_SUFFIX + ".png")

    @classmethod
    def check_options(cls, root: Path) -> dict[str, Any]:
        """Options ``udaseg data check`` opens the dataset with, so that it reads every file."""
        return {}

    @classmethod
    def split_names(cls, root: Path, options: Mapping[str, Any], *, labelled: bool = False) -> tuple[str, ...]:
        """The splits this family can have (``labelled``: those with labels)."""
        return cls.labelled_splits if labelled else cls.splits

    def prepare_jobs(self) -> list[PrepareJob]:
        """The label files ``udaseg data prepare`` converts and/or counts for this split."""
        count = self.split in self.stats_splits
        return [self.prepare_job(sample.labels, count) for sample in self.samples]

    def prepare_job(self, sources: Sequence[LabelSource], count: bool) -> PrepareJob:
        """Convert from the original label file (never from a previous prepare's output); when
        only prepared files are left, just count them."""
        originals = [s for s in sources if not s.prepared and s.encoding.supports(self.label_space)]
        if originals:
            native = [s for s in originals if s.encoding.native_space == self.label_space.name]
            source = (native or originals)[0]
            return PrepareJob(source, self.train_ids_path(source.path) if self.writes_train_ids else None, count)
        return PrepareJob(self._choose_label(SampleFiles("", sources[0].path, tuple(sources))), None, count)

    def _space(self, name: str) -> LabelSpace:
        try:
            return catalog.get_label_space(name)
        except KeyError as err:
            raise DataError(f"{self.name}: {err.args[0]}") from None

    def _choose_label(self, sample: SampleFiles) -> LabelSource:
        usable = [s for s in sample.labels if s.encoding.supports(self.label_space)
                  and (self.use_prepared or not s.prepared)]
        if not usable:
            found = ", ".join(f"{relative(s.path, self.root)} ({s.encoding.name})" for s in sample.labels)
            raise DataError(
                f"{self.name}: no label file of {sample.image} can be read in label space "
                f"{self.label_space.name!r}: found {found}; expected the raw label file (or run "
                f"`udaseg data prepare {self.name} {self.root} --label-space {self.label_space.name} --force`)")
        native = [s for s in usable if s.encoding.native_space == self.label_space.name]
        return (native or usable)[0]

    def _avoid_stale_prepared(self) -> list[tuple[Path, Path]]:
        """``(prepared file, raw file)`` for every chosen prepared label file that is older than a raw
        label file of its sample: the raw file was edited after ``udaseg data prepare``, so the
        prepared one no longer says the same. Those samples read the raw file instead, and one
        :class:`StalePreparedWarning` names the first pair and the command that refreshes them.

        Why read the raw file and warn rather than raise: prepare always converts from the raw file,
        so reading it gives exactly what a fresh prepare would (only a little slower); and the test
        is by modification time, which a copy that does not keep times (``cp`` without ``-p``) can
        also trip, so a false alarm must not stop a run. One ``stat`` per file; prepare refreshes the
        time of a prepared file it finds unchanged, so ``--force`` silences the warning for good.
        """
        stale: list[tuple[Path, Path]] = []
        for i, (sample, chosen) in enumerate(zip(self.samples, self._label_choice)):
            if not chosen.prepared:
                continue
            originals = [s for s in sample.labels if not s.prepared and s.encoding.supports(self.label_space)]
            try:
                made = os.stat(chosen.path).st_mtime_ns
                newer = [s for s in originals if os.stat(s.path).st_mtime_ns > made]
            except OSError:  # gone since the scan: load() names it
                continue
            if newer:
                stale.append((chosen.path, newer[0].path))
                self._label_choice[i] = newer[0]
        if stale:
            prepared, raw = stale[0]
            option = "" if self.label_space.name == "cityscapes19" else f" --label-space {self.label_space.name}"
            warnings.warn(StalePreparedWarning(
                f"{self.name} split {self.split!r} under {self.root}: {len(stale)} prepared label file(s) are "
                f"older than the raw label they were made from (e.g. {relative(prepared, self.root)} is older "
                f"than {relative(raw, self.root)}); reading the raw labels instead. Refresh them and the RCS "
                f"statistics with `udaseg data prepare {self.name} {self.root}{option} --force`"), stacklevel=3)
        return stale

    # -- the contract ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def label_source(self, index: int) -> LabelSource | None:
        """The label file :meth:`load` reads for sample ``index`` (None for unlabelled splits)."""
        return self._label_choice[index] if self.has_labels else None

    def load(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        img = read_rgb(sample.image)
        out: dict[str, Any] = {"img": img, "name": sample.name, "meta": self.meta(sample)}
        if self.has_labels:
            source = self._label_choice[index]
            label = read_label(source, self.label_space).label
            check_same_size(sample.image, img, source.path, label)
            out["label"] = label
        if sample.depth is not None:
            depth = read_depth_metres(sample.depth)
            check_same_size(sample.image, img, sample.depth, depth)
            out["depth"] = depth
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        return to_tensors(self.load(index))

    def index_by_label_file(self) -> dict[str, list[int]]:
        """Relative path (POSIX) of every label file → the sample indices that use it; used to map
        prepare's statistics (which name label files) back to samples."""
        table: dict[str, list[int]] = {}
        for i, sample in enumerate(self.samples):
            for source in sample.labels:
                table.setdefault(relative(source.path, self.root), []).append(i)
        return table

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(getattr(self, 'root', ''))!r}, split={getattr(self, 'split', '')!r}, "
                f"label_space={getattr(getattr(self, 'label_space', None), 'name', '')!r}, "
                f"samples={len(getattr(self, 'samples', ()))})")


def check_same_size(image_path: Path, image: np.ndarray, other_path: Path, other: np.ndarray) -> None:
    if image.shape[:2] != other.shape[:2]:
        (h, w), (oh, ow) = image.shape[:2], other.shape[:2]
        raise SizeMismatchError(
            f"image {image_path} is {w}x{h} (WxH) but {other_path} is {ow}x{oh}; expected the same size",
            other_path)
