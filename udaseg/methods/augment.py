"""DACS photometric augmentation (docs/methods.md D1.4), on normalised image batches.

Per call, two uniform draws decide for the whole batch whether colour jitter (p = 0.8) and blur
(p = 0.5) apply; each sample is then transformed with its own random parameters, as DACS does by
calling its transform per sample. Colour jitter uses kornia's ``ColorJiggle`` — the semantics of
kornia 0.5's ``ColorJitter`` that the reference pinned: additive brightness (factor in [0.8, 1.2],
shift = factor − 1), contrast and saturation factors in [0.8, 1.2], hue shift in [−0.2, 0.2] turns,
random order — applied in [0, 1] after de-normalising, then re-normalised. Blur: σ ~ U(0.15, 1.15)
per sample (same in x and y), kernel ≈ 10% of the image size made odd (51 for 512, 103 for 1024),
reflect border.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import kornia
import torch


def blur_kernel_size(size: int) -> int:
    """DACS: floor(ceil(0.1·S) − 0.5 + ceil(0.1·S) mod 2), i.e. ceil(0.1·S), minus 1 if even."""
    k = math.ceil(0.1 * size)
    return int(math.floor(k - 0.5 + k % 2))


def color_jitter(img01: torch.Tensor, strength: float = 0.2) -> torch.Tensor:
    """kornia-0.5 ColorJitter on a batch in [0, 1], independent parameters per sample."""
    jitter = kornia.augmentation.ColorJiggle(strength, strength, strength, strength, p=1.0)
    return torch.stack([jitter(x[None])[0] for x in img01])


def gaussian_blur(img: torch.Tensor, sigma_range: tuple[float, float] = (0.15, 1.15),
                  shared_sigma: bool = False) -> torch.Tensor:
    """Blur each image with σ ~ U(sigma_range) of its own (``shared_sigma``: one σ for the batch,
    as when DACS's transform is called on a whole batch, e.g. MIC's target augmentation)."""
    ky, kx = blur_kernel_size(img.shape[-2]), blur_kernel_size(img.shape[-1])
    if shared_sigma:
        sigma = float(torch.empty(()).uniform_(*sigma_range))
        return kornia.filters.gaussian_blur2d(img, (ky, kx), (sigma, sigma), border_type="reflect")
    out = []
    for x in img:
        sigma = float(torch.empty(()).uniform_(*sigma_range))
        out.append(kornia.filters.gaussian_blur2d(x[None], (ky, kx), (sigma, sigma), border_type="reflect")[0])
    return torch.stack(out)


def photometric_augment(img: torch.Tensor, normalize: Callable, denormalize: Callable, *,
                        jitter_p: float = 0.8, jitter_strength: float = 0.2, blur: bool = True,
                        shared_sigma: bool = False) -> torch.Tensor:
    """DACS ``strong_transform`` without the mixing: ``img`` is a normalised batch; ``normalize``
    and ``denormalize`` map between [0, 1] RGB and the model's input space."""
    u_jitter, u_blur = torch.rand(2).tolist()
    if u_jitter < jitter_p:
        img = normalize(color_jitter(denormalize(img).clamp(0, 1), jitter_strength))
    if blur and u_blur > 0.5:
        img = gaussian_blur(img, shared_sigma=shared_sigma)
    return img
