"""DiGA's image translator (TridentAdapt networks), its losses by hand, and FDA's amplitude swap."""

from __future__ import annotations

import math

import pytest
import torch

from udaseg.models.translator import (
    ImageTranslator,
    MultiScaleDiscriminator,
    SourceToTarget,
    VGGPerceptual,
    fda_band,
    fourier_amplitude_swap,
    label_edge_mask,
    low_frequency_mask,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    source_to_target_from_state,
)


def test_translator_outputs_cover_every_image_in_range_at_the_input_size():
    torch.manual_seed(0)
    net = ImageTranslator(channels=4, res_blocks=1)
    s = torch.rand(2, 3, 18, 30) * 2 - 1  # not multiples of 4: padded inside, cropped back
    t = torch.rand(1, 3, 20, 24) * 2 - 1  # the target batch may differ in size
    out = net(s, t)
    assert set(out) == {"s2t", "t2s", "rec_s", "rec_t", "cyc_s", "cyc_t"}
    for k in ("s2t", "rec_s", "cyc_s"):
        assert out[k].shape == s.shape
    for k in ("t2s", "rec_t", "cyc_t"):
        assert out[k].shape == t.shape
    assert all(v.abs().max() <= 1.0 for v in out.values())  # tanh
    torch.testing.assert_close(net.source_to_target(s), out["s2t"])


def test_reference_widths_and_frozen_part_from_a_state_dict():
    net = ImageTranslator()  # 64 / 4 residual blocks: the reference
    enc = net.enc_s
    assert enc.stem[1].kernel_size == (7, 7) and enc.stem[1].out_channels == 64
    assert [m[1].out_channels for m in enc.down] == [128, 256] and [m[1].stride for m in enc.down] == [(2, 2)] * 2
    assert len(enc.res) == 4 and len(net.dec_s2t.res) == 4
    assert [m[1].kernel_size for m in net.dec_s2t.up if isinstance(m, torch.nn.Sequential)] == [(5, 5), (5, 5)]
    small = ImageTranslator(channels=4, res_blocks=2)
    part = source_to_target_from_state(small.state_dict())
    assert isinstance(part, SourceToTarget) and len(part.enc_s.res) == 2 and part.enc_s.stem[1].out_channels == 4
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(part(x), small.source_to_target(x))
    with pytest.raises(ValueError, match="not a DiGA translator"):
        source_to_target_from_state({"conv.weight": torch.zeros(1)})


def test_multiscale_discriminator_and_lsgan_by_hand():
    d = MultiScaleDiscriminator(channels=4, scales=3)
    scores = d(torch.zeros(1, 3, 64, 64))
    assert [tuple(s.shape[-2:]) for s in scores] == [(4, 4), (2, 2), (1, 1)]  # four stride-2 convs per scale
    assert float(lsgan_generator_loss([torch.tensor([1.0, 3.0]), torch.tensor([0.0])])) == pytest.approx(2.0 + 1.0)
    # real (1, 3): mean(0, 4) = 2; fake (1, −1): mean(1, 1) = 1
    real, fake = [torch.tensor([1.0, 3.0])], [torch.tensor([1.0, -1.0])]
    assert float(lsgan_discriminator_loss(real, fake)) == pytest.approx(3.0)


def test_label_edge_mask_marks_two_pixels_each_side_of_a_class_border():
    label = torch.zeros(1, 6, 10, dtype=torch.long)
    label[:, :, 5:] = 1
    mask = label_edge_mask(label)
    assert mask.shape == (1, 1, 6, 10)
    # |Σ window − 25·l(p)|/48 ≥ 5/48 > 0.1 within two columns of the border; reflected image borders are no edge
    assert mask[0, 0].sum(0).tolist() == [0, 0, 0, 6, 6, 6, 6, 0, 0, 0]
    ignore = torch.full((1, 5, 5), 255)
    assert label_edge_mask(ignore).sum() == 0


