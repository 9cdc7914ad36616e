"""Custom datasets: a folder of images and label PNGs described by a YAML *class map*.

The class map (``ROOT/class_map.yaml`` unless ``class_map=`` / ``--class-map`` names another file)
says what the classes are, how raw label values map to them, and where each split's files are::

    name: inria_buildings               # name of the label space (required with `classes`)
    classes: [background, building]     # class names in id order (at most 255)
    palette: [[0, 0, 0], [255, 255, 255]]   # optional, one RGB colour per class
    id_map: {0: 0, 255: 1}              # raw value in the label files -> class id (default: identity)
    ignore_index: null                  # raw value meaning "not labelled" (default 255; null: none)
    image_suffix: .tif                  # how image file names end (default .png)
    label_suffix: .png                  # how label file names end (default .png)
    splits:
      train: {images: Images, labels: SegmentationClass, list: lists/train.txt}
      val:   {images: Images, labels: SegmentationClass, list: lists/val.txt}
      test:  {images: test/Images}      # no `labels`: an image-only split
    stats_split: train                  # split counted by `udaseg data prepare` (default: train)

Folders and list files are relative to ROOT. A sample's name is its image file name without
``image_suffix``; its label is ``<labels>/<name><label_suffix>``. ``list`` (optional) names the
samples of the split, one per line (a file name or a name without suffix); without it, every
image of the folder belongs to the split.

A dataset in a catalog label space can reuse the catalog tables instead of ``classes``/``id_map``:
``label_space: cityscapes19`` with ``id_scheme: cityscapes_id`` (or ``train_id``, ``synthia_id``,
``mapillary_id``) reads Cityscapes-style label ids in any folder layout.

Label values not in ``id_map`` (nor ``ignore_index``) are reported as errors, like for the real
datasets. Examples: ``configs/datasets/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from udaseg.data import catalog
from udaseg.data.base import (
    DataError,
    LabelEncoding,
    LabelSource,
    SegDataset,
    SplitScan,
    Unpaired,
    catalog_encoding,
    files_with_suffix,
    pair_files,
)
from udaseg.data.catalog import IGNORE_INDEX, LabelSpace
from udaseg.data.registry import register_dataset

DEFAULT_CLASS_MAP = "class_map.yaml"
_TOP_KEYS = {"name", "classes", "palette", "id_map", "id_scheme", "label_space", "ignore_index", "image_suffix",
             "label_suffix", "splits", "stats_split", "eval_subsets", "description"}
_SPLIT_KEYS = {"images", "labels", "list"}


@dataclass(frozen=True)
class SplitFolders:
    images: str
    labels: str | None
    list: str | None


@dataclass(frozen=True)
class ClassMap:
    path: Path
    space: LabelSpace
    encoding: LabelEncoding
    image_suffix: str
    label_suffix: str
    splits: dict[str, SplitFolders]
    stats_split: str | None

    @property
    def labelled_splits(self) -> tuple[str, ...]:
        return tuple(name for name, folders in self.splits.items() if folders.labels is not None)


def find_class_map(root: Path, class_map: str | Path | None) -> Path:
    path = Path(class_map) if class_map is not None else Path(root) / DEFAULT_CLASS_MAP
    if not path.is_file():
        raise DataError(f"custom dataset: class map {path} does not exist; expected a YAML class map "
                        f"(ROOT/{DEFAULT_CLASS_MAP} or --class-map FILE; see docs/datasets.md)")
    return path


def load_class_map(path: str | Path) -> ClassMap:
    """Parse and validate a class map; every problem names the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read class map {path} ({err})") from None

    def fail(key: str, expected: str) -> DataError:
        return DataError(f"class map {path}: key {key!r}: expected {expected}")

    if not isinstance(data, dict):
        raise DataError(f"class map {path}: expected a YAML mapping with keys such as classes, splits")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise DataError(f"class map {path}: unknown key(s) {unknown}; expected some of {sorted(_TOP_KEYS)}")

    if "classes" in data:
        if "label_space" in data:
            raise fail("label_space", "either `classes` or `label_space`, not both")
        classes = data["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise fail("classes", "a non-empty list of class names")
        if len(classes) > 255:
            raise fail("classes", "at most 255 classes (labels are 8-bit, 255 = ignore)")
        if not isinstance(data.get("name"), str):
            raise fail("name", "a name for the label space (a string)")
        palette = data.get("palette") or _default_palette(len(classes))
        if (not isinstance(palette, list) or len(palette) != len(classes)
                or not all(isinstance(c, list) and len(c) == 3 for c in palette)):
            raise fail("palette", f"{len(classes)} RGB triples, one per class")
        subsets = data.get("eval_subsets") or {"mIoU": list(range(len(classes)))}
        space = LabelSpace(data["name"], tuple(classes), tuple((int(c[0]), int(c[1]), int(c[2])) for c in palette),
                           {k: tuple(int(i) for i in v) for k, v in subsets.items()})
    elif "label_space" in data:
        try:
            space = catalog.get_label_space(str(data["label_space"]))
        except KeyError:
            raise fail("label_space", f"one of {sorted(catalog.LABEL_SPACES)}") from None
    else:
        raise fail("classes", "a list of class names (or `label_space` naming a catalog space)")

    ignore = data.get("ignore_index", IGNORE_INDEX)
    if ignore is not None and (not isinstance(ignore, int) or not 0 <= ignore <= 255):
        raise fail("ignore_index", "a raw label value 0-255 or null")
    if "id_scheme" in data:
        if "id_map" in data:
            raise fail("id_scheme", "either `id_map` or `id_scheme`, not both")
        scheme = data["id_scheme"]
        if scheme not in catalog.RAW_ID_SCHEMES or space.name not in catalog.LABEL_SPACES:
            raise fail("id_scheme", f"one of {list(catalog.RAW_ID_SCHEMES)}, with `label_space`")
        encoding = catalog_encoding(scheme, f"{scheme} ids")
    else:
        id_map = data.get("id_map")
        if id_map is None:
            id_map = {i: i for i in range(space.num_classes)}
        if not isinstance(id_map, Mapping) or not id_map:
            raise fail("id_map", "a mapping raw value -> class id")
        mapping: dict[int, int] = {}
        for raw, target in id_map.items():
            if not (isinstance(raw, int) and 0 <= raw <= 255):
                raise fail("id_map", f"raw values 0-255 (got {raw!r})")
            if not (isinstance(target, int) and (0 <= target < space.num_classes or target == IGNORE_INDEX)):
                raise fail("id_map", f"class ids 0-{space.num_classes - 1} or 255 (got {raw!r}: {target!r})")
            mapping[raw] = target
        if ignore is not None and ignore in mapping:
            raise fail("ignore_index", f"a value not in id_map ({ignore} is mapped there; set ignore_index: null)")
        valid = set(mapping) | ({ignore} if ignore is not None else set())
        encoding = LabelEncoding(f"label values of {path.name}", valid, {space.name: mapping})

    splits_data = data.get("splits")
    if not isinstance(splits_data, dict) or not splits_data:
        raise fail("splits", "a mapping split name -> {images: FOLDER, labels: FOLDER, list: FILE}")
    splits: dict[str, SplitFolders] = {}
    for name, entry in splits_data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("images"), str):
            raise fail(f"splits.{name}", "a mapping with at least `images: FOLDER`")
        extra = sorted(set(entry) - _SPLIT_KEYS)
        if extra:
            raise fail(f"splits.{name}", f"keys among {sorted(_SPLIT_KEYS)} (unknown: {extra})")
        splits[str(name)] = SplitFolders(entry["images"], entry.get("labels"), entry.get("list"))
    labelled = [n for n, f in splits.items() if f.labels is not None]
    stats_split = data.get("stats_split", "train" if "train" in labelled else (labelled[0] if labelled else None))
    if stats_split is not None and stats_split not in labelled:
        raise fail("stats_split", f"a labelled split (one of {labelled})")
    return ClassMap(path, space, encoding, str(data.get("image_suffix", ".png")),
                    str(data.get("label_suffix", ".png")), splits, stats_split)


