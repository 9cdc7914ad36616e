"""Writers of tiny datasets in the real on-disk formats (tens of pixels per image), for the data
layer tests: one per family, plus helpers to damage files for the bad-input cases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image

from udaseg.data import catalog

# Label ids each family's fixture draws stripes from (raw ids of the family's scheme).
CITYSCAPES_STRIPE_IDS = (23, 11, 21, 26, 24, 7, 8, 0)
SYNTHIA_STRIPE_IDS = (1, 2, 6, 8, 10, 3, 4, 22, 0)


def stripes(size: tuple[int, int], ids: Sequence[int], rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """An (H, W) label of ``n`` horizontal stripes with ids drawn from ``ids`` (uint8)."""
    h, w = size
    label = np.empty((h, w), dtype=np.uint8)
    cuts = np.linspace(0, h, n + 1).astype(int)
    for a, b in zip(cuts[:-1], cuts[1:]):
        label[a:b] = rng.choice(ids)
    label[:, : w // 4] = rng.choice(ids)  # a second class on every row
    return label


def image_for(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colours = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    return colours[label]


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def write_grey(path: Path, label: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8)).save(path)
    return path


def write_palette(path: Path, label: np.ndarray) -> Path:
    """Palette PNG whose indices are ``label`` (how GTA5 and Mapillary store ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.astype(np.uint8).tobytes())
    palette = [0] * 768
    for lab in catalog.CITYSCAPES_LABELS:
        if lab.id >= 0:
            palette[3 * lab.id: 3 * lab.id + 3] = lab.color
    im.putpalette(palette)
    im.save(path)
    return path


def write_synthia_label(path: Path, class_ids: np.ndarray, instance_ids: np.ndarray | None = None) -> Path:
    """16-bit 3-channel PNG: class id in R, instance id in G (cv2 writes BGR, so R is last)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.zeros((*class_ids.shape, 3), dtype=np.uint16)
    bgr[..., 2] = class_ids
    bgr[..., 1] = instance_ids if instance_ids is not None else 0
    assert cv2.imwrite(str(path), bgr)
    return path


def write_depth_cm(path: Path, depth_cm: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), depth_cm.astype(np.uint16))
    return path


def truncate(path: Path) -> Path:
    """Cut a file in half (an interrupted download)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ---------------------------------------------------------------------------------------------