def test_label_edge_mask_is_kornias_normalised_laplacian():
    """The reference's kornia.laplacian(label, 5) is normalised (÷ 48) with reflected borders."""
    dot = torch.zeros(1, 7, 7, dtype=torch.long)
    dot[0, 3, 3] = 1
    # normalised: the dot itself |1 − 25·1|/48 = 0.5 > 0.1; its neighbours see one 1: 1/48 ≈ 0.021 < 0.1
    assert label_edge_mask(dot)[0, 0].nonzero().tolist() == [[3, 3]]
    # raw kernel (normalized=False): every pixel within two of the dot responds 1 > 0.1 — a 5×5 block
    raw = label_edge_mask(dot, normalized=False)[0, 0]
    assert int(raw.sum()) == 25 and raw[1:6, 1:6].all()
    # a class step of 1: a pixel two columns from the border sees 5 ones, 5/48 ≈ 0.104 > 0.1 (an
    # edge), but a step of 1 over only four pixels of the window, 4/48 ≈ 0.083, is none
    corner = torch.zeros(1, 8, 8, dtype=torch.long)
    corner[0, 4:, 4:] = 1  # pixel (2, 2) sees the 2×2 corner of ones at (4..5, 4..5): 4/48
    mask = label_edge_mask(corner)[0, 0]
    assert mask[2, 2] == 0 and label_edge_mask(corner, normalized=False)[0, 0, 2, 2] == 1
    assert mask[3, 4] == 1  # (3, 4) sees rows 4–5 × columns 4–6 of ones: 6/48 = 0.125
    kornia = pytest.importorskip("kornia")
    torch.manual_seed(0)
    label = torch.randint(0, 19, (2, 12, 16))
    label[:, :3] = 255
    expected = (kornia.filters.laplacian(label[:, None].float(), kernel_size=5).abs() > 0.1).float()
    assert torch.equal(label_edge_mask(label), expected)


def test_discriminator_convs_are_zero_padded_without_bias():
    """The reference's Conv2dBlock(..., padding=1, bias=False) (zero padding): an all-zero image
    stays zero through the four convs, so every score is the final 1×1 conv's bias."""
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(channels=4, scales=2)
    for scale in d.scales:
        convs = [m for m in scale.net if isinstance(m, torch.nn.Conv2d)]
        assert [c.bias is None for c in convs] == [True] * 4 + [False]
        assert [c.padding for c in convs[:4]] == [(1, 1)] * 4
        assert not any(isinstance(m, torch.nn.ReflectionPad2d) for m in scale.net)
    scores = d(torch.zeros(1, 3, 32, 32))
    for s, scale in zip(scores, d.scales):
        torch.testing.assert_close(s, torch.full_like(s, float(scale.net[-1].bias.detach())))


def test_fda_replaces_the_low_band_amplitude_and_keeps_the_phase():
    torch.manual_seed(0)
    src, tgt = torch.rand(2, 3, 16, 20), torch.rand(2, 3, 16, 20)
    ratio = 0.15
    b = fda_band(16, 20, ratio)
    assert b == 2  # ⌊16·0.15⌋
    mask = low_frequency_mask(16, 20, b)
    assert int(mask.sum()) == (2 * b + 1) ** 2 and mask[0, 0] and mask[2, 2] and mask[-2, -2] and not mask[3, 0]
    out = fourier_amplitude_swap(src, tgt, ratio)
    assert out.shape == src.shape and out.dtype == src.dtype
    fo, fs, ft = torch.fft.fft2(out.double()), torch.fft.fft2(src.double()), torch.fft.fft2(tgt.double())
    torch.testing.assert_close(fo.abs()[..., mask], ft.abs()[..., mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fo.abs()[..., ~mask], fs.abs()[..., ~mask], atol=1e-4, rtol=1e-4)
    phase_diff = torch.angle(fo * fs.conj())  # the phase is the source's everywhere
    assert phase_diff.abs().max() < 1e-3
    # b = 0 swaps DC only: the target's per-channel mean, the source's structure
    dc = fourier_amplitude_swap(src, tgt, 0.0)
    torch.testing.assert_close(dc.mean(dim=(-2, -1)), tgt.mean(dim=(-2, -1)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dc - dc.mean(dim=(-2, -1), keepdim=True), src - src.mean(dim=(-2, -1), keepdim=True),
                               atol=1e-5, rtol=1e-5)


def test_vgg_perceptual_taps_relu_x_1_with_pix2pixhd_weights():
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])[:30]
    loss = VGGPerceptual(features, max_width=32)
    a, b = torch.rand(1, 3, 32, 64) * 2 - 1, torch.rand(1, 3, 32, 64) * 2 - 1
    assert float(loss(a, a)) == 0.0
    value = loss(a, b)
    # pooled once (64 > 32) then compared at relu1_1 … relu5_1
    pa, pb = torch.nn.functional.avg_pool2d(a, 2), torch.nn.functional.avg_pool2d(b, 2)
    taps_a, taps_b = loss._taps(pa), loss._taps(pb)
    assert [t.shape[1] for t in taps_a] == [64, 128, 256, 512, 512]
    expected = sum(w * (x - y).abs().mean() for w, x, y in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), taps_a, taps_b))
    assert math.isclose(float(value), float(expected), rel_tol=1e-5)
