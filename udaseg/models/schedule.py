"""Learning-rate schedules and optimizers.

The schedule reproduces mmcv 1.3.7's ``PolyLrUpdaterHook`` with linear warmup, as DAFormer/HRDA/MIC
train (docs/methods.md D4, "poly10warm"):

    regular(t) = (base − min_lr) · (1 − t/T)^power + min_lr
    lr(t)      = regular(t) · [1 − (1 − t/W)(1 − warmup_ratio)]   for t < W,   regular(t) after,

applied per parameter group (so the ×10 head group follows the same curve). With base 6e-5,
T = 40000, W = 1500, ratio 1e-6: lr(49) = 1.958e-6, the value in DAFormer issue #11's log.
The DeepLab-v2 family (ADVENT, BAFFT, DAF, DiGA) uses poly with power 0.9 and no warmup
(``warmup_iters: 0``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def poly_warmup_lr(base_lr: float, it: int, iters: int, *, power: float = 1.0, min_lr: float = 0.0,
                   warmup_iters: int = 0, warmup_ratio: float = 1e-6) -> float:
    """The learning rate of a group with base ``base_lr`` at iteration ``it`` (0-based)."""
    coeff = (1.0 - it / iters) ** power
    lr = (base_lr - min_lr) * coeff + min_lr
    if it < warmup_iters:
        k = (1.0 - it / warmup_iters) * (1.0 - warmup_ratio)
        lr *= 1.0 - k
    return lr


class ScheduledOptimizer:
    """An optimizer together with its LR schedule. ``set_iteration(t)`` writes lr(t) into every
    parameter group, from each group's own base lr (``initial_lr``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, iters: int, *, power: float = 1.0,
                 min_lr: float = 0.0, warmup_iters: int = 0, warmup_ratio: float = 1e-6):
        self.optimizer = optimizer
        self.iters, self.power, self.min_lr = iters, power, min_lr
        self.warmup_iters, self.warmup_ratio = warmup_iters, warmup_ratio
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def set_iteration(self, it: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = poly_warmup_lr(group["initial_lr"], it, self.iters, power=self.power,
                                         min_lr=self.min_lr, warmup_iters=self.warmup_iters,
                                         warmup_ratio=self.warmup_ratio)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def build_optimizer(param_groups: Iterable[dict], schedule, iters: int, *, lr: float | None = None,
                    warmup_iters: int | None = None) -> ScheduledOptimizer:
    """Optimizer of ``schedule.optimizer`` (adamw | sgd) over ``param_groups`` (each with its own
    ``lr`` and ``weight_decay``), scheduled by ``schedule``. ``lr``/``warmup_iters`` override the
    schedule's (e.g. a discriminator with its own base lr)."""
    groups = list(param_groups)
    base = schedule.lr if lr is None else lr
    for group in groups:
        group.setdefault("lr", base)
    opt: torch.optim.Optimizer
    if schedule.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=base, betas=tuple(schedule.betas), weight_decay=schedule.weight_decay)
    elif schedule.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=base, momentum=schedule.momentum, weight_decay=schedule.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {schedule.optimizer!r}")
    return ScheduledOptimizer(opt, iters, power=schedule.power, min_lr=schedule.min_lr,
                              warmup_iters=schedule.warmup_iters if warmup_iters is None else warmup_iters,
                              warmup_ratio=schedule.warmup_ratio)
