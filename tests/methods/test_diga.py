"""DiGA's pieces by hand (symmetric distillation, CrDoMix/ClassMix masks, OHEM, bilateral consensus,
prototype EMA and initial centroids, two-scale max fusion, the semi-supervised split), one
train_step of every phase and mode on a tiny model, and a short pipeline on the tiny MiniCity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from udaseg.config import ScheduleConfig
from udaseg.data.catalog import get_label_space
from udaseg.methods import MethodContext, create_method
from udaseg.methods.diga import (
    CentroidAccumulator,
    DiGAConfig,
    DiGADGConfig,
    DiGASemiSupConfig,
    DiGATranslatorConfig,
    PrototypeBank,
    bilateral_consensus,
    class_mix_masks,
    multi_scale_logits,
    ohem_cross_entropy,
    semisup_split,
    symmetric_distillation,
)
from udaseg.models.translator import ImageTranslator

CS = get_label_space("cityscapes19")
TINY_MODEL = {"name": "tiny_proda", "backbone": "tiny_cnn", "head": "proda_aspp", "align_corners": True,
              "backbone_options": {"width": 8, "depths": [1, 1, 1, 1], "output_stride": 8},
              "head_options": {"channels": 16, "groups": 4}}
FEATURE_DIM = 16


# -- the pieces by hand -----------------------------------------------------------------------
def _logits(*values):
    """[1, C, 1, 1] logits of one pixel."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def test_symmetric_distillation_by_hand():
    ln3 = math.log(3.0)
    student_clean = _logits(0.0, 0.0).requires_grad_()  # log p = (ln ½, ln ½)
    student_aug = _logits(ln3, 0.0).requires_grad_()  # p = (¾, ¼)
    teacher_clean, teacher_aug = _logits(0.0, 0.0), _logits(ln3, 0.0)
    total, forward, reverse = symmetric_distillation(student_clean, student_aug, teacher_clean, teacher_aug, 0.5)
    # teacher-clean (½, ½) → student-aug: −½ ln ¾ − ½ ln ¼ = ½ ln(16/3)
    assert float(forward.detach()) == pytest.approx(0.5 * math.log(16 / 3))
    # teacher-aug (¾, ¼) → student-clean: −¾ ln ½ − ¼ ln ½ = ln 2
    assert float(reverse.detach()) == pytest.approx(math.log(2))
    assert float(total.detach()) == pytest.approx(0.5 * math.log(16 / 3) + 0.5 * math.log(2))
    total.backward()
    # no same-view pair: each student view is pulled only towards the teacher's *other* view
    assert student_aug.grad.flatten().tolist() == pytest.approx([0.75 - 0.5, 0.25 - 0.5])
    assert student_clean.grad.flatten().tolist() == pytest.approx([0.5 * (0.5 - 0.75), 0.5 * (0.5 - 0.25)])
    # SYNTHIA's w_rev 0.25
    assert float(symmetric_distillation(student_clean, student_aug, teacher_clean, teacher_aug, 0.25)[0].detach()) == \
        pytest.approx(0.5 * math.log(16 / 3) + 0.25 * math.log(2))


def test_distillation_counts_every_pixel_and_upsamples_first():
    sc = torch.zeros(1, 2, 1, 2)
    sa = torch.tensor([[[[0.0, math.log(3)]], [[0.0, 0.0]]]])  # pixel 1: p = (¾, ¼)
    tc = torch.zeros(1, 2, 1, 2)
    _, forward, _ = symmetric_distillation(sc, sa, tc, tc, 0.5)
    assert float(forward) == pytest.approx((math.log(2) + 0.5 * math.log(16 / 3)) / 2)  # mean of two pixels
    _, masked, _ = symmetric_distillation(sc, sa, tc, tc, 0.5, valid=torch.tensor([[[0.0, 1.0]]]))
    assert float(masked) == pytest.approx(0.5 * math.log(16 / 3))  # the (off by default) ignore mask
    _, up, _ = symmetric_distillation(sc, sa, tc, tc, 0.5, size=(1, 3), align_corners=True)
    # align_corners: the middle pixel's logits are the mean (0, ln3/2 …) of the two
    mid = -(0.5 * torch.tensor([math.log(3) / 2, 0.0]).log_softmax(0)).sum()
    assert float(up) == pytest.approx((math.log(2) + float(mid) + 0.5 * math.log(16 / 3)) / 3, rel=1e-5)


