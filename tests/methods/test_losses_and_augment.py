"""Loss normalisation and DACS augmentation pieces, with hand-computed values."""

import math

import pytest
import torch

from udaseg.methods.augment import blur_kernel_size, gaussian_blur, photometric_augment
from udaseg.methods.losses import seg_cross_entropy


def test_cross_entropy_normalisation_switch():
    # Two classes, 2x2 labels with one ignored pixel; logits favour class 0 everywhere.
    logits = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    label = torch.tensor([[[0, 1], [0, 255]]])
    l0 = math.log(1 + math.exp(-2))  # -log softmax of the right class when it is class 0
    l1 = math.log(1 + math.exp(2))
    total = 2 * l0 + l1
    assert seg_cross_entropy(logits, label, norm="all").item() == pytest.approx(total / 4, rel=1e-6)
    assert seg_cross_entropy(logits, label, norm="valid").item() == pytest.approx(total / 3, rel=1e-6)
    weight = torch.tensor([[[0.5, 0.5], [1.0, 1.0]]])
    expected = (0.5 * l0 + 0.5 * l1 + l0) / 4
    assert seg_cross_entropy(logits, label, weight, norm="all").item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_upsamples_logits_to_the_label():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    loss = seg_cross_entropy(logits, label)
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)
    loss.backward()
    assert logits.grad.shape == (1, 3, 2, 2)


@pytest.mark.parametrize("size,kernel", [(512, 51), (1024, 103), (100, 9), (128, 13), (256, 25)])
def test_blur_kernel_is_about_ten_percent_and_odd(size, kernel):
    # docs/methods.md D1.4: 51 for 512 crops, 103 for 1024.
    assert blur_kernel_size(size) == kernel


def test_blur_keeps_constant_images_and_shape():
    img = torch.full((2, 3, 32, 48), 0.3)
    out = gaussian_blur(img)
    assert out.shape == img.shape and torch.allclose(out, img, atol=1e-6)


def test_photometric_augment_probabilities_and_range():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 16, 16)
    ident = lambda x: x  # noqa: E731 - the batch is already in [0, 1]
    changed = sum(not torch.equal(photometric_augment(img, ident, ident), img) for _ in range(200))
    # P(neither jitter nor blur) = 0.2 * 0.5 = 0.1 → about 180 of 200 calls change the image.
    assert 160 <= changed <= 195
    out = photometric_augment(img, ident, ident)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
