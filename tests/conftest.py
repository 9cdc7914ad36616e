"""Shared fixtures. A tiny MiniCity is generated once per test session and shared read-only."""

from __future__ import annotations

import os

import pytest

# Tests never download anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minicity_small(tmp_path_factory):
    """A small MiniCity (all four domains, real on-disk formats) at 64x128, seed 0. Read-only:
    tests that modify files copy the domain they need first (see ``minicity_copy``)."""
    from udaseg.data.minicity import generate

    out = tmp_path_factory.mktemp("minicity") / "minicity"
    generate(out, size=(64, 128), seed=0, scale="small", progress=False)
    return out


@pytest.fixture
def minicity_copy(minicity_small, tmp_path):
    """A private, writable copy of the small MiniCity for tests that write into it."""
    import shutil

    dst = tmp_path / "minicity"
    shutil.copytree(minicity_small, dst)
    return dst


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