def test_crdomix_mask_draws_half_the_label_values_plus_ignore():
    label = torch.tensor([[[0, 1, 2, 3, 4]]])  # |U| = 5, no ignore: exactly ⌊5/2⌋ = 2 classes
    for seed in range(20):
        mask = class_mix_masks(label, torch.Generator().manual_seed(seed))
        assert int(mask.sum()) == 2
    with_ignore = torch.tensor([[[0, 1, 2, 255, 255]]])  # |U| = 4 (255 counts): 2 drawn, + 255 always
    covered = []
    for seed in range(200):
        mask = class_mix_masks(with_ignore, torch.Generator().manual_seed(seed))[0, 0]
        assert mask[3:].tolist() == [1.0, 1.0]
        covered.append(int(mask[:3].sum()))
    assert set(covered) == {1, 2}  # 1 when 255 was one of the two drawn (probability ½)
    assert 0.35 < covered.count(1) / len(covered) < 0.65
    assert class_mix_masks(torch.full((1, 2, 2), 255)).tolist() == [[[1.0, 1.0], [1.0, 1.0]]]  # all ignore: all ones
    assert int(class_mix_masks(torch.full((1, 2, 2), 3)).sum()) == 0  # one class: ⌊1/2⌋ = 0 drawn
    two = class_mix_masks(torch.stack([torch.tensor([[0, 1]]), torch.tensor([[5, 6]])]))
    assert two.sum(dim=(1, 2)).tolist() == [1.0, 1.0]  # per image, from its own label values


def test_ohem_cross_entropy_by_hand():
    p = torch.tensor([0.9, 0.6, 0.3, 0.8])  # probability of the true class 0
    logits = torch.stack([p.log(), (1 - p).log()]).view(1, 2, 1, 4)
    label = torch.zeros(1, 1, 4, dtype=torch.long)
    # sorted (0.3, 0.6, 0.8, 0.9); min_kept 1 → max(0.6, 0.7) = 0.7: keep 0.6 and 0.3
    assert float(ohem_cross_entropy(logits, label, 0.7, 1)) == pytest.approx(-(math.log(0.6) + math.log(0.3)) / 2)
    # min_kept 3 → max(0.9, 0.7) = 0.9: keep 0.3, 0.6, 0.8
    assert float(ohem_cross_entropy(logits, label, 0.7, 3)) == pytest.approx(
        -(math.log(0.6) + math.log(0.3) + math.log(0.8)) / 3)
    label[0, 0, 1] = 255  # ignored pixels are never kept
    assert float(ohem_cross_entropy(logits, label, 0.7, 1)) == pytest.approx(-math.log(0.3))
    assert float(ohem_cross_entropy(logits, torch.full_like(label, 255))) == 0.0


