"""Paired geometric transforms on numpy samples, with an explicit random generator.

A *sample* is the dict :meth:`SegDataset.load` returns: ``"img"`` ``uint8 [H, W, 3]``, optionally
``"label"`` ``uint8 [H, W]`` (255 = ignore) and ``"depth"`` ``float32 [H, W]``; other keys
(``name``, ``meta``) pass through. Every transform applies the same geometry to all three arrays:
images are resized bilinearly (or bicubically where a protocol says so), labels and depth with
nearest neighbour; padding fills the image and depth with 0 and the label with 255.

Randomness comes only from the ``numpy.random.Generator`` passed in (never a global RNG), so a
sample is a pure function of its generator's seed (see :mod:`udaseg.data.sampling`).

The semantics follow mmseg 0.x, which the DAFormer line uses:

* :func:`rescale_size` — ``Resize(img_scale=(long, short), keep_ratio=True)``: the scale factor is
  ``min(long / max(h, w), short / min(h, w))`` and sizes round as ``int(x * scale + 0.5)``
  (GTA5 1914×1052 with (1280, 720) → 1280×704; Cityscapes 2048×1024 with (1024, 512) → 1024×512;
  SYNTHIA 1280×760 with (1280, 760) unchanged).
* :func:`choose_crop` — ``RandomCrop(crop_size, cat_max_ratio)``: a crop box is drawn; while it
  does not hold more than one non-ignore class with the largest taking a share below
  ``cat_max_ratio`` of the non-ignore pixels, a new box is drawn, checking at most 10 times. As in
  mmseg, the box drawn after the 10th failed check is kept unchecked.
* horizontal flip with probability ``flip_prob``; pad bottom/right to the crop size.

DiGA/TridentAdapt's geometry (docs/methods.md G3.3) has two more switches: ``size_jitter=(lo, hi)``
— "random size and crop": after the resize, height and width are scaled *independently* by
factors from U(lo, hi) (the aspect ratio changes), and an image that then falls short of the crop
in either dimension is resized to the crop size instead — and ``crop_rule="diga"``: the crop is
re-drawn up to 5 times until at least two non-ignore classes each cover more than 2 % of it
(:func:`diga_crop_accepted`; the last draw is kept).

:func:`fit_size` + :func:`pad_sample` give the DADA/CTRL Mapillary geometry of the 7-class protocol
(keep the aspect ratio, fit inside the target size, pad bottom/right).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from udaseg.data.catalog import IGNORE_INDEX

Sample = dict[str, Any]
_IMAGE_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
# mmseg's RandomCrop checks the class ratio this many times.
CROP_CHECKS = 10
CROP_RULES = ("mmseg", "diga")
DIGA_CROP_TRIES, DIGA_MIN_SHARE = 5, 0.02


def rescale_size(h: int, w: int, img_scale: tuple[int, int]) -> tuple[int, int]:
    """New ``(h, w)`` for an mmseg keep-ratio resize to ``img_scale = (long, short)`` edges."""
    long_edge, short_edge = max(img_scale), min(img_scale)
    scale = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5)


def fit_size(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """New ``(h, w)`` that keeps the aspect ratio and fits inside ``size = (H, W)``."""
    scale = min(size[0] / h, size[1] / w)
    return min(size[0], int(h * scale + 0.5)), min(size[1], int(w * scale + 0.5))


# The per-pixel maps a sample may carry beside the image (all moved by the same geometry, resized
# with nearest neighbour): the label, SYNTHIA's depth, and HRDA/MIC's valid-pseudo-label mask.
MAP_KEYS = ("label", "pseudo_label", "depth", "valid_pseudo")
_PAD_VALUES = {"img": 0, "label": IGNORE_INDEX, "pseudo_label": IGNORE_INDEX, "depth": 0, "valid_pseudo": 0}


def pseudo_margin_mask(h: int, w: int, margins: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 [h, w]: 0 in the top/bottom/left/right ``margins`` (pixels of the original image),
    1 elsewhere — HRDA/MIC's "v2" pseudo-label crop, moved with the crop so that the margins are
    masked only where the training crop touches them."""
    top, bottom, left, right = (int(v) for v in margins)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[top:h - bottom, left:w - right] = 1
    return mask


def resize_sample(sample: Mapping[str, Any], size: tuple[int, int], interpolation: str = "bilinear") -> Sample:
    """Resize every array of ``sample`` to ``size = (h, w)``: image with ``interpolation``, the
    other maps (label, depth, valid_pseudo) with nearest neighbour."""
    out = dict(sample)
    h, w = sample["img"].shape[:2]
    if (h, w) == tuple(size):
        return out
    dsize = (int(size[1]), int(size[0]))
    out["img"] = cv2.resize(sample["img"], dsize, interpolation=_IMAGE_INTERPOLATION[interpolation])
    for key in MAP_KEYS:
        if key in sample:
            out[key] = cv2.resize(sample[key], dsize, interpolation=cv2.INTER_NEAREST)
    return out


