"""EBDA's entropy balance (docs/methods.md T2): pull every pixel's prediction entropy
towards a target H*.

L_EB = λ · mean_p (H(p) − H*)², H(p) = −Σ_k s_k(p) ln s_k(p) in nats of the softmax ``s`` of the
logits upsampled to the image size, averaged over **every** pixel (ignored and source-pasted ones
included; no pseudo-label weight). dL/dH = 2λ(H − H*)/N: uncertain pixels (H > H*) are sharpened,
over-confident ones (H < H*) softened. λ = 0.1 and H* = 0.4 nats in the reference.

:class:`DynamicEntropyTarget` is our reading of a variant in the reference: H* follows an
EMA (momentum 0.9999) of a percentile (60th) of the batch's per-pixel entropy. In the released
``dacs.py`` that EMA (started at the first batch's percentile) is only computed and logged — the
loss always uses the fixed 0.4 — so a dynamic *loss target* is an option here, not the reference.
Its start: ``initial`` (default the fixed H*, 0.4), or ``initial=None`` — the first batch's
percentile, as the reference's logged statistic; at momentum 0.9999 that pins H* near the
untrained network's high entropy for thousands of iterations, hence not the default.

:class:`EntropyBalance` is EBDA as an add-on of DAFormer's step (:mod:`udaseg.methods.addons`),
``method.ebda.*``: ``weight`` λ (0.1), ``target`` H* (0.4 nats), ``mode`` — ``separate`` (the
reference: a second student pass on the same augmented mixed images with its own backward, fresh
dropout/drop-path noise, BN statistics updated again) or ``reuse`` (the loss on the mixed CE's
logits, one backward; a third cheaper, not faithful) — and the dynamic target (``dynamic``,
``momentum``, ``percentile``, ``target_init`` fixed | first_batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from udaseg.methods.addons import AddOn
from udaseg.methods.losses import upsample_to

EBDA_MODES = ("separate", "reuse")


def pixel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of the softmax over dim 1: [B,C,H,W] → [B,H,W] (fp32)."""
    log_p = logits.float().log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def entropy_balance_loss(logits: torch.Tensor, size: tuple[int, int], target: float | torch.Tensor,
                         weight: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ·mean (H − H*)², H) of ``logits`` [B,C,h,w] upsampled to ``size``; H is returned detached
    for statistics and the dynamic target."""
    entropy = pixel_entropy(upsample_to(logits, size))
    return weight * (entropy - target).pow(2).mean(), entropy.detach()


class DynamicEntropyTarget(nn.Module):
    """H* ← m·H* + (1 − m)·percentile_q(H of the batch); a buffer, so it is checkpointed."""

    value: torch.Tensor  # a buffer

    def __init__(self, initial: float | None = 0.4, momentum: float = 0.9999, percentile: float = 60.0):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"entropy target momentum must be in [0, 1), got {momentum}")
        if not 0.0 < percentile < 100.0:
            raise ValueError(f"entropy target percentile must be in (0, 100), got {percentile}")
        self.momentum, self.percentile = momentum, percentile
        self.register_buffer("value", torch.tensor(float("nan") if initial is None else float(initial)))

    @property
    def started(self) -> bool:
        return not bool(torch.isnan(self.value))

    @torch.no_grad()
    def update(self, entropy: torch.Tensor) -> float:
        flat = entropy.flatten().float()
        if flat.numel() > 2 ** 24:  # torch.quantile's input limit; a strided subsample keeps the quantile
            flat = flat[:: flat.numel() // 2 ** 24 + 1]
        q = torch.quantile(flat, self.percentile / 100.0)
        if not self.started:  # initial=None: start at the first batch's percentile
            self.value.copy_(q)
        else:
            self.value.mul_(self.momentum).add_((1 - self.momentum) * q.to(self.value))
        return float(self.value)


@dataclass
class EntropyBalanceConfig:
    enabled: bool = False
    weight: float = 0.1  # λ
    target: float = 0.4  # H* in nats (the dynamic target's start)
    mode: str = "separate"  # separate (reference: its own student pass) | reuse (the mixed CE's logits)
    dynamic: bool = False  # H* = EMA of a percentile of the batch entropy (reference, commented out)
    momentum: float = 0.9999
    percentile: float = 60.0
    target_init: str = "fixed"  # dynamic H*'s start: fixed (target) | first_batch (the reference's log)


class EntropyBalance(AddOn):
    """EBDA: λ·mean (H − H*)² of the student's prediction of the augmented mixed images ("loss_eb")."""

    key = "ebda"

    def __init__(self, cfg: EntropyBalanceConfig):
        super().__init__(cfg)
        if cfg.target_init not in ("fixed", "first_batch"):
            raise ValueError(f"method.ebda.target_init must be 'fixed' or 'first_batch', got {cfg.target_init!r}")
        if cfg.mode not in EBDA_MODES:
            raise ValueError(f"method.ebda.mode must be one of {EBDA_MODES}, got {cfg.mode!r}")
        self.own_pass = cfg.mode == "separate"
        self.target = (DynamicEntropyTarget(None if cfg.target_init == "first_batch" else cfg.target,
                                            cfg.momentum, cfg.percentile) if cfg.dynamic else None)
        self._entropies: list[float] = []

    pass_uses_aux_head = False  # the separate pass runs the prediction only

    def build(self, method):
        return {"entropy_target": self.target} if self.target is not None else {}

    def mixed_losses(self, method, s):
        if self.own_pass:
            return {}
        return {"loss_eb": self.loss(s.mixed_logits, s.mixed_img.shape[-2:])}

    def pass_losses(self, method, s):
        return {"loss_eb": self.loss(method.student_pass(s.mixed_img, aux=False)[0], s.mixed_img.shape[-2:])}

    def loss(self, logits, size):
        """λ·mean (H − H*)² over every pixel of the prediction (H* fixed, or dynamic)."""
        if self.target is not None and not self.target.started:  # first_batch start
            self.target.update(pixel_entropy(upsample_to(logits.detach(), tuple(size))))
        target = self.target.value if self.target is not None else self.cfg.target
        loss, entropy = entropy_balance_loss(logits, tuple(size), target, self.cfg.weight)
        if self.target is not None:
            self.target.update(entropy)
        self._entropies.append(float(entropy.mean()))
        return loss

    def diagnostics(self):
        """The mixed prediction's mean entropy (nats) and the target."""
        if not self._entropies:
            return {}
        row = {"mixed_entropy": sum(self._entropies) / len(self._entropies),
               "entropy_target": float(self.target.value) if self.target is not None else self.cfg.target}
        self._entropies = []
        return row