def test_bilateral_consensus_on_toy_features_and_prototypes():
    bank = PrototypeBank(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
    features = torch.tensor([[[1.0, 9.0], [6.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])[None]  # [1, D=2, 2, 2]
    w = bank.weights(features)
    # f = (1, 0): distances (1, 9) → softmax(−1, −9)
    assert w[0, :, 0, 0].tolist() == pytest.approx([1 / (1 + math.exp(-8)), math.exp(-8) / (1 + math.exp(-8))])
    prototype_label = bank.nearest_label(features)
    assert prototype_label.tolist() == [[[0, 1], [1, 0]]]
    offline = torch.tensor([[[0, 0], [1, 255]]])
    assert bilateral_consensus(offline, prototype_label).tolist() == [[[0, 255], [1, 255]]]
    # at the crop size: weight maps upsampled bilinearly, then the arg-max
    assert bank.nearest_label(features, size=(4, 4)).shape == (1, 4, 4)


def test_prototype_ema_uses_label_and_argmax_agreement():
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]])
    features = torch.tensor([[[2.0, 8.0, 4.0]], [[2.0, 8.0, 6.0]]])[None]  # [1, 2, 1, 3]
    label = torch.tensor([[[0, 0, 1]]])
    pred = torch.tensor([[[0, 1, 1]]])  # pixel 1: label 0 but predicted 1 → in neither set
    bank = PrototypeBank(centroids, momentum=0.5, min_pixels=1)
    assert bank.update(features, label, pred) == 2
    assert bank.centroids.tolist() == [[1.0, 1.0], [7.0, 3.0], [5.0, 5.0]]  # ½·v + ½·mean; class 2 unseen
    strict = PrototypeBank(centroids, momentum=0.5, min_pixels=2)  # one pixel each < 2: no update
    assert strict.update(features, label, pred) == 0 and torch.equal(strict.centroids, centroids)
    zero = PrototypeBank(centroids, momentum=0.5, min_pixels=1)  # an all-zero mean is skipped
    assert zero.update(torch.zeros(1, 2, 1, 3), label, pred) == 0
    # the reference momentum, with the label given at the crop (2× the grid; nearest downsampling)
    bank = PrototypeBank(centroids, momentum=1e-4, min_pixels=1)
    bank.update(features, label.repeat_interleave(2, -1).repeat_interleave(2, -2), pred)
    assert bank.centroids[0].tolist() == pytest.approx([0.9999 * 0 + 1e-4 * 2.0] * 2)
    assert bank.centroids[1].tolist() == pytest.approx([0.9999 * 10 + 1e-4 * 4.0, 1e-4 * 6.0])


def test_prototype_skip_zero_sum_switch_by_hand():
    """A class whose mean is [1, −1, 0] (sum 0, not the zero vector): folded in by default, skipped
    with the reference's test ``vector.sum() == 0`` (``prototype_skip_zero_sum``)."""
    centroids = torch.tensor([[4.0, 4.0, 4.0], [2.0, 0.0, 6.0]])
    # two pixels of class 0 (features (3, −1, 0) and (−1, −1, 0): mean (1, −1, 0)), two of class 1
    # (features (2, 2, 2) and (4, 0, 0): mean (3, 1, 1), sum 5: updated under both settings)
    features = torch.tensor([[[3.0, -1.0, 2.0, 4.0]], [[-1.0, -1.0, 2.0, 0.0]], [[0.0, 0.0, 2.0, 0.0]]])[None]
    label = pred = torch.tensor([[[0, 0, 1, 1]]])
    default = PrototypeBank(centroids, momentum=0.5, min_pixels=1)
    assert default.skip_zero_sum is False and DiGAConfig().prototype_skip_zero_sum is False
    assert default.update(features, label, pred) == 2
    # ½·(4, 4, 4) + ½·(1, −1, 0) = (2.5, 1.5, 2); ½·(2, 0, 6) + ½·(3, 1, 1) = (2.5, 0.5, 3.5)
    assert default.centroids.tolist() == [[2.5, 1.5, 2.0], [2.5, 0.5, 3.5]]
    quirk = PrototypeBank(centroids, momentum=0.5, min_pixels=1, skip_zero_sum=True)
    assert quirk.update(features, label, pred) == 1
    assert quirk.centroids.tolist() == [[4.0, 4.0, 4.0], [2.5, 0.5, 3.5]]  # class 0 untouched
    # the all-zero mean is skipped under both settings
    for bank in (PrototypeBank(centroids, 0.5, 1), PrototypeBank(centroids, 0.5, 1, skip_zero_sum=True)):
        assert bank.update(torch.zeros(1, 3, 1, 4), label, pred) == 0
    # the initial centroids (the same reference function) follow the same switch
    for skip, expected in ((False, [1.0, -1.0, 0.0]), (True, [0.0, 0.0, 0.0])):
        acc = CentroidAccumulator(num_classes=2, dim=3, min_pixels=1, skip_zero_sum=skip)
        acc.add(features[0], pred[0])
        assert acc.centroids[0].tolist() == expected and acc.counts.tolist() == [float(not skip), 1.0]


