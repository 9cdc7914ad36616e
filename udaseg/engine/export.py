"""Writing predictions as PNG files (``udaseg predict``, test-server submissions).

Formats (file ``<stem><suffix>.png``; the servers match files by the image's stem):

=============  ========================  ===========================================================
format         default suffix            content
=============  ========================  ===========================================================
``labelid``    ``_labelIds``             8-bit single channel, Cityscapes label ids (7 = road …) —
                                         what the Cityscapes server and cityscapesscripts score
``trainid``    ``_labelTrainIds``        8-bit single channel, ids of the label space (0 = road …)
                                         — what the ACDC and Dark Zurich servers take
``color``      ``_color``                RGB, the label space's palette
``overlay``    ``_overlay``              RGB, palette blended over the input image
=============  ========================  ===========================================================

Predictions are written at the size they come in; for server submissions that must be the
original image size (``infer_logits(..., out_size=(H, W))`` does that).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from udaseg.data.catalog import IGNORE_INDEX, LabelSpace, colorize

EXPORT_FORMATS: dict[str, str] = {"labelid": "_labelIds", "trainid": "_labelTrainIds", "color": "_color",
                                  "overlay": "_overlay"}


def _as_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def to_label_ids(pred: torch.Tensor | np.ndarray, label_space: LabelSpace) -> np.ndarray:
    """Label-space ids → Cityscapes label ids (``uint8``); ids without one (255) → 0, unlabeled."""
    if label_space.to_label_id is None:
        raise ValueError(f"label space {label_space.name!r} has no Cityscapes label ids; export trainid instead")
    lut = np.zeros(256, dtype=np.uint8)
    for space_id, label_id in label_space.to_label_id.items():
        lut[space_id] = label_id
    return lut[_as_numpy(pred).astype(np.int64).clip(0, 255)]


def color_image(pred: torch.Tensor | np.ndarray, label_space: LabelSpace) -> np.ndarray:
    """``uint8 [H, W, 3]`` palette image; 255 (ignore) is black."""
    return colorize(_as_numpy(pred).astype(np.int64).clip(0, 255), label_space.palette)


def overlay_image(image: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray, label_space: LabelSpace,
                  alpha: float = 0.5) -> np.ndarray:
    """Palette colours blended over ``image`` (``uint8`` RGB, [3, H, W] tensor or [H, W, 3] array)."""
    rgb = _as_numpy(image)
    if rgb.ndim == 3 and rgb.shape[0] == 3 and rgb.shape[-1] != 3:
        rgb = rgb.transpose(1, 2, 0)
    colors = color_image(pred, label_space).astype(np.float32)
    if rgb.shape[:2] != colors.shape[:2]:
        raise ValueError(f"image {rgb.shape[:2]} and prediction {colors.shape[:2]} differ in size")
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colors
    return blended.round().clip(0, 255).astype(np.uint8)


def export_prediction(pred: torch.Tensor | np.ndarray, out_dir: str | os.PathLike, stem: str, fmt: str,
                      label_space: LabelSpace, image: torch.Tensor | np.ndarray | None = None,
                      suffix: str | None = None, alpha: float = 0.5) -> Path:
    """Write one ``[H, W]`` prediction of label-space ids as ``out_dir/<stem><suffix>.png``."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {tuple(EXPORT_FORMATS)}, got {fmt!r}")
    pred = _as_numpy(pred)
    if fmt == "labelid":
        array = to_label_ids(pred, label_space)
    elif fmt == "trainid":
        array = np.where((pred >= 0) & (pred < label_space.num_classes), pred, IGNORE_INDEX).astype(np.uint8)
    elif fmt == "color":
        array = color_image(pred, label_space)
    else:
        if image is None:
            raise ValueError("overlay export needs the input image")
        array = overlay_image(image, pred, label_space, alpha)
    path = Path(out_dir) / f"{stem}{EXPORT_FORMATS[fmt] if suffix is None else suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
