"""MIC's masked image consistency (Hoyer et al., "MIC: Masked Image Consistency for
Context-Enhanced Domain Adaptation", CVPR 2023; docs/methods.md D7).

Block masks: a uniform random grid of round(H/b) × round(W/b) values per image; a block is kept
where its value exceeds the mask ratio (0.7 → 70 % of the blocks dropped); the grid is upsampled
to H × W with nearest interpolation and multiplies the *normalised* image, so masked pixels take
the dataset-mean colour. b = 64 px for HRDA's full-resolution inputs, 32 for DAFormer's half
resolution.

:class:`MaskedImageConsistency` is MIC as an add-on of DAFormer's step (:mod:`udaseg.methods.addons`),
``method.mic.*``: after the mixed loss, the student on block-masked images learns the teacher's
pseudo-labels of the unmasked ones with their weight, λ·CE ("loss_mic", ``weight`` λ = 1), in a
student pass of its own (with HRDA the multi-resolution one; with TigDA the CMF head's loss too).
``mode``: ``separatetrgaug`` (sim→real) — the colour-augmented target batch (one blur σ for the
batch); ``separate`` (clear→adverse) — the first source image (its labels, weight 1) and the first
target image, not augmented. ``block_size`` 32 px for DAFormer's half resolution, 64 for HRDA's
full resolution; ``ratio`` 0.7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from udaseg.methods.addons import AddOn
from udaseg.methods.augment import photometric_augment

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


@dataclass
class MICConfig:
    enabled: bool = False
    mode: str = "separatetrgaug"  # separatetrgaug (sim→real) | separate (clear→adverse, batch ≥ 2)
    block_size: int = 32  # px: 32 for DAFormer's half resolution, 64 for HRDA's full resolution
    ratio: float = 0.7
    weight: float = 1.0  # λ


class MaskedImageConsistency(AddOn):
    key = "mic"
    own_pass = True

    def __init__(self, cfg: MICConfig):
        super().__init__(cfg)
        if cfg.mode not in MIC_MODES:
            raise ValueError(f"method.mic.mode must be one of {MIC_MODES}, got {cfg.mode!r}")

    def pass_losses(self, method, s):
        img, label, weight = self.masked_batch(method, s)
        return {"loss_mic": self.cfg.weight * method.supervised_loss(img, label, weight)[0]}

    def masked_batch(self, method, s):
        """The masked images with their targets (labels, pixel weights)."""
        cfg, mcfg = self.cfg, method.cfg
        if cfg.mode == "separatetrgaug":
            img = photometric_augment(s.tgt_img, method.student.normalize, method.student.denormalize,
                                      jitter_p=mcfg.color_jitter_p, jitter_strength=mcfg.color_jitter_strength,
                                      blur=mcfg.blur, shared_sigma=True)
            label, weight = s.pl_label, s.pl_weight
        else:
            img = torch.cat([s.src_img[:1], s.tgt_img[:1]])
            label = torch.cat([s.src_label[:1], s.pl_label[:1]])
            weight = torch.cat([torch.ones_like(s.pl_weight[:1]), s.pl_weight[:1]])
        keep = block_mask(img.shape[0], tuple(img.shape[-2:]), cfg.block_size, cfg.ratio, device=img.device)
        return img * keep, label, weight
