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