def test_initial_centroids_running_mean_with_count_cap():
    acc = CentroidAccumulator(num_classes=2, dim=1, min_pixels=1, cap=2)
    for value in (1.0, 3.0, 8.0):
        acc.add(torch.full((1, 1, 2), value), torch.zeros(1, 2, dtype=torch.long))
    # 1; (1·1 + 3)/2 = 2; count capped at 2: (2·2 + 8)/3 = 4
    assert acc.centroids[0].item() == pytest.approx(4.0) and acc.counts.tolist() == [2.0, 0.0]
    assert acc.centroids[1].item() == 0.0


class _ScaleToy(nn.Module):
    """Logits that depend on the input's height: 8 rows → (0.9, 0.6), else (0.0, 0.7)."""

    align_corners = False

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def normalize(self, img, value_range=None):
        return img.float()

    def forward(self, x):
        values = (0.9, 0.6) if x.shape[-2] == 8 else (0.0, 0.7)
        b, _, h, w = x.shape
        return torch.tensor(values).view(1, 2, 1, 1).expand(b, 2, h // 2, w // 2).clone()


def test_two_scale_max_fusion():
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    fused = multi_scale_logits(_ScaleToy(), img, (1.0, 0.5))
    assert fused.shape == (1, 2, 8, 8)
    assert fused[0, :, 0, 0].tolist() == pytest.approx([0.9, 0.7])  # element-wise max of the two scales
    assert fused.argmax(1).unique().tolist() == [0]  # the mean (0.45, 0.65) or the 0.5 scale alone would say 1
    assert multi_scale_logits(_ScaleToy(), img, (0.5,)).argmax(1).unique().tolist() == [1]


def test_semisup_split_sizes_and_determinism():
    names = [f"img{i:04d}" for i in range(2975)]
    sizes = [len(semisup_split(names, f, seed=0)[0]) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2)]
    assert sizes == [186, 372, 744, 1488]
    labelled, unlabelled = semisup_split(names, 1 / 8, seed=3)
    assert sorted(labelled + unlabelled) == names and not set(labelled) & set(unlabelled)
    assert semisup_split(names, 1 / 8, seed=3) == (labelled, unlabelled) != semisup_split(names, 1 / 8, seed=4)


# -- one step of each phase and mode -----------------------------------------------------------
def _ctx(**inputs) -> MethodContext:
    return MethodContext(OmegaConf.create(TINY_MODEL), OmegaConf.structured(ScheduleConfig(warmup_iters=0)), 10, CS,
                         torch.device("cpu"), inputs=inputs)


def _batch(seed: int, b: int = 2, size=(32, 32), pseudo: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 19, (b, *size), generator=g)
    label[:, :4] = 255
    out = {"img": torch.randint(0, 256, (b, 3, *size), generator=g, dtype=torch.uint8), "label": label}
    if pseudo:
        out["pseudo_label"] = torch.randint(0, 19, (b, *size), generator=g)
        del out["label"]
    return out


def _translator_state():
    torch.manual_seed(1)
    return ImageTranslator(channels=4, res_blocks=1).state_dict()


def _centroids():
    torch.manual_seed(2)
    return {"centroids": torch.randn(19, FEATURE_DIM)}


def _step(cfg, inputs, target, it=0):
    torch.manual_seed(0)
    method = create_method(cfg, _ctx(**inputs))
    method.train()
    method.update_calls = []
    if method.prototypes is not None:  # spy on the prototype EMA (its arithmetic is tested by hand above)
        update = method.prototypes.update
        method.prototypes.update = lambda f, lab, pred: method.update_calls.append((f.shape, lab.shape)) or update(
            f, lab, pred)
    before = [p.detach().clone() for p in method.student.parameters()]
    losses = method.train_step(_batch(0), target, it)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, method.student.parameters()))  # one SGD step
    return method, losses


