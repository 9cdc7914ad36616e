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


# A tiny, fast training setup on the session's small MiniCity (64×128): a width-8 CNN, 32×64 crops,
# a few iterations. Tests pass ``tiny_train_args`` to udaseg.config.compose or the CLI.
TINY_MODEL = ["model=minicity_cnn", "model.head=segformer", "model.backbone_options.width=8",
              "model.backbone_options.depths=[1,1,1,1]", "model.head_options={embed_dim: 16}"]


def _tiny_args(minicity_small):
    def make(method: str = "source_only", benchmark: str = "minicity_gta2cs", iters: int = 4, **extra) -> list[str]:
        args = [f"benchmark={benchmark}", f"method={method}", "schedule=minicity", *TINY_MODEL,
                f"data_root={minicity_small}", f"iters={iters}", "benchmark.batch_size=2",
                "benchmark.source.crop_size=[32,64]", "schedule.warmup_iters=2", "log_every=1",
                "checkpoint_every=2", "eval_every=0", "workers=0", "threads=1",
                "benchmark.target.crop_size=[32,64]"]
        return args + [f"{k}={v}" for k, v in extra.items()]

    return make


@pytest.fixture
def tiny_train_args(minicity_small):
    return _tiny_args(minicity_small)


@pytest.fixture(scope="session")
def tiny_run(minicity_small, tmp_path_factory):
    """One finished tiny source-only run (read-only: copy it to modify it)."""
    from udaseg import config as config_lib
    from udaseg.engine import trainer

    run = tmp_path_factory.mktemp("tiny_run") / "run"
    trainer.train(config_lib.compose(_tiny_args(minicity_small)(iters=2)), run, progress=False)
    return run
