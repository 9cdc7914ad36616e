"""The LR schedule against the formula of docs/methods.md D4 and DAFormer's logged value."""

import math

import pytest
import torch

from udaseg.config import ScheduleConfig
from udaseg.models.schedule import build_optimizer, poly_warmup_lr


def test_daformer_lr_at_iteration_49_matches_the_log():
    # docs/methods.md D4: t=49 gives 1.958e-6 for base 6e-5 (DAFormer issue #11's log).
    lr = poly_warmup_lr(6e-5, 49, 40000, power=1.0, warmup_iters=1500, warmup_ratio=1e-6)
    expected = 6e-5 * (1 - 49 / 40000) * (1 - (1 - 49 / 1500) * (1 - 1e-6))
    assert lr == pytest.approx(expected, rel=1e-12)
    assert lr == pytest.approx(1.958e-6, abs=5e-10)
    # Scales with the base lr (the ×10 head group follows the same curve).
    assert poly_warmup_lr(6e-4, 49, 40000, warmup_iters=1500) == pytest.approx(10 * lr, rel=1e-12)


def test_warmup_end_and_poly_tail():
    assert poly_warmup_lr(6e-5, 0, 40000, warmup_iters=1500) == pytest.approx(6e-5 * 1e-6, rel=1e-9)
    assert poly_warmup_lr(6e-5, 1500, 40000, warmup_iters=1500) == pytest.approx(6e-5 * (1 - 1500 / 40000))
    assert poly_warmup_lr(6e-5, 20000, 40000, warmup_iters=1500) == pytest.approx(3e-5)
    # DeepLab family: poly 0.9, no warmup.
    assert poly_warmup_lr(2.5e-4, 1000, 250000, power=0.9) == pytest.approx(2.5e-4 * (1 - 1000 / 250000) ** 0.9)
    # mmcv's min_lr: (base - min) * coeff + min.
    assert poly_warmup_lr(1.0, 5, 10, min_lr=0.2) == pytest.approx(0.8 * 0.5 + 0.2)


def test_scheduled_optimizer_sets_every_group_from_its_own_base():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    sched = ScheduleConfig()
    opt = build_optimizer([{"params": [a], "lr": 6e-5}, {"params": [b], "lr": 6e-4, "weight_decay": 0.0}],
                          sched, iters=40000)
    opt.set_iteration(49)
    lrs = [g["lr"] for g in opt.optimizer.param_groups]
    assert lrs[0] == pytest.approx(1.958e-6, abs=5e-10) and lrs[1] == pytest.approx(10 * lrs[0])
    assert opt.optimizer.param_groups[1]["weight_decay"] == 0.0
    assert opt.optimizer.param_groups[0]["weight_decay"] == 0.01
    assert isinstance(opt.optimizer, torch.optim.AdamW) and opt.lr == lrs[0]
    assert not math.isnan(opt.lr)