@pytest.mark.parametrize("cfg, inputs, with_target, terms", [
    (DiGAConfig(), {"translator": "T"}, True, {"loss_seg", "loss_distil"}),
    (DiGAConfig(styling="fda", augment_space="normalized", seg_loss="ohem", ohem_min_kept=100), {}, True,
     {"loss_seg", "loss_distil"}),
    (DiGAConfig(phase="selftrain", distil_lambda=0.25, photometric_beta=0.3), {"translator": "T", "centroids": "C"},
     True, {"loss_seg", "loss_mix", "loss_distil"}),
    (DiGAConfig(phase="selftrain", styling="fda", consensus=False, teacher_dropout=False, teacher_bn="eval"),
     {"centroids": "C"}, True, {"loss_seg", "loss_mix", "loss_distil"}),
    (DiGADGConfig(), {}, False, {"loss_seg", "loss_distil"}),
    (DiGASemiSupConfig(), {}, True, {"loss_seg", "loss_distil"}),
    (DiGASemiSupConfig(phase="selftrain"), {"centroids": "C"}, True, {"loss_seg", "loss_mix", "loss_distil"}),
], ids=["warmup-translator", "warmup-fda-quirks-ohem", "selftrain-translator", "selftrain-fda-ablations", "dg",
        "semisup-warmup", "semisup-selftrain"])
def test_one_train_step_of_each_phase_and_mode(cfg, inputs, with_target, terms):
    inputs = {k: (_translator_state() if v == "T" else _centroids()) for k, v in inputs.items()}
    target = _batch(1, pseudo=cfg.phase == "selftrain") if with_target else None
    method, losses = _step(cfg, inputs, target)
    assert set(losses) == terms
    if cfg.phase == "selftrain":
        # the EMA sees the teacher's target features with ŷ, then its CrDoMix source features with y
        assert method.update_calls == [((2, FEATURE_DIM, 4, 4), (2, 32, 32))] * 2
        method.observe_target_labels(torch.randint(0, 19, (2, 32, 32)))
        row = method.diagnostics_row()
        assert 0.0 <= row["consensus_kept"] <= 1.0 and 0.0 <= row["pl_acc_offline"] <= 1.0
        if not cfg.consensus:
            assert row["consensus_kept"] == 1.0
    if cfg.styling == "translator":
        assert all(not p.requires_grad for p in method.translator.parameters()) and not method.translator.training
        assert any(k.startswith("translator.") for k in method.state_dict())


def test_teacher_is_a_copy_at_step_0_and_target_bn_update_is_an_extra_student_forward():
    calls = []
    for leak in (False, True):
        torch.manual_seed(0)
        method = create_method(DiGAConfig(styling="fda", target_bn_update=leak), _ctx())
        method.train()
        count = [0]
        method.student.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))  # noqa: B023 (runs in this iteration)
        method.train_step(_batch(0), _batch(1), 0)
        calls.append(count[0])
    assert calls == [1, 2]  # [x, x̂] in one pass; + the target forward (BN running statistics) when on
    # at t = 0 the teacher was copied from the student before its step
    torch.manual_seed(0)
    method = create_method(DiGAConfig(styling="none"), _ctx())
    initial = [p.detach().clone() for p in method.student.parameters()]
    method.train()
    method.train_step(_batch(0), None, 0)
    assert all(torch.equal(t, s) for t, s in zip(method.teacher.model.parameters(), initial))


def test_dg_reads_target_data_only_for_the_reference_bn_leak():
    from udaseg.methods.diga import DiGADG

    assert not DiGADG.reads_target(DiGADGConfig()) and DiGADG.reads_target(DiGADGConfig(target_bn_update=True))
    torch.manual_seed(0)
    method = create_method(DiGADGConfig(target_bn_update=True), _ctx())
    method.train()
    count = [0]
    method.student.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))  # noqa: B023 (runs in this iteration)
    method.train_step(_batch(0), _batch(1), 0)
    assert count[0] == 2  # the two views in one pass, then the target crops (BN statistics only)


