"""Mapillary Vistas (Neuhold et al., ICCV 2017): 18,000 training and 2,000 validation street
images of many sizes, a target of SYNTHIA→Mapillary (7 classes) and a domain-generalisation
test set (19 classes).

Layout under ROOT (the official ``mapillary-vistas-dataset_public_v1.2.zip`` unpacked)::

    config.json                          {"labels": [{"name": "animal--bird", ...}, ...]}  (optional)
    training/images/<key>.jpg
    training/labels/<key>.png            8-bit ids into the label list of config.json
    validation/images/<key>.jpg
    validation/labels/<key>.png
    testing/images/<key>.jpg             image-only

Splits ``training``, ``validation``, ``testing`` (aliases ``train``, ``val``, ``test``). Raw ids are
translated **by name**: the label names come from ``config.json`` when the root has one (so v2.0
or other releases work: pass ``config="config_v2.0.json", label_folder="v2.0/labels"``), else the
v1.2 list of the catalog. Names are mapped with the catalog's Mapillary tables (DADA's 7-class
grouping; the usual 19-class grouping for domain generalisation); unknown names become ignore.

The 7-class protocol resizes keeping the aspect ratio and pads bottom/right (image 0, label 255):
``TrainPipeline(fit_size=(768, 1024))`` (or ``(320, 640)`` at low resolution) in
:mod:`udaseg.data.transforms`. ``udaseg data prepare mapillary ROOT`` writes class statistics of
``training`` only (no train-id files: the mapping depends on the protocol).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from udaseg.data import catalog
from udaseg.data.base import (
    DataError,
    LabelEncoding,
    LabelSource,
    SegDataset,
    SplitScan,
    files_with_suffix,
    pair_files,
)
from udaseg.data.registry import register_dataset


def mapillary_encoding(names: Sequence[str], description: str = "Mapillary Vistas v1.2 ids") -> LabelEncoding:
    """Encoding of Mapillary label files whose id ``i`` is the class ``names[i]``."""
    to_train = {i: catalog.MAPILLARY_NAME_TO_TRAIN_ID[n] for i, n in enumerate(names)
                if n in catalog.MAPILLARY_NAME_TO_TRAIN_ID}
    mappings = {
        "cityscapes19": to_train,
        "synthia16": {i: catalog.TRAIN_ID_TO_SYNTHIA16[t] for i, t in to_train.items()
                      if t in catalog.TRAIN_ID_TO_SYNTHIA16},
        "seven": {i: catalog.MAPILLARY_NAME_TO_SEVEN[n] for i, n in enumerate(names)
                  if n in catalog.MAPILLARY_NAME_TO_SEVEN},
    }
    return LabelEncoding(description, range(len(names)), mappings)


V12_ENCODING = mapillary_encoding(catalog.MAPILLARY_V12_NAMES)


def read_label_names(config: Path) -> list[str]:
    try:
        names = [str(entry["name"]) for entry in json.loads(config.read_text())["labels"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read the label list of {config} ({err}); expected "
                        '{"labels": [{"name": "animal--bird", ...}, ...]} as in the Mapillary release') from None
    if not 0 < len(names) <= 256:
        raise DataError(f"{config} lists {len(names)} labels; expected 1 to 256 (8-bit label files)")
    return names


@register_dataset("mapillary")
class Mapillary(SegDataset):
    splits = ("training", "validation", "testing")
    labelled_splits = ("training", "validation")
    split_aliases = {"train": "training", "val": "validation", "test": "testing"}
    stats_splits = ("training",)
    layout = ("a Mapillary Vistas folder with {training,validation}/images/<key>.jpg and "
              "{training,validation}/labels/<key>.png (optionally config.json)")

    def __init__(self, root: str | Path, split: str = "training", *, config: str | Path | None = None,
                 label_folder: str = "labels", **common):
        self.config_option = config
        self.label_folder = label_folder
        super().__init__(root, split, **common)

    def encoding(self) -> LabelEncoding:
        if self.config_option is not None:
            config = self.root / self.config_option
            if not config.is_file():
                raise DataError(f"mapillary: label config {config} does not exist; expected a JSON label list")
        else:
            config = self.root / "config.json"
            if not config.is_file():
                return V12_ENCODING
        names = read_label_names(config)
        if tuple(names) == catalog.MAPILLARY_V12_NAMES:
            return V12_ENCODING
        return mapillary_encoding(names, f"Mapillary ids of {config.name}")

    def scan(self) -> SplitScan:
        split_dir = self.require_split_dir(self.root / self.split)
        images_dir = self.require_split_dir(split_dir / "images")
        labels = None
        if self.split in self.labelled_splits:
            encoding = self.encoding()
            labels_dir = self.require_dir(split_dir / self.label_folder,
                                          f"Mapillary labels ({self.split}/{self.label_folder}/<key>.png)")
            labels = {p.stem: [LabelSource(p, encoding)] for p in files_with_suffix(labels_dir, ".png")}
        images = [(p.stem, p, p.stem) for p in files_with_suffix(images_dir, ".jpg")]
        samples, unpaired = pair_files(
            images, labels,
            expected_label=lambda p: f"{self.split}/{self.label_folder}/{p.stem}.png",
            expected_image=lambda key: f"{self.split}/images/{key}.jpg",
        )
        return SplitScan(samples, unpaired, images_dir)
