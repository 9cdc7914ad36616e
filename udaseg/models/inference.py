"""Test-time inference: whole image, sliding window, horizontal flip.

:func:`infer_logits` turns a batch of raw ``uint8`` images into class scores at the **label
resolution**. What it returns is always a tensor of *logits in the softmax sense*: ``softmax(out,
dim=1)`` are the predicted probabilities and ``out.argmax(1)`` the prediction, whatever the mode:

* ``whole`` (DAFormer's test mode): resize the image keeping its aspect ratio to fit
  ``test_scale`` (mmcv's rule: long side ≤ max(scale), short side ≤ min(scale); Cityscapes
  (1024, 512) turns 2048×1024 into 1024×512), bilinear, then rounded back to 0–255 integers as
  mmseg's cv2 resize of a uint8 image does; normalise; one forward; the logits are upsampled
  bilinearly straight to ``out_size`` (one step; mmseg goes through the network-input size
  first, a difference confined to a few boundary pixels).
* ``slide`` (HRDA's test mode): mmseg's grid over the (resized) image,
  ``n = max(H − h_win + h_stride − 1, 0) // h_stride + 1`` rows (likewise columns), window
  ``i`` starting at ``i·stride`` and clamped so it ends at the image border; each window's logits
  are upsampled to the window size, summed into a canvas and divided by the per-pixel window
  count, then upsampled to ``out_size``. All windows of a batch have one size, so they run
  batched (``max_windows_per_forward`` bounds memory).
* ``flip``: the same for the horizontally flipped image, flipped back; the two softmax
  probability maps are averaged (mmseg's ``aug_test``) and returned as their logarithm.

Logits are upsampled with the model's ``align_corners`` (False for the mmseg line, True for the
DeepLab-v2 line). Any model with ``normalize(img)`` and ``forward(x) -> logits`` works (e.g. an
HRDA segmentor).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from udaseg.errors import ConfigError

MODES = ("whole", "slide")
# How an image is resized before inference: bilinear as mmcv/cv2 (the DAFormer line), or bicubic
# with antialiasing as PIL's BICUBIC (the ADVENT/DeepLab-v2 line's loaders: AdvEnt, DAF, BAFFT, DiGA).
INTERPOLATIONS = ("bilinear", "bicubic")


class Normalizing(Protocol):
    """What inference needs of a segmentor besides its forward: the input normalisation."""

    def normalize(self, img: torch.Tensor, value_range: float | None = None) -> torch.Tensor: ...


def resize_image(img: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """``img`` [B, 3, H, W] in 0–255 (any dtype) resized to ``size``, as float32 rounded to 0–255."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    x = img.float()
    if tuple(size) == tuple(x.shape[-2:]):
        return x
    if interpolation == "bicubic":
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    else:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255)


