"""MIC's masked image consistency (Hoyer et al., "MIC: Masked Image Consistency for
Context-Enhanced Domain Adaptation", CVPR 2023; spec daformer_hrda_mic.md §7).

Block masks: a uniform random grid of round(H/b) × round(W/b) values per image; a block is kept
where its value exceeds the mask ratio (0.7 → 70 % of the blocks dropped); the grid is upsampled
to H × W with nearest interpolation and multiplies the *normalised* image, so masked pixels take
the dataset-mean colour. b = 64 px for HRDA's full-resolution inputs, 32 for DAFormer's half
resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIC_MODES = ("separatetrgaug", "separate")


def block_mask(batch: int, size: tuple[int, int], block: int, ratio: float, device=None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Float keep-masks [B, 1, H, W] (1 = visible)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    h, w = size
    grid = (max(1, round(h / block)), max(1, round(w / block)))
    values = torch.rand((batch, 1, *grid), generator=generator)
    keep = (values > ratio).float()
    return F.interpolate(keep, size=(h, w), mode="nearest").to(device)
