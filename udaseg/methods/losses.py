"""Loss functions shared by the methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from udaseg.data.catalog import IGNORE_INDEX
from udaseg.models.hrda import crop_box


def upsample_to(logits: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of logits to ``size`` (by default align_corners=False, as mmseg's resize); a
    no-op when the size already matches."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def nearest_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of integer label maps [B, H, W] to ``size`` (e.g. a feature grid);
    a no-op when the size already matches."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def seg_cross_entropy(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
                      *, norm: str = "all") -> torch.Tensor:
    """Pixel-wise cross-entropy of ``logits`` [B,C,h,w] (upsampled to the label size) against
    ``label`` [B,H,W] with 255 ignored, optionally weighted per pixel by ``weight`` [B,H,W].

    ``norm="all"`` divides by all B·H·W pixels, ignored ones included (mmseg 0.16's
    CrossEntropyLoss, which the DAFormer line trains with); ``norm="valid"`` by the non-ignored
    pixels only (PyTorch's default)."""
    logits = upsample_to(logits, label.shape[-2:]).float()
    loss = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")
    if weight is not None:
        loss = loss * weight
    if norm == "all":
        return loss.mean()
    if norm == "valid":
        return loss.sum() / (label != IGNORE_INDEX).sum().clamp(min=1)
    raise ValueError(f"norm must be 'all' or 'valid', got {norm!r}")


def hrda_loss(fused, hr, box, label, weight=None, *, hr_weight: float = 0.1, norm: str = "all") -> torch.Tensor:
    """(1 − hr_weight)·CE(fused, y) + hr_weight·CE(hr, crop(y)) (HRDA: 0.9 / 0.1), the pixel
    weights cropped alike."""
    loss = (1 - hr_weight) * seg_cross_entropy(fused, label, weight, norm=norm)
    if hr_weight:
        hr_w = crop_box(weight, box) if weight is not None else None
        loss = loss + hr_weight * seg_cross_entropy(hr, crop_box(label, box), hr_w, norm=norm)
    return loss