def test_checkpoint_round_trip_restores_prototypes_translator_and_teacher():
    inputs = {"translator": _translator_state(), "centroids": _centroids()}
    cfg = DiGAConfig(phase="selftrain")
    method, _ = _step(cfg, inputs, _batch(1, pseudo=True))
    method.prototypes.centroids += 1.0  # as if updated for a while
    state = method.checkpoint_state()
    restored = create_method(cfg, _ctx(**inputs))
    restored.load_checkpoint_state(state)
    for a, b in ((method.prototypes.centroids, restored.prototypes.centroids),
                 *zip(method.teacher.model.parameters(), restored.teacher.model.parameters()),
                 *zip(method.translator.parameters(), restored.translator.parameters())):
        assert torch.equal(a, b)


def test_photometric_view_blends_beta_of_the_augmented_image():
    torch.manual_seed(0)
    method = create_method(DiGAConfig(styling="none", photometric_beta=0.4), _ctx())
    x = method.student.normalize(_batch(0)["img"])
    method.augment.ops = []  # A = identity: x̃_p = 0.4·x + 0.6·x = x
    torch.testing.assert_close(method.photometric_view(x), x)
    method.augment.ops = [lambda img: torch.zeros_like(img)]  # A → black
    black = method.student.normalize(torch.zeros_like(_batch(0)["img"]))
    torch.testing.assert_close(method.photometric_view(x), 0.4 * black + 0.6 * x)
    method.cfg.augment_space = "normalized"  # the reference: A on the normalised tensor, then (z − ½)/½
    method.augment.ops = []
    torch.testing.assert_close(method.photometric_view(x), 0.4 * (2 * x - 1) + 0.6 * x)


@pytest.mark.parametrize("cfg, inputs, message", [
    (DiGAConfig(), {}, "inputs.translator"),
    (DiGAConfig(phase="selftrain", styling="fda"), {}, "inputs.centroids"),
    (DiGAConfig(phase="selftrain", styling="fda"), {"centroids": {"centroids": torch.zeros(16, FEATURE_DIM)}},
     r"expected \[19, 16\]"),
    (DiGADGConfig(target_bn_update=True, phase="selftrain"), {}, "phase"),
    (DiGADGConfig(styling="fda"), {}, "styling=none"),
    (DiGAConfig(styling="cyclegan"), {}, "method.styling must be one of"),
    (DiGAConfig(styling="none", phase="warmup", target_bn_update=True, augment_space="bgr"), {}, "augment_space"),
])
def test_configuration_errors_name_the_key(cfg, inputs, message):
    with pytest.raises(ValueError, match=message):
        create_method(cfg, _ctx(**inputs))


def test_selftrain_without_pseudo_labels_names_the_stream_option():
    method = create_method(DiGAConfig(phase="selftrain", styling="fda"), _ctx(centroids=_centroids()))
    with pytest.raises(ValueError, match="benchmark.target.pseudo_labels"):
        method.train_step(_batch(0), _batch(1), 0)


