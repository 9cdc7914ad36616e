"""HRDA's detail boxes, fusion on a toy tensor, the multi-resolution forward passes and losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from udaseg.methods.losses import hrda_loss
from udaseg.models import create_model
from udaseg.models.hrda import HRDASegmentor, random_box

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


def test_construction_and_forward_errors_name_the_option():
    base = create_model(TINY, num_classes=19)
    with pytest.raises(ValueError, match="hr_crop_size must be \\(height, width\\), got \\[32, 32, 3\\]"):
        HRDASegmentor(base, None, hr_crop_size=(32, 32, 3), fixed_attention=0.5)
    with pytest.raises(ValueError, match="attention head or a fixed attention"):
        HRDASegmentor(base, None)
    model = HRDASegmentor(base, None, hr_crop_size=(32, 32), fixed_attention=0.5).eval()
    with pytest.raises(ValueError, match="train_crop=True only"):  # was silently ignored
        model(torch.randn(1, 3, 32, 32), aux=True)


def test_forward_without_box_slides_detail_windows_and_test_windows():
    model = create_model({**TINY, "hrda": {"hr_crop_size": [32, 32], "hr_slide_stride": [16, 16],
                                           "test_window": [64, 64], "test_stride": [32, 32]}}, num_classes=19).eval()
    with torch.no_grad():
        crop = model(torch.randn(1, 3, 64, 64))
        image = model(torch.randn(1, 3, 64, 128))  # wider than the test window: 3 windows
    # One window: stride-4 logits; slid: averaged at, and returned at, the input resolution.
    assert crop.shape == (1, 19, 16, 16) and image.shape == (1, 19, 64, 128)
    assert model.hr_crop_size == (32, 32) and model.test_window == (64, 64) and model.test_merge == "input"
    model.test_merge = "logits"  # the earlier behaviour: averaged on the stride-4 grid
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 128)).shape == (1, 19, 16, 32)
    with pytest.raises(ValueError, match="test_merge"):
        create_model({**TINY, "hrda": {"hr_crop_size": [32, 32], "test_merge": "mean"}}, num_classes=19)


# -- a minimal re-statement of the reference's test-time inference (lhoyer/HRDA) -----------------
def _mmseg_grid(h, w, crop, stride):
    """mmseg's slide boxes: the last window of a row/column ends at the border."""
    rows = max(h - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(w - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride[0] + crop[0], h), min(c * stride[1] + crop[1], w)
            yield max(y2 - crop[0], 0), y2, max(x2 - crop[1], 0), x2


def _reference_encode_decode(model, img, hr_crop):
    """HRDAEncoderDecoder.encode_decode with HRDAHead.forward (scales [0.5, 1], no crop box,
    hr_slide_inference with overlapping HR crops at half their size), one window at a time."""
    ac = model.align_corners
    lr_feats = model.backbone(F.interpolate(img, scale_factor=0.5, mode="bilinear", align_corners=ac))
    lr_seg = model.decode_head(lr_feats)
    att = torch.sigmoid(model.attention_head(lr_feats))
    # decode_hr: HR crop logits summed at the head's output stride (4), boxes // 4
    boxes = [tuple(v // 4 for v in box) for box in _mmseg_grid(*img.shape[-2:], hr_crop, [c // 2 for c in hr_crop])]
    preds = torch.zeros(img.shape[0], lr_seg.shape[1], max(b[1] for b in boxes), max(b[3] for b in boxes))
    count = torch.zeros(img.shape[0], 1, *preds.shape[-2:])
    for (y1, y2, x1, x2), box in zip(boxes, _mmseg_grid(*img.shape[-2:], hr_crop, [c // 2 for c in hr_crop])):
        preds[:, :, y1:y2, x1:x2] += model.decode_head(model.backbone(img[:, :, box[0]:box[1], box[2]:box[3]]))
        count[:, :, y1:y2, x1:x2] += 1
    hr_seg = preds / count
    up_lr = F.interpolate((1 - att) * lr_seg, scale_factor=2.0, mode="bilinear", align_corners=ac)
    att = F.interpolate(att, scale_factor=2.0, mode="bilinear", align_corners=ac)
    fused = att * hr_seg + up_lr
    # encode_decode: back to the window's own input size
    return F.interpolate(fused, size=img.shape[2:], mode="bilinear", align_corners=ac)


def _reference_slide_inference(model, img, crop, stride, hr_crop):
    """mmseg EncoderDecoder.slide_inference: canvas and count matrix at the input resolution."""
    b, _, h, w = img.shape
    preds, count = None, torch.zeros(b, 1, h, w)
    for y1, y2, x1, x2 in _mmseg_grid(h, w, crop, stride):
        out = _reference_encode_decode(model, img[:, :, y1:y2, x1:x2], hr_crop)
        if preds is None:
            preds = torch.zeros(b, out.shape[1], h, w)
        preds[:, :, y1:y2, x1:x2] += out
        count[:, :, y1:y2, x1:x2] += 1
    assert (count > 0).all()
    return preds / count


def test_test_time_slide_equals_the_reference_on_overlapping_windows():
    """128×192 input, 128² test windows at stride 64 (two windows overlapping on columns 64–127):
    the fused logits equal the reference's everywhere, also next to each window's edge."""
    from udaseg.models.inference import infer_logits

    torch.manual_seed(0)
    model = create_model({**TINY, "hrda": {"hr_crop_size": [64, 64], "hr_slide_stride": [32, 32],
                                           "test_window": [128, 128], "test_stride": [64, 64],
                                           "attention_embed_dim": 8}}, num_classes=5).eval()
    img = torch.randint(0, 256, (2, 3, 128, 192), dtype=torch.uint8)
    x = model.normalize(img.float(), value_range=255.0)
    with torch.no_grad():
        expected = _reference_slide_inference(model, x, (128, 128), (64, 64), (64, 64))
        fused = model(x)
        via_eval = infer_logits(model, img, mode="whole")  # the evaluator's path
    assert fused.shape == expected.shape == (2, 5, 128, 192)
    edges = [62, 63, 64, 127, 128, 129]
    assert (fused - expected).abs().max() <= 1e-5
    assert (fused - expected)[..., edges].abs().max() <= 1e-5
    assert (via_eval - expected).abs().max() <= 1e-5

    # The earlier average on the stride-4 grid, upsampled afterwards, is off next to the edges.
    model.test_merge = "logits"
    with torch.no_grad():
        old = F.interpolate(model(x), size=(128, 192), mode="bilinear", align_corners=model.align_corners)
    assert (old - expected)[..., edges].abs().max() > 1e-3


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


def test_fixed_attention_builds_no_attention_head():
    """HRDA's "fixedatt" ablation: a = const and no scale-attention weights (its checkpoints hold none)."""
    model = create_model({**TINY, "hrda": {"hr_crop_size": [32, 32], "fixed_attention": 0.5}}, num_classes=19).eval()
    assert model.attention_head is None and not any(k.startswith("attention_head.") for k in model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    fused, hr, box, _ = model.forward_train(x, box=(0, 32, 0, 32))
    lr_logits, attention, _ = model._context(x)
    assert torch.all(attention == 0.5) and torch.isfinite(fused).all()


def test_single_channel_attention_is_broadcast_over_the_classes():
    """HRDA's attention_classwise=False ablation: one attention map for every class."""
    model = create_model({**TINY, "hrda": {"hr_crop_size": [32, 32], "attention_classwise": False}},
                         num_classes=19).eval()
    assert model.attention_head.classifier.out_channels == 1
    x = torch.rand(1, 3, 64, 64)
    fused, *_ = model.forward_train(x, box=(0, 32, 0, 32))
    lr_logits, attention, _ = model._context(x)
    assert attention.shape[1] == 1 and fused.shape[1] == 19 and torch.isfinite(fused).all()
