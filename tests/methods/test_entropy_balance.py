"""EBDA's entropy balance (docs/methods.md T2) on hand-made probability maps, and as an
option of DAFormer (separate and reuse modes, HRDA, the dynamic target)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from udaseg import config as config_lib
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_checkpoint
from udaseg.methods.entropy_balance import DynamicEntropyTarget, entropy_balance_loss, pixel_entropy


def _logits(*probs):
    """[1, C, 1, N] logits whose softmax at pixel n is probs[n]."""
    return torch.tensor(probs, dtype=torch.float64).log().T[None, :, None, :]


def test_entropy_in_nats_and_loss_value_by_hand():
    logits = _logits((0.6, 0.4), (0.9, 0.1))
    h = pixel_entropy(logits)[0, 0]
    # −(0.6 ln 0.6 + 0.4 ln 0.4) = 0.673012; −(0.9 ln 0.9 + 0.1 ln 0.1) = 0.325083
    assert h.tolist() == pytest.approx([0.673012, 0.325083], abs=1e-6)
    loss, entropy = entropy_balance_loss(logits, (1, 2), target=0.4, weight=0.1)
    # 0.1 · ((0.673012 − 0.4)² + (0.325083 − 0.4)²) / 2 = 0.1 · (0.074536 + 0.005613) / 2
    assert float(loss) == pytest.approx(0.0040074, abs=1e-6)
    assert torch.equal(entropy, h[None, None]) and not entropy.requires_grad
    uniform = torch.zeros(1, 19, 2, 2)
    assert float(pixel_entropy(uniform).mean()) == pytest.approx(math.log(19), abs=1e-6)


def test_every_pixel_counts_after_upsampling():
    """The mean runs over every pixel of the upsampled prediction (no mask, no weight)."""
    logits = torch.randn(2, 5, 4, 4)
    loss, entropy = entropy_balance_loss(logits, (8, 8), target=0.4, weight=1.0)
    assert entropy.shape == (2, 8, 8)
    assert float(loss) == pytest.approx(float(((entropy - 0.4) ** 2).mean()), rel=1e-6)


def test_gradient_sharpens_the_uncertain_and_softens_the_overconfident():
    logits = _logits((0.6, 0.4), (0.95, 0.05)).requires_grad_()
    before = pixel_entropy(logits).detach()[0, 0]
    assert before[0] > 0.4 > before[1]
    loss, _ = entropy_balance_loss(logits, (1, 2), target=0.4, weight=0.1)
    loss.backward()
    with torch.no_grad():
        after = pixel_entropy(logits - 1.0 * logits.grad)[0, 0]
    assert after[0] < before[0]  # H > H*: entropy minimised
    assert after[1] > before[1]  # H < H*: confidence penalised


def test_dynamic_target_is_an_ema_of_the_percentile():
    target = DynamicEntropyTarget(initial=0.4, momentum=0.5, percentile=50)
    assert float(target.value) == pytest.approx(0.4)
    # median of [0, 1, 2, 3, 4] = 2 → 0.5 · 0.4 + 0.5 · 2
    assert target.update(torch.arange(5.0)) == pytest.approx(1.2)
    assert target.update(torch.full((3,), 1.2)) == pytest.approx(1.2)
    assert "value" in target.state_dict()
    with pytest.raises(ValueError):
        DynamicEntropyTarget(momentum=1.0)
    first = DynamicEntropyTarget(initial=None, momentum=0.5, percentile=50)  # the reference's logged start
    assert not first.started
    assert first.update(torch.arange(5.0)) == pytest.approx(2.0) and first.started  # the first median itself
    assert first.update(torch.zeros(3)) == pytest.approx(1.0)


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' not in line]


def _count_student_calls(monkeypatch):
    from udaseg.methods.daformer import DAFormer

    calls = []
    original = DAFormer.student_pass

    def counting(self, img, **kwargs):
        calls.append(img.shape[0])
        return original(self, img, **kwargs)

    monkeypatch.setattr(DAFormer, "student_pass", counting)
    return calls


@pytest.mark.parametrize("mode,passes", [("separate", 3), ("reuse", 2)])
def test_ebda_option_of_daformer(tmp_path, tiny_train_args, monkeypatch, mode, passes):
    calls = _count_student_calls(monkeypatch)
    args = tiny_train_args("ebda", iters=2, **{"method.ebda.mode": mode, "method.pseudo_ignore_top": 0,
                                               "method.pseudo_ignore_bottom": 4, "method.fd.weight": 0})
    trainer.train(config_lib.compose(args), tmp_path / "r", progress=False)
    assert len(calls) == 2 * passes  # source, mixed (and EBDA's own pass on the mixed images)
    rows = _rows(tmp_path / "r")
    assert all(0.0 < r["loss_eb"] < 0.1 * math.log(19) ** 2 for r in rows)
    assert all(0.0 <= r["mixed_entropy"] <= math.log(19) + 1e-6 and r["entropy_target"] == 0.4 for r in rows)


@pytest.mark.parametrize("init", ["fixed", "first_batch"])
def test_dynamic_target_with_hrda_is_checkpointed(tmp_path, tiny_train_args, init):
    hrda = ["model.hrda={hr_crop_size: [16, 32], hr_slide_stride: [8, 16], test_window: [32, 64], "
            "test_stride: [16, 32], attention_embed_dim: 8}"]
    args = tiny_train_args("ebda", iters=2, **{"method.ebda.dynamic": "true", "method.ebda.momentum": 0.5,
                                               "method.ebda.target_init": init, "method.pseudo_ignore_top": 0,
                                               "method.pseudo_ignore_bottom": 4,
                                               "method.fd.weight": 0}) + hrda
    trainer.train(config_lib.compose(args), tmp_path / "r", progress=False)
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["method"]["modules"]
    value = float(state["entropy_target.value"])
    assert value != 0.4 and math.isfinite(value)  # moved towards the batch percentile (or started at it)
    assert _rows(tmp_path / "r")[-1]["entropy_target"] == pytest.approx(float(state["entropy_target.value"]))


def test_unknown_ebda_mode_is_an_error(tmp_path, tiny_train_args):
    with pytest.raises(ValueError, match="ebda.mode"):
        trainer.train(config_lib.compose(tiny_train_args("ebda", iters=1, **{"method.ebda.mode": "fast"})),
                      tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="ebda.target_init"):
        trainer.train(config_lib.compose(tiny_train_args("ebda", iters=1, **{"method.ebda.target_init": "mean"})),
                      tmp_path / "r2", progress=False)


def test_foggy_and_rain_as_one_target_stream(tmp_path, tiny_train_args):
    """cs2foggyrain's layout on MiniCity: Foggy (every β) and Rain Cityscapes joined, balanced."""
    from udaseg.engine.trainer import build_stream

    args = tiny_train_args("ebda", iters=1, benchmark="minicity_cs2foggy", **{
        "benchmark.target.options": "{beta: all}", "benchmark.target.union_mix": "balanced",
        "benchmark.target.union": "[{dataset: cityscapes_rain, root: cityscapes}]",
        "method.pseudo_ignore_top": 0, "method.pseudo_ignore_bottom": 4, "method.fd.weight": 0})
    cfg = config_lib.compose(args)
    stream = build_stream(cfg.benchmark.target, cfg.data_root, "cityscapes19", 0, 1)
    fog, rain = stream.dataset.parts
    assert len(stream) == 2 * max(len(fog), len(rain)) and len(rain) < len(fog)
    trainer.train(cfg, tmp_path / "r", progress=False)
    bad = config_lib.compose(args[:-1] + ["benchmark.target.union=[{dataset: cityscapes_rain}]"])
    with pytest.raises(Exception, match=r"union\[0\]"):
        build_stream(bad.benchmark.target, bad.data_root, "cityscapes19", 0, 1)