def random_crop_box(h: int, w: int, crop_size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A uniformly placed ``(y0, x0, y1, x1)`` box of ``crop_size`` (clipped to the image)."""
    margin_h, margin_w = max(h - crop_size[0], 0), max(w - crop_size[1], 0)
    y0 = int(rng.integers(0, margin_h + 1))
    x0 = int(rng.integers(0, margin_w + 1))
    return y0, x0, min(y0 + crop_size[0], h), min(x0 + crop_size[1], w)


def crop_accepted(label: np.ndarray, cat_max_ratio: float, ignore_index: int = IGNORE_INDEX) -> bool:
    """mmseg's test: more than one non-ignore class, and the largest one's share of the non-ignore
    pixels is below ``cat_max_ratio``."""
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def diga_crop_accepted(label: np.ndarray, min_share: float = DIGA_MIN_SHARE, ignore_index: int = IGNORE_INDEX) -> bool:
    """DiGA's test: at least two non-ignore classes each cover more than ``min_share`` of the crop
    (all of its pixels, ignored ones included)."""
    counts = np.bincount(label.ravel(), minlength=256)
    shares = counts / max(label.size, 1)
    shares[ignore_index] = 0
    return int((shares > min_share).sum()) >= 2


def choose_crop(label: np.ndarray | None, h: int, w: int, crop_size: tuple[int, int], rng: np.random.Generator,
                cat_max_ratio: float = 1.0, ignore_index: int = IGNORE_INDEX,
                rule: str = "mmseg") -> tuple[int, int, int, int]:
    """A crop box, re-drawn up to :data:`CROP_CHECKS` times by the ``cat_max_ratio`` rule
    (``rule="mmseg"``, only when ``cat_max_ratio < 1``), or drawn up to :data:`DIGA_CROP_TRIES`
    times by :func:`diga_crop_accepted` (``rule="diga"``); only when there is a label."""
    box = random_crop_box(h, w, crop_size, rng)
    if label is None:
        return box
    if rule == "diga":
        checks, accept = DIGA_CROP_TRIES - 1, lambda crop: diga_crop_accepted(crop, ignore_index=ignore_index)
    elif cat_max_ratio < 1.0:
        checks, accept = CROP_CHECKS, lambda crop: crop_accepted(crop, cat_max_ratio, ignore_index)
    else:
        return box
    for _ in range(checks):  # the box drawn after the last failed check is kept unchecked
        y0, x0, y1, x1 = box
        if accept(label[y0:y1, x0:x1]):
            break
        box = random_crop_box(h, w, crop_size, rng)
    return box


def crop_sample(sample: Mapping[str, Any], box: tuple[int, int, int, int]) -> Sample:
    y0, x0, y1, x1 = box
    out = dict(sample)
    for key in ("img", *MAP_KEYS):
        if key in sample:
            out[key] = sample[key][y0:y1, x0:x1]
    return out


def hflip_sample(sample: Mapping[str, Any]) -> Sample:
    out = dict(sample)
    for key in ("img", *MAP_KEYS):
        if key in sample:
            out[key] = sample[key][:, ::-1]
    return out


def pad_sample(sample: Mapping[str, Any], size: tuple[int, int], ignore_index: int = IGNORE_INDEX) -> Sample:
    """Pad bottom/right to at least ``size = (H, W)``: image, depth and valid_pseudo with 0, label
    with ``ignore_index``."""
    h, w = sample["img"].shape[:2]
    pad_h, pad_w = max(size[0] - h, 0), max(size[1] - w, 0)
    out = dict(sample)
    if pad_h == 0 and pad_w == 0:
        return out
    fill = {**_PAD_VALUES, "label": ignore_index, "pseudo_label": ignore_index}
    for key, value in fill.items():
        if key in sample:
            array = sample[key]
            widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (array.ndim - 2)
            out[key] = np.pad(array, widths, constant_values=value)
    return out


def pad_to_aspect(array: np.ndarray, aspect: float, value: int = IGNORE_INDEX) -> np.ndarray:
    """Pad bottom/right so that width / height == ``aspect`` (DADA's Mapillary test-time labels are
    not rescaled, only padded to the input's aspect ratio)."""
    h, w = array.shape[:2]
    target_h, target_w = max(h, int(round(w / aspect))), max(w, int(round(h * aspect)))
    widths = ((0, target_h - h), (0, target_w - w)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, widths, constant_values=value)


@dataclass
class TrainPipeline:
    """The source/target training geometry, composed from plain parameters and applied jointly
    to image, label and depth. Exactly one resize mode (or none):

    ``img_scale=(long, short)``  mmseg keep-ratio resize (DAFormer: GTA (1280, 720), SYNTHIA
                                 (1280, 760), Cityscapes (1024, 512), ACDC/Dark Zurich (960, 540));
                                 ``ratio_range=(lo, hi)`` multiplies it by a random factor (mmseg).
    ``fit_size=(H, W)``          keep-ratio fit inside H×W, then pad to exactly H×W (Mapillary, 7 classes).
    ``resize_to=(H, W)``         resize to exactly H×W, ignoring the aspect ratio (ADVENT-style
                                 BAFFT/DAF pipelines; use ``interpolation="bicubic"`` there).

    ``size_jitter=(lo, hi)`` then scales H and W independently (DiGA's random size; see above).
    Then a random crop of ``crop_size=(H, W)`` (``cat_max_ratio`` < 1 enables mmseg's class-ratio
    re-draws; DAFormer uses 0.75 on the source; ``crop_rule="diga"`` DiGA's), a horizontal flip with
    ``flip_prob`` and padding to the crop size. ``pipeline(sample, rng)`` runs everything;
    :meth:`resize` and :meth:`augment` run the two halves, so that Rare Class Sampling can re-crop an image
    without resizing it again.
    """

    img_scale: tuple[int, int] | None = None
    ratio_range: tuple[float, float] | None = None
    fit_size: tuple[int, int] | None = None
    resize_to: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    crop_size: tuple[int, int] | None = None
    cat_max_ratio: float = 1.0
    crop_rule: str = "mmseg"
    size_jitter: tuple[float, float] | None = None
    flip_prob: float = 0.5
    ignore_index: int = IGNORE_INDEX
    pseudo_margins: tuple[int, int, int, int] | None = None  # (top, bottom, left, right) px of the original

    def __post_init__(self) -> None:
        modes = [m for m in ("img_scale", "fit_size", "resize_to") if getattr(self, m) is not None]
        if len(modes) > 1:
            raise ValueError(f"TrainPipeline: choose one resize mode, got {modes}")
        if self.ratio_range is not None and self.img_scale is None:
            raise ValueError("TrainPipeline: ratio_range needs img_scale")
        if self.interpolation not in _IMAGE_INTERPOLATION:
            raise ValueError(f"TrainPipeline: interpolation {self.interpolation!r}; expected one of "
                             f"{list(_IMAGE_INTERPOLATION)}")
        if self.crop_rule not in CROP_RULES:
            raise ValueError(f"TrainPipeline: crop_rule {self.crop_rule!r}; expected one of {list(CROP_RULES)}")
        if self.size_jitter is not None:
            lo, hi = self.size_jitter
            if not 0 < lo <= hi:
                raise ValueError(f"TrainPipeline: size_jitter {list(self.size_jitter)} must be 0 < lo <= hi")
            if self.crop_size is None:
                raise ValueError("TrainPipeline: size_jitter needs crop_size")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"TrainPipeline: flip_prob {self.flip_prob} outside [0, 1]")
        for name in ("img_scale", "ratio_range", "fit_size", "resize_to", "crop_size", "pseudo_margins", "size_jitter"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))

    @property
    def resize_is_random(self) -> bool:
        return self.ratio_range is not None or self.size_jitter is not None

    def resize(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Sample:
        out = self._resize(sample, rng)
        if self.size_jitter is None:
            return out
        h, w = out["img"].shape[:2]
        size = (int(h * rng.uniform(*self.size_jitter)), int(w * rng.uniform(*self.size_jitter)))
        assert self.crop_size is not None  # __post_init__: size_jitter needs crop_size
        if size[0] < self.crop_size[0] or size[1] < self.crop_size[1]:
            size = self.crop_size
        return resize_sample(out, size, self.interpolation)

    def _resize(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Sample:
        h, w = sample["img"].shape[:2]
        if self.pseudo_margins is not None:
            sample = {**sample, "valid_pseudo": pseudo_margin_mask(h, w, self.pseudo_margins)}
        if self.img_scale is not None:
            scale = self.img_scale
            if self.ratio_range is not None:
                ratio = rng.uniform(*self.ratio_range)
                scale = (int(scale[0] * ratio), int(scale[1] * ratio))
            return resize_sample(sample, rescale_size(h, w, scale), self.interpolation)
        if self.fit_size is not None:
            fitted = resize_sample(sample, fit_size(h, w, self.fit_size), self.interpolation)
            return pad_sample(fitted, self.fit_size, self.ignore_index)
        if self.resize_to is not None:
            return resize_sample(sample, self.resize_to, self.interpolation)
        return dict(sample)

    def augment(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Sample:
        out = dict(sample)
        if self.crop_size is not None:
            h, w = out["img"].shape[:2]
            box = choose_crop(out.get("label"), h, w, self.crop_size, rng, self.cat_max_ratio, self.ignore_index,
                              self.crop_rule)
            out = crop_sample(out, box)
        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            out = hflip_sample(out)
        if self.crop_size is not None:
            out = pad_sample(out, self.crop_size, self.ignore_index)
        for key in ("img", *MAP_KEYS):  # flips and crops are views: hand out compact arrays
            if key in out:
                out[key] = np.ascontiguousarray(out[key])
        return out

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator) -> Sample:
        return self.augment(self.resize(sample, rng), rng)
