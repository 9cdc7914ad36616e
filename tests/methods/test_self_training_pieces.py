"""The shared pieces of the self-training methods against the formulas (docs/methods.md D1,
§3), with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from udaseg.methods.feature_distance import downscale_label_ratio, feature_distance
from udaseg.methods.mixing import class_masks, mix
from udaseg.methods.pseudo_labels import PseudoLabelScore, crop_pseudo_weight, pseudo_label
from udaseg.methods.teacher import EMATeacher, dropout_off, ema_alpha


def test_ema_alpha_schedule():
    assert ema_alpha(1, 0.999) == 0.5
    assert ema_alpha(9, 0.999) == pytest.approx(0.9)
    assert ema_alpha(99, 0.999) == pytest.approx(0.99)
    assert ema_alpha(999, 0.999) == pytest.approx(0.999)  # first reached at t = 999
    assert ema_alpha(5000, 0.999) == 0.999
    assert ema_alpha(50, 0.99) == pytest.approx(1 - 1 / 51)


def test_ema_update_averages_parameters_not_buffers():
    student = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    teacher = EMATeacher(student, alpha=0.999)
    with torch.no_grad():
        student[0].weight.fill_(2.0)
        student[1].running_mean.fill_(5.0)
    assert teacher.update(student, 0) == 0.0  # t = 0: a copy
    assert float(teacher.model[0].weight) == 2.0
    with torch.no_grad():
        student[0].weight.fill_(4.0)
    assert teacher.update(student, 1) == 0.5  # α_1 = 0.5: 0.5·2 + 0.5·4
    assert float(teacher.model[0].weight) == pytest.approx(3.0)
    teacher.update(student, 3)  # α_3 = 0.75: 0.75·3 + 0.25·4
    assert float(teacher.model[0].weight) == pytest.approx(3.25)
    assert float(teacher.model[1].running_mean) == 0.0  # buffers are not averaged
    assert not any(p.requires_grad for p in teacher.parameters())


def test_teacher_forward_dropout_off_batchnorm_per_mode():
    student = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.Dropout2d(0.9))
    x = torch.randn(4, 1, 8, 8) * 3 + 7
    reference = EMATeacher(student, bn_mode="train")
    reference.train()
    out = reference.predict(x)
    # Train-mode BN: normalised with the batch's own statistics → mean ≈ 0 over the batch;
    # and no dropout: the same output twice.
    assert torch.equal(out, reference.predict(x))
    assert reference.model[2].training  # mode restored after the forward
    assert float(reference.model[1].running_mean) != 0.0  # it updated its own running stats
    frozen = EMATeacher(student, bn_mode="eval")
    frozen.train()
    bn_eval = frozen.predict(x)
    assert not torch.allclose(out, bn_eval)
    with pytest.raises(ValueError, match="bn_mode"):
        EMATeacher(student, bn_mode="sync")
    with dropout_off(student):
        assert not student[2].training and student[1].training
    assert student[2].training


def test_pseudo_label_weight_is_one_scalar_per_batch():
    logits = torch.zeros(2, 3, 1, 4)
    logits[0, 0, 0, :2] = 10.0  # two very confident pixels (p ≈ 0.99991)
    logits[1, 2, 0, 0] = 10.0  # one more
    logits[1, 1, 0, 1] = 1.0  # unconfident (p = e/(e+2) ≈ 0.576)
    label, weight, confidence = pseudo_label(logits, (1, 4), threshold=0.968)
    assert label.tolist() == [[[0, 0, 0, 0]], [[2, 1, 0, 0]]]
    q = 3 / 8  # 3 of the batch's 8 pixels reach τ
    assert torch.allclose(weight, torch.full((2, 1, 4), q))
    assert confidence[1, 0, 1] == pytest.approx(math.e / (math.e + 2))
    _, ones, _ = pseudo_label(logits, (1, 4), threshold=None)
    assert torch.equal(ones, torch.ones(2, 1, 4))
    # Upsampled to the crop before the softmax.
    assert pseudo_label(logits, (2, 8))[0].shape == (2, 2, 8)


def test_pseudo_label_crop_rows():
    weight = torch.ones(1, 10, 3)
    cropped = crop_pseudo_weight(weight, ignore_top=2, ignore_bottom=3)
    assert cropped[0, :, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert torch.equal(weight, torch.ones(1, 10, 3))  # not in place


def test_class_masks_batch_wide_and_per_image():
    source = torch.tensor([[[0, 0, 1, 1]], [[2, 2, 255, 255]]])
    torch.manual_seed(0)
    masks = class_masks(source, "batch")
    # Batch-wide candidates {0, 1, 2, 255}: ⌈4/2⌉ = 2 chosen per sample; a sample's mask is where its
    # own label is chosen (a chosen class may be absent from it, so a mask may be empty).
    for m, label in zip(masks, source):
        chosen_here = set(label[m.bool()].tolist())
        assert chosen_here <= {0, 1, 2, 255}
        # each class of the image is in or out as a whole
        for c in label.unique().tolist():
            assert m[label == c].unique().numel() == 1
    per_image = class_masks(source, "per_image")
    # Image 0 has {0, 1}: exactly one of them. Image 1 has {2} (255 excluded): ⌈1/2⌉ = 1 → all 2-pixels.
    assert per_image[0].sum() == 2 and per_image[1].tolist() == [[1.0, 1.0, 0.0, 0.0]]
    with pytest.raises(ValueError):
        class_masks(source, "global")


def test_class_masks_choose_half_of_the_batch_classes():
    counts = torch.zeros(4)
    label = torch.tensor([[[0, 1, 2, 3]]])
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        m = class_masks(label, "batch", generator=g)
        assert m.sum() == 2  # ⌈4/2⌉
        counts += m[0, 0]
    assert ((counts / 400 - 0.5).abs() < 0.1).all()  # uniform without replacement


def test_mix_images_labels_weights():
    mask = torch.tensor([[[1.0, 0.0]]])
    src_img, tgt_img = torch.ones(1, 3, 1, 2), torch.zeros(1, 3, 1, 2)
    assert mix(mask, src_img, tgt_img)[0, :, 0].tolist() == [[1.0, 0.0]] * 3
    assert mix(mask, torch.tensor([[[5, 5]]]), torch.tensor([[[7, 7]]])).tolist() == [[[5, 7]]]
    assert mix(mask, torch.ones(1, 1, 2), torch.full((1, 1, 2), 0.25)).tolist() == [[[1.0, 0.25]]]


def test_downscale_label_ratio_majority_pooling():
    label = torch.full((1, 4, 4), 255)
    label[0, :2, :2] = 13  # a whole cell of car
    label[0, :2, 2:] = torch.tensor([[13, 13], [13, 0]])  # 3/4 car = 0.75 → kept
    label[0, 2:, :2] = torch.tensor([[13, 13], [0, 0]])  # 1/2 → below 0.75: ignore
    # bottom-right cell: all 255 → ignore (majority is the ignore class)
    out = downscale_label_ratio(label, 2, 0.75, num_classes=19)
    assert out.tolist() == [[[13, 13], [255, 255]]]


def test_feature_distance_thing_cells_and_skip():
    student = torch.zeros(1, 2, 2, 2)
    imnet = torch.zeros(1, 2, 2, 2)
    imnet[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5 at cell (0, 0)
    imnet[0, :, 1, 1] = torch.tensor([6.0, 8.0])  # distance 10 at cell (1, 1), a road cell
    label = torch.zeros(1, 4, 4, dtype=torch.long)  # road
    label[0, :2, :2] = 11  # person in cell (0, 0)
    label[0, :2, 2:] = 13  # car in cell (0, 1): distance 0
    assert feature_distance(student, imnet, label, 19) == pytest.approx((5 + 0) / 2)
    assert feature_distance(student, imnet, label, 19, classes=None) == pytest.approx(15 / 4)
    assert feature_distance(student, imnet, torch.zeros_like(label), 19) is None  # no thing cell: skipped


def test_block_mask_ratio_blocks_and_nearest_upsampling():
    from udaseg.methods.masking import block_mask

    g = torch.Generator().manual_seed(0)
    keep = block_mask(64, (64, 128), block=16, ratio=0.7, generator=g)
    assert keep.shape == (64, 1, 64, 128) and set(keep.unique().tolist()) <= {0.0, 1.0}
    # Each 16×16 block is constant (nearest upsampling of a 4×8 grid) …
    blocks = keep.reshape(64, 1, 4, 16, 8, 16)
    assert (blocks.amax(dim=(3, 5)) == blocks.amin(dim=(3, 5))).all()
    # … and 30 % of the blocks stay visible on average (70 % masked).
    assert abs(float(keep.mean()) - 0.3) < 0.03
    assert block_mask(1, (50, 70), block=32, ratio=0.5).shape == (1, 1, 50, 70)  # round(50/32) × round(70/32) grid
    with pytest.raises(ValueError):
        block_mask(1, (8, 8), 4, ratio=1.0)


def test_pseudo_label_crop_must_leave_rows():
    with pytest.raises(ValueError, match="leaves nothing"):
        crop_pseudo_weight(torch.ones(1, 10, 3), ignore_top=4, ignore_bottom=6)


def test_pseudo_label_score_by_hand():
    """Offline pseudo-label diagnostics: per ground-truth class the fraction labelled and labelled
    correctly, per pseudo-label class the precision; ignore pixels of either side handled."""
    score = PseudoLabelScore(["a", "b", "c"])
    gt = torch.tensor([[0, 0, 0, 0], [1, 1, 255, 2]])
    pseudo = torch.tensor([[0, 0, 1, 255], [1, 0, 1, 255]])
    score.update(pseudo, gt)
    # a: 4 px, 3 labelled (0, 0, 1), 2 correct; b: 2 px, both labelled (1, 0), 1 correct; c: 1 px, unlabelled.
    # given: a ← 3 (two a, one b), b ← 2 (one a, one b); the gt-ignore pixel labelled b is not counted.
    assert score.summary() == {
        "accuracy_vs_labels": 3 / 5,
        "per_class": {"a": {"labelled": 0.75, "correct": 0.5, "precision": round(2 / 3, 4)},
                      "b": {"labelled": 1.0, "correct": 0.5, "precision": 0.5},
                      "c": {"labelled": 0.0, "correct": 0.0, "precision": None}}}
    half = PseudoLabelScore(["a", "b", "c"])
    half.update(torch.tensor([[1]]), torch.tensor([[1, 1], [1, 1]]))  # labels at the pseudo-labels' size (nearest)
    assert half.summary()["per_class"]["b"] == {"labelled": 1.0, "correct": 1.0, "precision": 1.0}
    assert PseudoLabelScore(["a"]).summary() == {}
