"""HRDA's detail boxes, fusion on a toy tensor, the multi-resolution forward passes and losses."""

from __future__ import annotations

import pytest
import torch

from udaseg.models import create_model
from udaseg.models.hrda import HRDASegmentor, hrda_loss, random_box

TINY = {"backbone": "tiny_cnn", "head": "segformer", "backbone_options": {"width": 8, "depths": [1, 1, 1, 1]},
        "head_options": {"embed_dim": 16}}


def test_random_box_offsets_are_multiples_of_8_inside_the_reference_range():
    torch.manual_seed(0)
    boxes = [random_box((1024, 1024), (512, 512)) for _ in range(2000)]
    ys = {b[0] for b in boxes}
    assert all(y % 8 == 0 for y in ys) and min(ys) == 0 and max(ys) == 504  # randint(0, 513 // 8) · 8
    assert all(b[1] - b[0] == 512 and b[3] - b[2] == 512 for b in boxes)
    assert random_box((512, 512), (512, 512)) == (0, 512, 0, 512)
    with pytest.raises(ValueError, match="larger than the input"):
        random_box((256, 256), (512, 512))


def test_fusion_by_hand():
    model = create_model({**TINY, "hrda": {"hr_crop_size": [32, 32]}}, num_classes=1)
    lr = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    attention = torch.full_like(lr, 0.5)
    canvas = torch.zeros_like(lr)
    canvas[..., 0, 0] = 10.0  # the detail prediction, pasted at the box
    box_mask = torch.zeros_like(lr)
    box_mask[..., 0, 0] = 1.0  # attention is zeroed outside the detail box
    fused = model._fuse(lr, attention, canvas, (2, 2), box_mask)
    # inside: a·hr + (1 − a)·lr = 0.5·10 + 0.5·1; outside: the LR prediction itself
    assert fused[0, 0].tolist() == [[5.5, 2.0], [3.0, 4.0]]


def test_forward_train_shapes_and_box_mapping():
    model = create_model({**TINY, "hrda": {"hr_crop_size": [32, 32], "attention_embed_dim": 8}}, num_classes=19).eval()
    assert isinstance(model, HRDASegmentor) and model.num_classes == 19
    x = torch.randn(2, 3, 64, 96)
    fused, hr, box, features = model.forward_train(x, box=(8, 40, 32, 64))
    assert fused.shape == (2, 19, 16, 24)  # stride 4 of the full crop
    assert hr.shape == (2, 19, 8, 8)  # stride 4 of the 32² detail crop
    assert features[-1].shape[-2:] == (1, 2)  # context branch: the ×0.5 crop (32×48) at stride 32, rounded up
    # Away from the box (x < 32 px, LR columns < 4; fused columns < 6 interpolate LR columns ≤ 3 only)
    # the fused prediction is the upsampled LR prediction alone.
    lr_logits, attention, _ = model._context(x)
    canvas = torch.zeros(2, 19, 16, 24)
    far = model._fuse(lr_logits, attention, canvas, (16, 24), torch.zeros_like(attention[:, :1]))
    assert torch.allclose(fused[..., :, :6], far[..., :, :6], atol=1e-6)
    assert not torch.allclose(fused[..., :, 9:15], far[..., :, 9:15], atol=1e-6)  # inside: the detail counts


def test_forward_without_box_slides_detail_windows_and_test_windows():
    model = create_model({**TINY, "hrda": {"hr_crop_size": [32, 32], "hr_slide_stride": [16, 16],
                                           "test_window": [64, 64], "test_stride": [32, 32]}}, num_classes=19).eval()
    with torch.no_grad():
        crop = model(torch.randn(1, 3, 64, 64))
        image = model(torch.randn(1, 3, 64, 128))  # wider than the test window: 3 windows
    assert crop.shape == (1, 19, 16, 16) and image.shape == (1, 19, 16, 32)
    assert model.hr_crop_size == (32, 32) and model.test_window == (64, 64)


def test_hrda_loss_weights_fused_and_detail():
    fused = torch.zeros(1, 2, 4, 4)
    hr = torch.zeros(1, 2, 2, 2)
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    ce = torch.log(torch.tensor(2.0))  # uniform logits over 2 classes
    assert hrda_loss(fused, hr, (0, 2, 0, 2), label) == pytest.approx(float(ce))  # 0.9·ce + 0.1·ce
    weight = torch.zeros(1, 4, 4)
    weight[0, :2, :2] = 1.0  # only the detail box weighs
    loss = hrda_loss(fused, hr, (0, 2, 0, 2), label, weight)
    assert float(loss) == pytest.approx(0.9 * float(ce) * 4 / 16 + 0.1 * float(ce))


def test_attention_head_gets_the_head_learning_rate():
    from udaseg.models import param_groups

    model = create_model({**TINY, "hrda": {"hr_crop_size": [32, 32]}}, num_classes=19)
    groups = param_groups(model, base_lr=1.0, weight_decay=0.0, head_lr_mult=10.0)
    head_params = {id(p) for g in groups if g["lr"] == 10.0 for p in g["params"]}
    assert all(id(p) in head_params for p in model.attention_head.parameters())
    assert not any(id(p) in head_params for p in model.backbone.parameters())