def test_translator_method_step_with_and_without_vgg(caplog):
    from torchvision.models.vgg import cfgs, make_layers

    cfg = DiGATranslatorConfig(channels=4, res_blocks=1, disc_channels=4, disc_scales=2)
    with caplog.at_level("WARNING"):
        method = create_method(cfg, _ctx())
    assert "perceptual term" in caplog.text and method.eval_network() is None
    method.train()
    losses = method.train_step(_batch(0), _batch(1, size=(32, 48)), 0)
    assert set(losses) == {"loss_adv", "loss_cycle", "loss_edge", "loss_self", "loss_disc"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert method.diagnostics_row() == {"perceptual_weight": 0.0}
    assert not any(k.startswith("_vgg") for k in method.state_dict())

    torch.manual_seed(0)
    with_vgg = create_method(cfg, _ctx(vgg19=make_layers(cfgs["E"]).state_dict()))
    with_vgg.train()
    losses = with_vgg.train_step(_batch(0), _batch(1), 0)
    assert "loss_perceptual" in losses and float(losses["loss_perceptual"]) > 0
    assert with_vgg.diagnostics_row() == {"perceptual_weight": 0.1}
    assert not any("features" in k for k in with_vgg.state_dict())  # the frozen VGG is not checkpointed


def test_translator_step_updates_the_discriminators_before_the_generator_loss():
    """The reference's order: D step on the detached translations first, then the generator's
    adversarial term judged by the *updated* discriminators, then the generator step."""
    from udaseg.models.translator import lsgan_generator_loss

    torch.manual_seed(0)
    cfg = DiGATranslatorConfig(channels=4, res_blocks=1, disc_channels=4, disc_scales=2, lr=1e-2)
    method = create_method(cfg, _ctx())
    method.train()
    steps, seen = [], []
    real_step = method.step
    method.step = lambda name="main": steps.append(name) or real_step(name)
    d_target = method.discriminators.target
    d_target.register_forward_hook(
        lambda mod, inp, out: seen.append((inp[0].requires_grad, [p.detach().clone() for p in mod.parameters()],
                                           inp[0].detach().clone())))
    seen_source = []
    method.discriminators.source.register_forward_hook(lambda mod, inp, out: seen_source.append(inp[0].detach()))
    before = [p.detach().clone() for p in d_target.parameters()]
    losses = method.train_step(_batch(0), _batch(1), 0)
    assert steps == ["discriminator", "main"]
    # D_t is called on real target and detached s→t (old weights), then on s→t with gradient (new weights)
    assert [g for g, _, _ in seen] == [False, False, True]
    assert all(torch.equal(a, b) for a, b in zip(seen[0][1], before))
    updated = seen[2][1]
    assert any(not torch.equal(a, b) for a, b in zip(updated, before))
    assert all(torch.equal(a, b) for a, b in zip(updated, d_target.parameters()))  # = the weights after its step
    s2t = seen[2][2]
    torch.testing.assert_close(seen[1][2], s2t)  # the same translation, detached for D
    with torch.no_grad():  # loss_adv = λ_adv·[LSGAN_G(D_t(s→t)) + LSGAN_G(D_s(t→s))] under the updated D
        adv = cfg.adv_lambda * (lsgan_generator_loss(d_target(s2t))
                                + lsgan_generator_loss(method.discriminators.source(seen_source[2])))
    assert float(losses["loss_adv"]) == pytest.approx(float(adv), rel=1e-5)
    assert not any(p.requires_grad for p in method.discriminators.parameters())  # frozen for the generator


# -- a short pipeline on the tiny MiniCity -------------------------------------------------------
def _args(minicity_small, stages: dict) -> list[str]:
    return ["benchmark=minicity_gta2cs", "method=diga", "schedule=minicity", "model=minicity_deeplab",
            "model.head=proda_aspp", "model.backbone_options={width: 8, depths: [1,1,1,1], output_stride: 8}",
            "model.head_options={channels: 16, groups: 4}", "model.align_corners=true",
            f"data_root={minicity_small}", "iters=2", "benchmark.batch_size=2", "benchmark.source.crop_size=[32,64]",
            "benchmark.target.crop_size=[32,64]", "schedule.warmup_iters=0", "log_every=1", "checkpoint_every=2",
            "eval_every=0", "workers=0", "threads=1", f"stages={json.dumps(stages)}"]


def test_translator_warmup_pseudo_labels_centroids_selftrain_pipeline(minicity_small, tmp_path):
    from udaseg import config as config_lib
    from udaseg.engine import pipeline
    from udaseg.engine.checkpoint import network_weights

    translator = "stage://translator/:translator"
    stages = {
        "translator": {"method": {"name": "diga_translator", "channels": 4, "res_blocks": 1, "disc_channels": 4,
                                  "disc_scales": 2}},
        "warmup": {"init_from": None, "inputs": {"translator": translator}},
        "pl": {"step": "diga_pseudo_labels"},
        "centroids": {"step": "diga_centroids", "passes": 1},
        "round1": {"method": {"phase": "selftrain", "distil_lambda": 0.25, "photometric_beta": 0.3},
                   "inputs": {"translator": translator, "centroids": "stage://centroids/centroids.pt"},
                   "benchmark": {"target": {"pseudo_labels": "stage://pl/pseudo_labels"}}},
    }
    cfg = config_lib.compose(_args(minicity_small, stages))
    run = tmp_path / "run"
    final = pipeline.run_pipeline(cfg, run, progress=False)
    stage_dir = run / "stages"

    assert json.loads((stage_dir / "01_translator" / "eval.json").read_text())["network"] is None
    rows = [json.loads(r) for r in (stage_dir / "01_translator" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["perceptual_weight"] == 0.0 and "loss_perceptual" not in rows[0]
    assert {k.split(".")[0] for k in network_weights(stage_dir / "01_translator", "translator")[0]} == {
        "enc_s", "enc_t", "dec_s2t", "dec_t2s"}

    # pseudo-labels: one full-resolution PNG per target image, every pixel labelled (no threshold)
    summary = json.loads((stage_dir / "03_pl" / "summary.json").read_text())
    pngs = sorted((stage_dir / "03_pl" / "pseudo_labels").glob("*.png"))
    assert len(pngs) == summary["images"] > 0 and 0.0 <= summary["accuracy_vs_labels"] <= 1.0
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (64, 128) and first.max() < 19

    centroids = torch.load(stage_dir / "04_centroids" / "centroids.pt", weights_only=True)["centroids"]
    assert centroids.shape == (19, 16) and centroids.dtype == torch.float32
    missing = json.loads((stage_dir / "04_centroids" / "summary.json").read_text())["classes_without_centroid"]
    assert all((centroids[i] == 0).all() == (name in missing) for i, name in enumerate(CS.classes))

    rows = [json.loads(r) for r in (stage_dir / "05_round1" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "eval" not in r]
    assert {"loss_seg", "loss_mix", "loss_distil", "consensus_kept", "pl_acc_offline"} <= set(train_rows[0])
    assert final["network"] == "student" and final["mIoU19"] is not None
    assert json.loads((run / "eval.json").read_text())["stage"] == "round1"

    # Reports skip the translator stage (no segmentation result), given the pipeline or a folder of runs.
    from udaseg.errors import UdasegError
    from udaseg.report import expand_run_dirs, load_run, write_report

    assert expand_run_dirs([run]) == expand_run_dirs([tmp_path]) == [stage_dir / "02_warmup", stage_dir / "05_round1"]
    assert "| translator+warmup+round1 |" in write_report(expand_run_dirs([tmp_path]), tmp_path / "r.md").read_text()
    with pytest.raises(UdasegError, match="01_translator: the run trains no segmentation network"):
        load_run(stage_dir / "01_translator")


def test_dg_mode_never_reads_a_target_training_image(tiny_train_args, tmp_path, monkeypatch):
    """diga_dg on minicity_gta_dg: the only training split opened is GTA's; every MiniCity target
    appears only as a validation set."""
    from udaseg import config as config_lib
    from udaseg.engine import trainer

    opened = []
    real = trainer.create_dataset  # the trainer's name for udaseg.data.registry.create_dataset
    monkeypatch.setattr(trainer, "create_dataset",
                        lambda name, root, split, **kw: opened.append((name, split)) or real(name, root, split, **kw))
    args = [a for a in tiny_train_args("diga_dg", benchmark="minicity_gta_dg", iters=2)
            if not a.startswith(("benchmark.target", "model"))] + [
        "model=minicity_deeplab_proda", "model.backbone_options.width=8", "model.backbone_options.depths=[1,1,1,1]",
        "model.head_options.channels=8", "model.head_options.groups=4"]
    final = trainer.train(config_lib.compose(args), tmp_path / "dg", progress=False)
    assert [n for n, s in opened if s == "train"] == ["gta5"]
    assert {r["name"] for r in final["all"]} == {"cityscapes_val", "acdc_val", "foggy_val_beta0.02"}
