"""Pseudo-labels of the self-training methods (DAFormer spec §1.2).

The teacher's logits are upsampled to the crop, soft-maxed; the pseudo-label is the arg-max. The
quality weight is **one scalar per batch** (the reference's choice): the fraction of all target
pixels of the batch whose confidence reaches τ (0.968). No pixel is dropped; confidence only sets
the scalar. ``threshold=None`` gives weight 1 (a MIC ablation).

Pseudo-label crop, DAFormer's "v1": the weight of the top and bottom rows of the target crop is
zeroed (15 and 120 rows of a 512 crop of 1024×512 Cityscapes: rectification artefacts and the ego
car's bonnet). HRDA/MIC's "v2" margins live in the data pipeline instead.
"""

from __future__ import annotations

import torch

from udaseg.methods.losses import upsample_to


@torch.no_grad()
def pseudo_label(teacher_logits: torch.Tensor, size: tuple[int, int], threshold: float | None = 0.968
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(label [B,H,W] int64, weight [B,H,W] float, confidence [B,H,W])`` for teacher logits
    [B,C,h,w] upsampled to ``size``. ``weight`` is the batch scalar q everywhere."""
    prob = torch.softmax(upsample_to(teacher_logits.float(), size), dim=1)
    confidence, label = prob.max(dim=1)
    if threshold is None:
        weight = torch.ones_like(confidence)
    else:
        q = (confidence >= threshold).float().mean()
        weight = q * torch.ones_like(confidence)
    return label, weight, confidence


def crop_pseudo_weight(weight: torch.Tensor, ignore_top: int = 0, ignore_bottom: int = 0) -> torch.Tensor:
    """Zero the weight of the top ``ignore_top`` and bottom ``ignore_bottom`` rows (v1 crop)."""
    if ignore_top < 0 or ignore_bottom < 0:
        raise ValueError("pseudo-label crop rows must be non-negative")
    if ignore_top + ignore_bottom >= weight.shape[1]:
        raise ValueError(f"the pseudo-label crop ({ignore_top} top + {ignore_bottom} bottom rows) leaves nothing "
                         f"of a {weight.shape[1]}-row crop; set method.pseudo_ignore_top/bottom for this crop size")
    weight = weight.clone()
    if ignore_top:
        weight[:, :ignore_top, :] = 0
    if ignore_bottom:
        weight[:, weight.shape[1] - ignore_bottom:, :] = 0
    return weight
