"""Output-space adversarial pieces of the ADVENT family (docs/methods.md A.5, B.5, B.12).

* :func:`entropy_map` — ADVENT's per-channel "weighted self-information"
  E_c = −p_c·log₂ p_c / log₂ C of a softmax map: C channels, each in [0, 1/e·…], not summed.
* :func:`minent_loss` — MinEnt: the mean over pixels of Σ_c E_c (the normalised entropy, in [0, 1]).
* :class:`FCDiscriminator` — five 4×4 stride-2 convs, C → 64 → 128 → 256 → 512 → 1, LeakyReLU 0.2
  between them, no normalisation, no sigmoid (trained with BCE on logits).
* :func:`domain_bce` — BCE-with-logits of a discriminator map against one domain label
  (source = 0, target = 1), averaged over the map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SOURCE_LABEL, TARGET_LABEL = 0.0, 1.0


def entropy_map(prob: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] probabilities → [B, C, H, W] weighted self-information in bits / log₂ C."""
    c = prob.shape[1]
    return -prob * torch.log2(prob + 1e-30) / math.log2(c)


def minent_loss(prob: torch.Tensor) -> torch.Tensor:
    return entropy_map(prob).sum(dim=1).mean()


class FCDiscriminator(nn.Module):
    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(chans[-1], 1, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def domain_bce(logits: torch.Tensor, domain: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, domain))