def keep_ratio_size(height: int, width: int, test_scale: tuple[int, int] | list[int] | None) -> tuple[int, int]:
    """mmcv ``rescale_size`` with ``keep_ratio``: the largest (h, w) of the image's aspect ratio
    whose long side ≤ max(test_scale) and short side ≤ min(test_scale). ``None``: unchanged."""
    if test_scale is None:
        return height, width
    long_edge, short_edge = max(test_scale), min(test_scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def slide_windows(height: int, width: int, window: tuple[int, int],
                  stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """mmseg ``slide_inference`` boxes ``(y1, y2, x1, x2)`` covering an ``height × width`` image."""
    (h_win, w_win), (h_stride, w_stride) = window, stride
    if min(h_win, w_win, h_stride, w_stride) <= 0:
        raise ValueError(f"slide window {window} and stride {stride} must be positive")
    rows = max(height - h_win + h_stride - 1, 0) // h_stride + 1
    cols = max(width - w_win + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * h_stride + h_win, height), min(c * w_stride + w_win, width)
            y1, x1 = max(y2 - h_win, 0), max(x2 - w_win, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


def _resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _forward(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    with _autocast(x.device, amp_dtype):
        return model(x).float()


def _slide_logits(model: nn.Module, x: torch.Tensor, window, stride, align_corners: bool,
                  amp_dtype: torch.dtype | None, max_windows: int | None) -> torch.Tensor:
    b, _, h, w = x.shape
    boxes = slide_windows(h, w, window, stride)
    crops = torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])  # window-major: [n·B, 3, h, w]
    chunk = max_windows or crops.shape[0]
    outs = [_forward(model, crops[i:i + chunk], amp_dtype) for i in range(0, crops.shape[0], chunk)]
    crop_size = (crops.shape[-2], crops.shape[-1])
    window_logits = _resize(torch.cat(outs), crop_size, align_corners)
    canvas = x.new_zeros((b, window_logits.shape[1], h, w), dtype=torch.float32)
    count = x.new_zeros((1, 1, h, w), dtype=torch.float32)
    for k, (y1, y2, x1, x2) in enumerate(boxes):
        canvas[:, :, y1:y2, x1:x2] += window_logits[k * b:(k + 1) * b]
        count[:, :, y1:y2, x1:x2] += 1
    return canvas / count


@torch.no_grad()
def infer_logits(model: nn.Module, img: torch.Tensor, mode: str = "whole",
                 test_scale: tuple[int, int] | list[int] | None = None,
                 window: tuple[int, int] | list[int] | None = None, stride: tuple[int, int] | list[int] | None = None,
                 flip: bool = False, out_size: tuple[int, int] | list[int] | None = None,
                 amp_dtype: torch.dtype | None = None, max_windows_per_forward: int | None = None,
                 scales: tuple[float, ...] | list[float] | None = None,
                 upsample: str = "logits", interpolation: str = "bilinear") -> torch.Tensor:
    """Scores ``[B, C, *out_size]`` (float32) for ``img`` ``uint8 [B, 3, H, W]`` RGB.

    ``out_size`` defaults to (H, W), the usual label resolution. ``window``/``stride`` (h, w) are
    required for ``slide`` and refer to the resized image. ``amp_dtype`` (e.g. ``torch.bfloat16``)
    runs the network under autocast. ``scales`` (e.g. (1.0, 0.5)): the element-wise max of the
    logits of the (normalised) image resized by each factor with the family's ``align_corners`` —
    DiGA/TridentAdapt's two-scale fusion of test time and pseudo-labels (whole mode only).
    ``upsample="probabilities"`` takes the softmax at the network's output size and upsamples the
    probabilities (BAFFT's pseudo-label generation, docs/methods.md A.9); the result is then their log, so
    that a softmax of it gives those probabilities back. The model is used as is: call
    ``model.eval()`` first. ``interpolation`` resizes the image to ``test_scale``
    (:func:`resize_image`).
    """
    if upsample not in ("logits", "probabilities"):
        raise ValueError(f"upsample must be 'logits' or 'probabilities', got {upsample!r}")
    if mode not in MODES:
        raise ValueError(f"inference mode must be one of {MODES}, got {mode!r}")
    if mode == "slide" and (window is None or stride is None):
        raise ValueError("slide inference needs window=(h, w) and stride=(h, w)")
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(img.shape)}")
    align_corners = bool(getattr(model, "align_corners", False))
    height, width = img.shape[-2:]
    size = (int(out_size[0]), int(out_size[1])) if out_size is not None else (height, width)
    device = next(model.parameters()).device

    x = resize_image(img.to(device=device), keep_ratio_size(height, width, test_scale), interpolation)
    x = cast(Normalizing, model).normalize(x, value_range=255.0)

    if scales and upsample != "logits":
        raise ValueError("multi-scale fusion (scales) fuses logits: it takes upsample='logits' only")
    if scales and mode != "whole":
        raise ValueError("multi-scale fusion (scales) works with whole-image inference only")

    def scores(inp: torch.Tensor) -> torch.Tensor:
        if scales:
            fused: torch.Tensor | None = None
            for s in scales:
                xs = inp if s == 1 else F.interpolate(inp, scale_factor=float(s), mode="bilinear",
                                                      align_corners=align_corners)
                logits = _resize(_forward(model, xs, amp_dtype), size, align_corners)
                fused = logits if fused is None else torch.maximum(fused, logits)
            assert fused is not None  # scales is not empty
            return fused
        if mode == "whole":
            logits = _forward(model, inp, amp_dtype)
        else:
            assert window is not None and stride is not None  # checked above
            logits = _slide_logits(model, inp, tuple(window), tuple(stride), align_corners, amp_dtype,
                                   max_windows_per_forward)
        if upsample == "probabilities":
            probs = _resize(logits.float().softmax(dim=1), size, align_corners)
            return probs.clamp_min_(torch.finfo(probs.dtype).tiny).log_()
        return _resize(logits, size, align_corners)

    logits = scores(x)
    if not flip:
        return logits
    probs = logits.softmax(dim=1) + scores(x.flip(-1)).flip(-1).softmax(dim=1)
    return (probs / 2).clamp_min_(torch.finfo(probs.dtype).tiny).log_()


@torch.no_grad()
def predict(model: nn.Module, img: torch.Tensor, **options) -> torch.Tensor:
    """``int64 [B, *out_size]`` class indices: the argmax of :func:`infer_logits`."""
    return infer_logits(model, img, **options).argmax(dim=1)


def inference_settings(spec=None, **overrides) -> dict:
    """The inference keyword arguments of :func:`infer_logits` (and ``evaluate``) for evaluation
    set ``spec`` — a benchmark's ``val`` entry (``mode``, ``test_scale``, ``window``, ``stride``,
    ``flip``, ``scales``, ``interpolation``), or None for plain whole-image inference. Each
    override that is given (not None, not False) replaces the spec's value: the command line's
    ``--mode``, ``--window`` … (a ``--flip`` can switch flipping on, not off; ``--scales 1`` switches
    multi-scale fusion off). One reading of the protocol for training-time evaluation, ``eval``,
    ``predict`` and the run summary's pictures."""
    def get(key: str):
        return spec.get(key) if spec is not None else None

    def pair(value):
        return tuple(value) if value else None

    settings: dict = {"mode": get("mode") or "whole", "test_scale": pair(get("test_scale")),
                      "window": pair(get("window")), "stride": pair(get("stride")), "flip": bool(get("flip")),
                      "scales": tuple(float(s) for s in get("scales")) if get("scales") else None,
                      "interpolation": get("interpolation") or "bilinear"}
    for key, value in overrides.items():
        if key not in settings:
            raise TypeError(f"inference_settings: unknown setting {key!r}")
        if value is not None and value is not False:
            settings[key] = (tuple(float(s) for s in value) if key == "scales"
                             else tuple(value) if isinstance(value, list | tuple) else value)
    if settings["scales"] == (1.0,):
        settings["scales"] = None  # one scale is plain inference
    if settings["scales"] and settings["mode"] != "whole":
        raise ConfigError(f"inference: scales {list(settings['scales'])} fuse whole-image inference only, not "
                          f"{settings['mode']!r} (pass --scales 1 to slide)")
    return settings


def describe(mode: str, test_scale=None, window=None, stride=None, flip: bool = False, scales=None,
             interpolation: str = "bilinear") -> dict:
    """The inference protocol as recorded in ``eval.json``."""
    info: dict = {"mode": mode, "flip": bool(flip), "test_scale": list(test_scale) if test_scale else None}
    if test_scale and interpolation != "bilinear":
        info["interpolation"] = interpolation
    if scales:
        info["scales"] = [float(s) for s in scales]
    if mode == "slide":
        info["window"] = list(window) if window is not None else None
        info["stride"] = list(stride) if stride is not None else None
    return info


def count_windows(height: int, width: int, window, stride) -> int:
    """How many windows :func:`slide_windows` uses (for logs)."""
    return len(slide_windows(height, width, window, stride))


__all__ = ["MODES", "count_windows", "describe", "infer_logits", "keep_ratio_size", "predict", "slide_windows"]
