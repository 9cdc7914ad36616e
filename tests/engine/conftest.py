"""Fakes for the evaluator and inference tests: a dataset obeying the dataset contract and
models whose predictions are known in advance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from udaseg.data.catalog import get_label_space


class FakeSegDataset:
    """Items per the dataset contract: img uint8 [3,H,W], label int64 [H,W] (255 = ignore),
    name. The label is a function of the image — R mod C, ignored where G > 230 — so that
    :class:`LookupModel` can predict it."""

    def __init__(self, n: int = 5, size: tuple[int, int] = (24, 40), label_space: str = "cityscapes19",
                 seed: int = 0, sizes: list[tuple[int, int]] | None = None):
        self.label_space = get_label_space(label_space)
        self.n, self.size, self.seed, self.sizes = n, size, seed, sizes
        self.split = "val"
        self.name = "fake"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        h, w = self.sizes[i] if self.sizes else self.size
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        label = img[0].long() % self.label_space.num_classes
        label[img[1] > 230] = 255
        return {"img": img, "label": label, "name": f"city_{i:06d}_000019"}


class LookupModel(nn.Module):
    """A 'network' at stride 1 whose logits are one-hot of ``(R + shift) mod C`` (a confident,
    exactly known prediction). ``shift=0`` predicts FakeSegDataset's labels perfectly."""

    def __init__(self, num_classes: int = 19, shift: int = 0, align_corners: bool = False):
        super().__init__()
        self.num_classes, self.shift, self.align_corners = num_classes, shift, align_corners
        self.dummy = nn.Parameter(torch.zeros(()))

    def normalize(self, img: torch.Tensor, value_range: float | None = None) -> torch.Tensor:
        if value_range is None:
            value_range = 1.0 if img.is_floating_point() else 255.0
        return img.float() * (255.0 / value_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = (x[:, 0].round().long() + self.shift) % self.num_classes
        return 10.0 * nn.functional.one_hot(cls, self.num_classes).permute(0, 3, 1, 2).float() + 0 * self.dummy


@pytest.fixture
def fakes():
    """The fake dataset and model classes (tests run with --import-mode=importlib, so helper
    modules are reached through fixtures rather than imports)."""
    return SimpleNamespace(FakeSegDataset=FakeSegDataset, LookupModel=LookupModel)


@pytest.fixture
def fake_dataset():
    return FakeSegDataset()
