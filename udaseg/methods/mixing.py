"""ClassMix as DACS/DAFormer mix (docs/methods.md D1.3).

For each sample, ⌈n/2⌉ of n candidate classes are chosen uniformly without replacement; the
sample's mask is 1 where *its own* source label is one of them. The candidates are

* ``"batch"`` (reference behaviour, the default): ``torch.unique`` over the **whole batch** of
  source labels — 255 included, and a chosen class may be absent from the sample (DAFormer #19);
* ``"per_image"`` (DACS as published): the unique labels of each source image, 255 excluded.

The mixed image, label and weight then take the source where the mask is 1 and the target
elsewhere (image in the normalised space; source pixels weigh 1).
"""

from __future__ import annotations

import math

import torch

from udaseg.data.catalog import IGNORE_INDEX

MIX_CLASS_MODES = ("batch", "per_image")


def class_masks(source_label: torch.Tensor, mode: str = "batch", generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Float masks [B, H, W] from source labels [B, H, W]."""
    if mode not in MIX_CLASS_MODES:
        raise ValueError(f"mix_classes must be one of {MIX_CLASS_MODES}, got {mode!r}")
    batch_classes = torch.unique(source_label)
    masks = []
    for label in source_label:
        if mode == "batch":
            candidates = batch_classes
        else:
            candidates = torch.unique(label)
            candidates = candidates[candidates != IGNORE_INDEX]
        n = candidates.numel()
        order = torch.randperm(n, generator=generator, device="cpu").to(candidates.device)
        chosen = candidates[order[: math.ceil(n / 2)]]
        masks.append(torch.isin(label, chosen).float())
    return torch.stack(masks)


def mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mask·source + (1 − mask)·target; ``mask`` [B,H,W] broadcasts over a channel axis of
    [B,C,H,W] tensors and applies as is to [B,H,W] ones."""
    m = mask[:, None] if source.dim() == 4 else mask
    m = m.to(source.dtype) if source.is_floating_point() else m.bool()
    if source.is_floating_point():
        return m * source + (1 - m) * target
    return torch.where(m, source, target)