def _default_palette(n: int) -> list[list[int]]:
    """Distinct colours for class maps without a palette (the PASCAL VOC bit-interleaving scheme)."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.append([r, g, b])
    return palette


@register_dataset("custom")
class CustomDataset(SegDataset):
    layout = "the folders named by the class map's `splits`"

    def __init__(self, root: str | Path, split: str = "train", *, class_map: str | Path | None = None,
                 label_space: str | LabelSpace | None = None, **common: Any):
        self.class_map = load_class_map(find_class_map(Path(root), class_map))
        space = self.class_map.space
        requested = label_space.name if isinstance(label_space, LabelSpace) else label_space
        if requested not in (None, space.name):
            raise DataError(f"custom: label space {requested!r} differs from {space.name!r} of the class map "
                            f"{self.class_map.path}; a custom dataset is read in its class map's space")
        self.splits = tuple(self.class_map.splits)
        self.labelled_splits = self.class_map.labelled_splits
        self.stats_splits = (self.class_map.stats_split,) if self.class_map.stats_split else ()
        super().__init__(root, split, label_space=space, **common)

    @classmethod
    def split_names(cls, root: Path, options: Mapping[str, Any], *, labelled: bool = False) -> tuple[str, ...]:
        cmap = load_class_map(find_class_map(Path(root), options.get("class_map")))
        return cmap.labelled_splits if labelled else tuple(cmap.splits)

    def resolve_split(self, split: str) -> str:
        if split not in self.class_map.splits:
            raise DataError(f"custom: unknown split {split!r}; the class map {self.class_map.path} defines "
                            f"{list(self.class_map.splits)}")
        return split

    def scan(self) -> SplitScan:
        cmap = self.class_map
        folders = cmap.splits[self.split]
        images_dir = self.require_split_dir(self.root / folders.images)
        images = {p.name[: -len(cmap.image_suffix)]: p for p in files_with_suffix(images_dir, cmap.image_suffix)}
        labels: dict[str, list[LabelSource]] | None = None
        if folders.labels is not None:
            labels_dir = self.require_dir(self.root / folders.labels,
                                          f"the label folder of split {self.split!r} in {cmap.path}")
            labels = {p.name[: -len(cmap.label_suffix)]: [LabelSource(p, cmap.encoding)]
                      for p in files_with_suffix(labels_dir, cmap.label_suffix)}
        unpaired: list[Unpaired] = []
        if folders.list is not None:
            names = self._read_list(self.root / folders.list)
            for name in names:
                if name not in images:
                    unpaired.append(Unpaired(self.root / folders.list,
                                             f"lists {name!r} but {folders.images}/{name}{cmap.image_suffix} "
                                             "does not exist"))
            images = {n: images[n] for n in names if n in images}
            if labels is not None:  # other splits' labels share the folder: keep this split's only
                labels = {n: labels[n] for n in labels if n in images}
        samples, missing = pair_files(
            [(name, path, name) for name, path in images.items()], labels,
            expected_label=lambda p: f"{folders.labels}/{p.name[: -len(cmap.image_suffix)]}{cmap.label_suffix}",
            expected_image=lambda key: f"{folders.images}/{key}{cmap.image_suffix}",
        )
        return SplitScan(samples, unpaired + missing, images_dir)

    def _read_list(self, path: Path) -> list[str]:
        if not path.is_file():
            raise DataError(f"custom: list file {path} of split {self.split!r} does not exist; "
                            "expected one sample name per line")
        names = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name = Path(line).name
            for suffix in (self.class_map.image_suffix, self.class_map.label_suffix):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            names.append(name)
        return list(dict.fromkeys(names))