def make_gta5(root: Path, n: int = 3, size: tuple[int, int] = (12, 20), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        label = stripes(size, CITYSCAPES_STRIPE_IDS, rng)
        write_rgb(root / "images" / f"{i:05d}.png", image_for(label, rng))
        write_palette(root / "labels" / f"{i:05d}.png", label)
    return root


def make_synthia(root: Path, n: int = 3, size: tuple[int, int] = (12, 20), seed: int = 0, depth: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = stripes(size, SYNTHIA_STRIPE_IDS, rng)
        write_rgb(root / "RGB" / f"{i:07d}.png", image_for(label, rng))
        write_synthia_label(root / "GT" / "LABELS" / f"{i:07d}.png", label, rng.integers(0, 500, size))
        if depth:
            write_depth_cm(root / "Depth" / "Depth" / f"{i:07d}.png", rng.integers(100, 65535, size))
    return root


def cityscapes_stem(city: str, i: int) -> str:
    return f"{city}_{i:06d}_{19 + i:06d}"


def make_cityscapes(root: Path, frames: dict[str, int] | None = None, size: tuple[int, int] = (12, 24),
                    seed: int = 0, foggy: bool = True, rain: bool = True, cities: Sequence[str] = ("aachen", "bonn")
                    ) -> Path:
    """``frames``: split → frames per city. Foggy images at all three betas; rain images (two
    variants) for the first frame of each city only, as the real Rain Cityscapes covers a subset."""
    rng = np.random.default_rng(seed)
    frames = frames or {"train": 2, "val": 1, "test": 1}
    for split, count in frames.items():
        for city in cities:
            for i in range(count):
                stem = cityscapes_stem(city, i)
                label = stripes(size, CITYSCAPES_STRIPE_IDS, rng)
                image = image_for(label, rng)
                write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
                if split != "test":
                    write_grey(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
                if foggy:
                    for beta in ("0.005", "0.01", "0.02"):
                        write_rgb(root / "leftImg8bit_foggy" / split / city /
                                  f"{stem}_leftImg8bit_foggy_beta_{beta}.png", image // 2 + 100)
                if rain and split != "test" and i == 0:
                    for params in ("alpha_0.01_beta_0.005_dropsize_0.01_pattern_1",
                                   "alpha_0.02_beta_0.01_dropsize_0.005_pattern_2"):
                        write_rgb(root / "leftImg8bit_rain" / split / city /
                                  f"{stem}_leftImg8bit_rain_{params}.png", image // 3)
    return root


def _write_anon(image_dir: Path, gt_dir: Path | None, seq: str, count: int, size, rng, label_ids: bool = True):
    for i in range(count):
        name = f"{seq}_frame_{i:06d}"
        label = stripes(size, CITYSCAPES_STRIPE_IDS, rng)
        write_rgb(image_dir / seq / f"{name}_rgb_anon.png", image_for(label, rng))
        if gt_dir is not None:
            write_grey(gt_dir / seq / f"{name}_gt_labelTrainIds.png",
                       catalog.raw_to_space_lut("cityscapes_id", "cityscapes19")[label])
            if label_ids:
                write_grey(gt_dir / seq / f"{name}_gt_labelIds.png", label)


def make_acdc(root: Path, conditions: Sequence[str] = ("fog", "night", "rain", "snow"),
              frames: dict[str, int] | None = None, size: tuple[int, int] = (12, 20), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frames = frames or {"train": 2, "val": 1, "test": 1}
    for k, condition in enumerate(conditions):
        for split, count in frames.items():
            gt = root / "gt" / condition / split if split != "test" else None
            _write_anon(root / "rgb_anon" / condition / split, gt, f"GOPR{400 + k:04d}", count, size, rng)
    return root


def make_darkzurich(root: Path, size: tuple[int, int] = (12, 20), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, tod in enumerate(("day", "twilight", "night")):
        _write_anon(root / "rgb_anon" / "train" / tod, None, f"GOPR{300 + k:04d}", 2, size, rng)
    _write_anon(root / "rgb_anon" / "val" / "night", root / "gt" / "val" / "night", "GOPR0356", 2, size, rng)
    _write_anon(root / "rgb_anon" / "test" / "night", None, "GOPR0364", 1, size, rng)
    return root


def make_mapillary(root: Path, frames: dict[str, int] | None = None, size: tuple[int, int] = (12, 16),
                   seed: int = 0, names: Sequence[str] | None = None) -> Path:
    """Labels use ids 13 (road), 27 (sky), 55 (car), 65 (unlabeled) of the v1.2 list, or the same
    names' positions in ``names`` (then written to config.json)."""
    rng = np.random.default_rng(seed)
    frames = frames or {"training": 2, "validation": 1}
    wanted = ("construction--flat--road", "nature--sky", "object--vehicle--car", "void--unlabeled")
    table = list(names) if names is not None else list(catalog.MAPILLARY_V12_NAMES)
    ids = [table.index(n) for n in wanted]
    if names is not None:
        (root / "config.json").parent.mkdir(parents=True, exist_ok=True)
        import json
        (root / "config.json").write_text(json.dumps({"labels": [{"name": n} for n in names]}))
    for split, count in frames.items():
        for i in range(count):
            key = f"{split[:2]}key{i:03d}"
            label = stripes(size, ids, rng)
            path = root / split / "images" / f"{key}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image_for(label, rng)).save(path, quality=95)
            write_palette(root / split / "labels" / f"{key}.png", label)
    return root


BUILDINGS_CLASS_MAP = {
    "name": "buildings",
    "classes": ["background", "building"],
    "palette": [[0, 0, 0], [255, 255, 255]],
    "id_map": {0: 0, 255: 1},
    "ignore_index": None,
    "image_suffix": ".tif",
    "label_suffix": ".png",
    "splits": {
        "train": {"images": "Images", "labels": "SegmentationClass", "list": "train.txt"},
        "val": {"images": "Images", "labels": "SegmentationClass", "list": "val.txt"},
    },
}


def make_custom(root: Path, n: int = 4, size: tuple[int, int] = (10, 10), seed: int = 0,
                class_map: dict | None = None) -> Path:
    """A BAFFT-style binary dataset: ``Images/*.tif``, ``SegmentationClass/*.png`` with 0/255
    masks, train = first n-1 tiles, val = last tile; the class map at ROOT/class_map.yaml."""
    rng = np.random.default_rng(seed)
    names = [f"{i:05d}" for i in range(1, n + 1)]
    for name in names:
        mask = np.zeros(size, dtype=np.uint8)
        mask[: size[0] // 2, : size[1] // 2] = 255
        path = root / "Images" / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_for(mask, rng)).save(path)
        write_grey(root / "SegmentationClass" / f"{name}.png", mask)
    (root / "train.txt").write_text("\n".join(names[:-1]) + "\n")
    (root / "val.txt").write_text(names[-1] + "\n")
    (root / "class_map.yaml").write_text(yaml.safe_dump(class_map or BUILDINGS_CLASS_MAP, sort_keys=False))
    return root


MAKERS = {
    "gta5": make_gta5, "synthia": make_synthia, "cityscapes": make_cityscapes, "cityscapes_foggy": make_cityscapes,
    "cityscapes_rain": make_cityscapes, "acdc": make_acdc, "darkzurich": make_darkzurich,
    "mapillary": make_mapillary, "custom": make_custom,
}
# A labelled split of each dataset, for parameterised tests.
LABELLED_SPLIT = {"gta5": "train", "synthia": "train", "cityscapes": "train", "cityscapes_foggy": "train",
                  "cityscapes_rain": "train", "acdc": "train", "darkzurich": "val", "mapillary": "training",
                  "custom": "train"}


# ---------------------------------------------------------------------------------------------
# Damage helpers for the bad-input tests: rewrite a label file in its own format.
def _rewrite_label(path: Path, label: np.ndarray) -> None:
    """The format is decided by the folder (SYNTHIA raw labels) or by the file (palette or grey)."""
    if path.parent.name == "LABELS" and not path.stem.endswith("_labelTrainIds"):
        write_synthia_label(path, label)
    else:
        with Image.open(path) as im:
            palette = im.mode == "P"
        (write_palette if palette else write_grey)(path, label)


def read_raw(path: Path) -> np.ndarray:
    from udaseg.data.base import read_index_label, read_synthia_label

    if path.parent.name == "LABELS" and not path.stem.endswith("_labelTrainIds"):
        return read_synthia_label(path)
    return read_index_label(path)


def put_label_value(path: Path, value: int) -> None:
    """Set one pixel of label file ``path`` to ``value``."""
    label = read_raw(path).copy()
    label[0, 0] = value
    _rewrite_label(path, label)


def widen_label(path: Path) -> None:
    """Add a column to label file ``path`` (image/label size mismatch)."""
    label = read_raw(path)
    _rewrite_label(path, np.concatenate([label, label[:, :1]], axis=1))


def first_invalid_value(valid_ids) -> int:
    return next(v for v in range(256) if v not in valid_ids)
