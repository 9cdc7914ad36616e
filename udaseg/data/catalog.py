"""Class protocols and label-id tables, as data.

Everything a loader, the evaluator or a method needs to know about classes lives here:
the 35 Cityscapes labels (ids, train ids, categories, colours; checked against
``cityscapesscripts.helpers.labels`` in the tests), the SYNTHIA class ids, the Mapillary Vistas
v1.2 names, and the *label spaces* a model can be trained in:

``cityscapes19``  the 19 Cityscapes train classes (GTA5/Cityscapes/ACDC/Dark Zurich, and SYNTHIA in
                  the DAFormer line, where the model keeps 19 outputs)
``synthia16``     the 16 classes SYNTHIA shares with Cityscapes as a compact 16-way space
                  (DiGA and DAF+IDA train 16-way models)
``seven``         the 7 categories flat/construction/object/nature/sky/human/vehicle of DADA/CTRL
                  (SYNTHIA→Cityscapes/Mapillary, 7 classes)

Evaluation subsets (mIoU16, mIoU13) are index lists into the 19-class vector, never rescaled
means (see docs/contracts.md §4).

Each dataset family translates its *raw* label ids into a label space through a 256-entry lookup
table (:func:`raw_to_space_lut`). The 7-class tables start from raw ids, not from 19-class train
ids, because they keep classes the 19-class tables drop (SYNTHIA lane marking → flat).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class CityscapesLabel:
    name: str
    id: int
    train_id: int  # 255 = ignored in training and evaluation
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


# The Cityscapes label table (cityscapesScripts helpers/labels.py). License plate has id -1 and
# never appears in label images; its train id is -1 there, 255 here.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(*row)
    for row in [
        ("unlabeled", 0, 255, "void", 0, False, True, (0, 0, 0)),
        ("ego vehicle", 1, 255, "void", 0, False, True, (0, 0, 0)),
        ("rectification border", 2, 255, "void", 0, False, True, (0, 0, 0)),
        ("out of roi", 3, 255, "void", 0, False, True, (0, 0, 0)),
        ("static", 4, 255, "void", 0, False, True, (0, 0, 0)),
        ("dynamic", 5, 255, "void", 0, False, True, (111, 74, 0)),
        ("ground", 6, 255, "void", 0, False, True, (81, 0, 81)),
        ("road", 7, 0, "flat", 1, False, False, (128, 64, 128)),
        ("sidewalk", 8, 1, "flat", 1, False, False, (244, 35, 232)),
        ("parking", 9, 255, "flat", 1, False, True, (250, 170, 160)),
        ("rail track", 10, 255, "flat", 1, False, True, (230, 150, 140)),
        ("building", 11, 2, "construction", 2, False, False, (70, 70, 70)),
        ("wall", 12, 3, "construction", 2, False, False, (102, 102, 156)),
        ("fence", 13, 4, "construction", 2, False, False, (190, 153, 153)),
        ("guard rail", 14, 255, "construction", 2, False, True, (180, 165, 180)),
        ("bridge", 15, 255, "construction", 2, False, True, (150, 100, 100)),
        ("tunnel", 16, 255, "construction", 2, False, True, (150, 120, 90)),
        ("pole", 17, 5, "object", 3, False, False, (153, 153, 153)),
        ("polegroup", 18, 255, "object", 3, False, True, (153, 153, 153)),
        ("traffic light", 19, 6, "object", 3, False, False, (250, 170, 30)),
        ("traffic sign", 20, 7, "object", 3, False, False, (220, 220, 0)),
        ("vegetation", 21, 8, "nature", 4, False, False, (107, 142, 35)),
        ("terrain", 22, 9, "nature", 4, False, False, (152, 251, 152)),
        ("sky", 23, 10, "sky", 5, False, False, (70, 130, 180)),
        ("person", 24, 11, "human", 6, True, False, (220, 20, 60)),
        ("rider", 25, 12, "human", 6, True, False, (255, 0, 0)),
        ("car", 26, 13, "vehicle", 7, True, False, (0, 0, 142)),
        ("truck", 27, 14, "vehicle", 7, True, False, (0, 0, 70)),
        ("bus", 28, 15, "vehicle", 7, True, False, (0, 60, 100)),
        ("caravan", 29, 255, "vehicle", 7, True, True, (0, 0, 90)),
        ("trailer", 30, 255, "vehicle", 7, True, True, (0, 0, 110)),
        ("train", 31, 16, "vehicle", 7, True, False, (0, 80, 100)),
        ("motorcycle", 32, 17, "vehicle", 7, True, False, (0, 0, 230)),
        ("bicycle", 33, 18, "vehicle", 7, True, False, (119, 11, 32)),
        ("license plate", -1, 255, "vehicle", 7, False, True, (0, 0, 142)),
    ]
)

CITYSCAPES_CLASSES: tuple[str, ...] = tuple(
    lab.name for lab in sorted((x for x in CITYSCAPES_LABELS if x.train_id != 255), key=lambda x: x.train_id)
)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    lab.color for lab in sorted((x for x in CITYSCAPES_LABELS if x.train_id != 255), key=lambda x: x.train_id)
)
CITYSCAPES_LABEL_IDS: tuple[int, ...] = tuple(lab.id for lab in CITYSCAPES_LABELS if lab.id >= 0)  # 0..33
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {lab.id: lab.train_id for lab in CITYSCAPES_LABELS if lab.id >= 0}
TRAIN_ID_TO_LABEL_ID: dict[int, int] = {lab.train_id: lab.id for lab in CITYSCAPES_LABELS if lab.train_id != 255}
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}

# Evaluation subsets of the 19-class vector (train ids).
SYNTHIA16_TRAIN_IDS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA13_TRAIN_IDS: tuple[int, ...] = tuple(i for i in SYNTHIA16_TRAIN_IDS if i not in (3, 4, 5))
# Thing classes of DAFormer's ImageNet feature distance (traffic light … bicycle).
FD_THING_TRAIN_IDS: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
# BAFFT's stuff/thing split: pole, light and sign are handled per instance.
STUFF_TRAIN_IDS: tuple[int, ...] = (0, 1, 2, 3, 4, 8, 9, 10)
THING_TRAIN_IDS: tuple[int, ...] = (5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18)

# ---------------------------------------------------------------------------------------------
# SYNTHIA-RAND-CITYSCAPES class ids (R channel of GT/LABELS, read by cv2 as the last channel).
SYNTHIA_CLASS_NAMES: dict[int, str] = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation",
    7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle",
    13: "parking-slot", 14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider",
    18: "truck", 19: "bus", 20: "train", 21: "wall", 22: "lanemarking",
}
# DAFormer's tools/convert_datasets/synthia.py; ids 0, 13, 14, 22 → ignore. Terrain, truck and
# train exist in the id list but never occur in the released data.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}

# ---------------------------------------------------------------------------------------------
# 7-class protocol of DADA/CTRL (DAF+IDA EP2/EP3), from raw ids.
SEVEN_CLASSES: tuple[str, ...] = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
SEVEN_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (70, 70, 70), (153, 153, 153), (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142),
)
CITYSCAPES_ID_TO_SEVEN: dict[int, int] = {
    7: 0, 8: 0, 11: 1, 12: 1, 13: 1, 17: 2, 19: 2, 20: 2, 21: 3, 22: 3, 23: 4, 24: 5, 25: 5,
    26: 6, 27: 6, 28: 6, 29: 6, 30: 6, 31: 6, 32: 6, 33: 6,
}
SYNTHIA_ID_TO_SEVEN: dict[int, int] = {
    3: 0, 4: 0, 22: 0, 2: 1, 5: 1, 7: 2, 9: 2, 15: 2, 6: 3, 1: 4, 10: 5, 8: 6, 11: 6,
}

# Mapillary Vistas v1.2 label names in id order (config.json of the release).
MAPILLARY_V12_NAMES: tuple[str, ...] = (
    "animal--bird", "animal--ground-animal", "construction--barrier--curb", "construction--barrier--fence",
    "construction--barrier--guard-rail", "construction--barrier--other-barrier", "construction--barrier--wall",
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain", "construction--flat--curb-cut",
    "construction--flat--parking", "construction--flat--pedestrian-area", "construction--flat--rail-track",
    "construction--flat--road", "construction--flat--service-lane", "construction--flat--sidewalk",
    "construction--structure--bridge", "construction--structure--building", "construction--structure--tunnel",
    "human--person", "human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider",
    "marking--crosswalk-zebra", "marking--general", "nature--mountain", "nature--sand", "nature--sky",
    "nature--snow", "nature--terrain", "nature--vegetation", "nature--water", "object--banner", "object--bench",
    "object--bike-rack", "object--billboard", "object--catch-basin", "object--cctv-camera",
    "object--fire-hydrant", "object--junction-box", "object--mailbox", "object--manhole",
    "object--phone-booth", "object--pothole", "object--street-light", "object--support--pole",
    "object--support--traffic-sign-frame", "object--support--utility-pole", "object--traffic-light",
    "object--traffic-sign--back", "object--traffic-sign--front", "object--trash-can",
    "object--vehicle--bicycle", "object--vehicle--boat", "object--vehicle--bus", "object--vehicle--car",
    "object--vehicle--caravan", "object--vehicle--motorcycle", "object--vehicle--on-rails",
    "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",
    "object--vehicle--wheeled-slow", "void--car-mount", "void--ego-vehicle", "void--unlabeled",
)
# DADA's Mapillary → 7 mapping. Terrain is "flat" here but "nature" for Cityscapes; the
# inconsistency is inherited from DADA and kept for comparability.
MAPILLARY_NAME_TO_SEVEN: dict[str, int] = {
    **{n: 0 for n in (
        "construction--flat--bike-lane", "construction--flat--crosswalk-plain", "construction--flat--curb-cut",
        "construction--flat--parking", "construction--flat--pedestrian-area", "construction--flat--rail-track",
        "construction--flat--road", "construction--flat--service-lane", "construction--flat--sidewalk",
        "marking--crosswalk-zebra", "marking--general", "nature--terrain")},
    **{n: 1 for n in (
        "construction--barrier--curb", "construction--barrier--fence", "construction--barrier--guard-rail",
        "construction--barrier--other-barrier", "construction--barrier--wall", "construction--structure--bridge",
        "construction--structure--building", "construction--structure--tunnel")},
    **{n: 2 for n in (
        "object--pothole", "object--street-light", "object--support--pole", "object--support--traffic-sign-frame",
        "object--support--utility-pole", "object--traffic-light", "object--traffic-sign--back",
        "object--traffic-sign--front")},
    "nature--vegetation": 3,
    "nature--sky": 4,
    **{n: 5 for n in ("human--person", "human--rider--bicyclist", "human--rider--motorcyclist",
                      "human--rider--other-rider")},
    **{n: 6 for n in (
        "object--vehicle--bicycle", "object--vehicle--boat", "object--vehicle--bus", "object--vehicle--car",
        "object--vehicle--caravan", "object--vehicle--motorcycle", "object--vehicle--on-rails",
        "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",
        "object--vehicle--wheeled-slow")},
}
# The usual Mapillary → 19 Cityscapes grouping used for domain-generalisation evaluation
# (lane marking and manhole → road, curb → sidewalk, every rider → rider).
MAPILLARY_NAME_TO_TRAIN_ID: dict[str, int] = {
    "construction--flat--road": 0, "construction--flat--service-lane": 0, "construction--flat--bike-lane": 0,
    "construction--flat--crosswalk-plain": 0, "marking--crosswalk-zebra": 0, "marking--general": 0,
    "object--manhole": 0, "object--catch-basin": 0, "object--pothole": 0,
    "construction--flat--sidewalk": 1, "construction--flat--curb-cut": 1, "construction--barrier--curb": 1,
    "construction--flat--pedestrian-area": 1,
    "construction--structure--building": 2,
    "construction--barrier--wall": 3,
    "construction--barrier--fence": 4,
    "object--support--pole": 5, "object--support--utility-pole": 5, "object--street-light": 5,
    "object--support--traffic-sign-frame": 5,
    "object--traffic-light": 6,
    "object--traffic-sign--front": 7,
    "nature--vegetation": 8,
    "nature--terrain": 9,
    "nature--sky": 10,
    "human--person": 11,
    "human--rider--bicyclist": 12, "human--rider--motorcyclist": 12, "human--rider--other-rider": 12,
    "object--vehicle--car": 13,
    "object--vehicle--truck": 14,
    "object--vehicle--bus": 15,
    "object--vehicle--on-rails": 16,
    "object--vehicle--motorcycle": 17,
    "object--vehicle--bicycle": 18,
}


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSpace:
    """The classes a model predicts. ``eval_subsets`` name index lists into ``classes`` whose
    means are reported besides the full mean (e.g. mIoU16 and mIoU13 of the 19-class vector)."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    eval_subsets: dict[str, tuple[int, ...]]
    # Train id of this space → Cityscapes label id, for exporting predictions in server format.
    to_label_id: dict[int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


SYNTHIA16_CLASSES = tuple(CITYSCAPES_CLASSES[i] for i in SYNTHIA16_TRAIN_IDS)

LABEL_SPACES: dict[str, LabelSpace] = {
    "cityscapes19": LabelSpace(
        "cityscapes19", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE,
        {"mIoU19": tuple(range(19)), "mIoU16": SYNTHIA16_TRAIN_IDS, "mIoU13": SYNTHIA13_TRAIN_IDS},
        TRAIN_ID_TO_LABEL_ID,
    ),
    "synthia16": LabelSpace(
        "synthia16", SYNTHIA16_CLASSES, tuple(CITYSCAPES_PALETTE[i] for i in SYNTHIA16_TRAIN_IDS),
        {"mIoU16": tuple(range(16)),
         "mIoU13": tuple(SYNTHIA16_TRAIN_IDS.index(i) for i in SYNTHIA13_TRAIN_IDS)},
        {k: TRAIN_ID_TO_LABEL_ID[t] for k, t in enumerate(SYNTHIA16_TRAIN_IDS)},
    ),
    "seven": LabelSpace("seven", SEVEN_CLASSES, SEVEN_PALETTE, {"mIoU7": tuple(range(7))}, None),
}


def get_label_space(name: str) -> LabelSpace:
    try:
        return LABEL_SPACES[name]
    except KeyError:
        raise KeyError(f"unknown label space {name!r}; expected one of {sorted(LABEL_SPACES)}") from None


def _lut(mapping: dict[int, int]) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw, target in mapping.items():
        lut[raw] = target
    return lut


# Compact 16-way id of each 19-class train id (others → ignore).
TRAIN_ID_TO_SYNTHIA16: dict[int, int] = {t: k for k, t in enumerate(SYNTHIA16_TRAIN_IDS)}


def _compose(first: dict[int, int], second: dict[int, int]) -> dict[int, int]:
    return {raw: second[mid] for raw, mid in first.items() if mid in second}


# Raw id scheme of each label encoding → label space.
_RAW_TABLES: dict[str, dict[str, dict[int, int]]] = {
    # Cityscapes label ids: Cityscapes gtFine, GTA5 palette indices, ACDC/Dark Zurich _gt_labelIds.
    "cityscapes_id": {
        "cityscapes19": {k: v for k, v in LABEL_ID_TO_TRAIN_ID.items() if v != 255},
        "synthia16": _compose(LABEL_ID_TO_TRAIN_ID, TRAIN_ID_TO_SYNTHIA16),
        "seven": CITYSCAPES_ID_TO_SEVEN,
    },
    # Cityscapes train ids (already converted files: *_labelTrainIds.png).
    "train_id": {
        "cityscapes19": {i: i for i in range(19)},
        "synthia16": TRAIN_ID_TO_SYNTHIA16,
        # 7 categories of the 19 train classes (terrain → nature as for Cityscapes ids).
        "seven": _compose(TRAIN_ID_TO_LABEL_ID, CITYSCAPES_ID_TO_SEVEN),
    },
    # SYNTHIA class ids.
    "synthia_id": {
        "cityscapes19": SYNTHIA_ID_TO_TRAIN_ID,
        "synthia16": _compose(SYNTHIA_ID_TO_TRAIN_ID, TRAIN_ID_TO_SYNTHIA16),
        "seven": SYNTHIA_ID_TO_SEVEN,
    },
    # Mapillary Vistas v1.2 ids (by name, see MAPILLARY_V12_NAMES).
    "mapillary_id": {
        "cityscapes19": {i: MAPILLARY_NAME_TO_TRAIN_ID[n] for i, n in enumerate(MAPILLARY_V12_NAMES)
                         if n in MAPILLARY_NAME_TO_TRAIN_ID},
        "synthia16": {i: TRAIN_ID_TO_SYNTHIA16[MAPILLARY_NAME_TO_TRAIN_ID[n]]
                      for i, n in enumerate(MAPILLARY_V12_NAMES)
                      if MAPILLARY_NAME_TO_TRAIN_ID.get(n) in TRAIN_ID_TO_SYNTHIA16},
        "seven": {i: MAPILLARY_NAME_TO_SEVEN[n] for i, n in enumerate(MAPILLARY_V12_NAMES)
                  if n in MAPILLARY_NAME_TO_SEVEN},
    },
}

RAW_ID_SCHEMES: tuple[str, ...] = tuple(_RAW_TABLES)


def raw_to_space_lut(scheme: str, space: str) -> np.ndarray:
    """256-entry uint8 lookup table: raw label id of ``scheme`` → id in label space ``space``.

    Unlisted raw ids map to 255 (ignore). Use as ``lut[label_array]``.
    """
    if scheme not in _RAW_TABLES:
        raise KeyError(f"unknown raw label scheme {scheme!r}; expected one of {list(_RAW_TABLES)}")
    get_label_space(space)
    return _lut(_RAW_TABLES[scheme][space])


def raw_mapping(scheme: str, space: str) -> dict[int, int]:
    """The mapping behind :func:`raw_to_space_lut` as a dict (raw id → space id)."""
    get_label_space(space)
    return dict(_RAW_TABLES[scheme][space])


def valid_raw_ids(scheme: str) -> frozenset[int]:
    """Raw values a well-formed label file of ``scheme`` may contain (for ``udaseg data check``)."""
    if scheme == "cityscapes_id":
        return frozenset(CITYSCAPES_LABEL_IDS)
    if scheme == "train_id":
        return frozenset(range(19)) | {IGNORE_INDEX}
    if scheme == "synthia_id":
        return frozenset(SYNTHIA_CLASS_NAMES)
    if scheme == "mapillary_id":
        return frozenset(range(len(MAPILLARY_V12_NAMES)))
    raise KeyError(scheme)


def colorize(label: np.ndarray, palette: Iterable[tuple[int, int, int]]) -> np.ndarray:
    """Map an (H, W) id image to an (H, W, 3) uint8 colour image; unknown ids (255) → black."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i, c in enumerate(palette):
        pal[i] = c
    return pal[label]
