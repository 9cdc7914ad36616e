"""The EMA teacher of the self-training methods (docs/methods.md D1.1).

* α_t = min(1 − 1/(t + 1), α): the teacher starts as a running mean of the student (α_1 = 0.5,
  α_9 = 0.9) and settles at α (0.999 for DAFormer/HRDA/MIC, 0.99 for DACS).
* Only **parameters** are averaged; buffers (BatchNorm running statistics) are not. At t = 0 the
  student's parameters are copied.
* The teacher is never trained and never wrapped by DDP; it is updated from the *unwrapped*
  student, which DDP keeps identical on every rank, so the teachers stay identical too.
* Teacher forward (:meth:`EMATeacher.predict`): dropout and drop-path off; BatchNorm per
  ``bn_mode`` — ``"train"`` (reference behaviour and default: the whole UDA module stays in train
  mode, so the teacher's BN normalises with the statistics of the target batch and updates its own,
  otherwise unused, running statistics) or ``"eval"`` (running statistics).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

BN_MODES = ("train", "eval")


def ema_alpha(it: int, alpha: float) -> float:
    """The EMA momentum at iteration ``it`` (0-based): min(1 − 1/(it + 1), alpha)."""
    return min(1.0 - 1.0 / (it + 1), alpha)


def is_dropout(module: nn.Module) -> bool:
    """Dropout of any kind, timm/smp ``DropPath`` (stochastic depth) included."""
    return isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ == "DropPath"


@contextlib.contextmanager
def dropout_off(model: nn.Module):
    """Dropout and drop-path in eval mode inside the block; every module's mode restored after."""
    changed = [m for m in model.modules() if is_dropout(m) and m.training]
    for m in changed:
        m.eval()
    try:
        yield model
    finally:
        for m in changed:
            m.train()


class EMATeacher(nn.Module):
    def __init__(self, student: nn.Module, alpha: float = 0.999, bn_mode: str = "train"):
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ValueError(f"teacher bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"EMA alpha must be in [0, 1), got {alpha}")
        self.model = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.alpha, self.bn_mode = alpha, bn_mode

    @torch.no_grad()
    def update(self, student: nn.Module, it: int) -> float:
        """θ_T ← α_t·θ_T + (1 − α_t)·θ_S (a copy at ``it == 0``); returns α_t."""
        alpha = 0.0 if it == 0 else ema_alpha(it, self.alpha)
        for t, s in zip(self.model.parameters(), student.parameters()):
            if alpha == 0.0:
                t.copy_(s)
            else:
                t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        return alpha

    @torch.no_grad()
    def predict(self, x: torch.Tensor, call=None, dropout: bool = False):
        """Teacher logits for normalised images ``x`` (no gradient); ``call(model, x)`` instead of
        ``model(x)`` for another output (e.g. an auxiliary head's). BatchNorm follows ``bn_mode``;
        dropout and drop-path are off unless ``dropout`` (DiGA's reference runs its teacher with
        them on)."""
        self.model.train(self.bn_mode == "train")
        if dropout:
            for m in self.model.modules():
                if is_dropout(m):
                    m.train(True)
            return self.model(x) if call is None else call(self.model, x)
        with dropout_off(self.model):
            return self.model(x) if call is None else call(self.model, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)
