"""Issue 20, the data-layer cases: 16-bit images are read like their 8-bit twins, unreadable
training files are named in one line before any traceback, and stale prepared label files are
detected."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from udaseg.data.base import UnreadableFileError, read_rgb


def _twins(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit RGB image and the same picture as 16 bits per channel (v * 257, exact)."""
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    rgb8[0, :4] = [[0, 0, 0], [255, 255, 255], [1, 1, 1], [128, 128, 128]]
    return rgb8, rgb8.astype(np.uint16) * 257


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_images_read_like_their_8bit_twins(tmp_path, suffix):
    rgb8, rgb16 = _twins(tmp_path)
    grey8 = rgb8[..., 1]
    cv2.imwrite(str(tmp_path / f"rgb16{suffix}"), rgb16[..., ::-1])
    cv2.imwrite(str(tmp_path / f"grey16{suffix}"), rgb16[..., 1])
    with Image.open(tmp_path / f"grey16{suffix}") as im:
        assert im.mode.startswith("I")  # really 16-bit on disk
    assert np.array_equal(read_rgb(tmp_path / f"rgb16{suffix}"), rgb8)
    grey = read_rgb(tmp_path / f"grey16{suffix}")
    assert grey.dtype == np.uint8 and grey.shape == (16, 24, 3)
    assert np.array_equal(grey, np.repeat(grey8[..., None], 3, axis=2))


def test_16bit_values_keep_their_high_byte(tmp_path):
    # >> 8, as OpenCV's IMREAD_COLOR and Pillow's own 16-bit RGB decoder do (0x80FF → 128, not 129).
    grey16 = np.array([[0, 0x00FF, 0x0100, 0x80FF, 0xFFFF]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), grey16)
    assert read_rgb(tmp_path / "g.png")[0, :, 0].tolist() == [0, 0, 1, 128, 255]
    assert read_rgb(tmp_path / "g.png")[0, :, 0].tolist() == cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_COLOR)[0, :, 0].tolist()


def test_float_images_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.full((4, 5), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(UnreadableFileError, match=r"depth\.tif.*32-bit floating point.*expected an 8- or 16-bit"):
        read_rgb(path)


def test_predict_on_a_16bit_image_agrees_with_its_8bit_twin(tiny_run, tmp_path, capsys):
    from udaseg.cli import main

    rgb8, rgb16 = _twins(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(rgb8[..., 0]).save(inputs / "grey8.png")
    cv2.imwrite(str(inputs / "grey16.png"), rgb16[..., 0])
    Image.fromarray(rgb8).save(inputs / "rgb8.png")
    cv2.imwrite(str(inputs / "rgb16.tif"), rgb16[..., ::-1])
    out = tmp_path / "out"
    assert main(["predict", str(tiny_run), str(inputs), "--out", str(out), "--format", "trainid",
                 "--device", "cpu", "--quiet"]) == 0, capsys.readouterr().err

    def pred(stem):
        return np.asarray(Image.open(out / f"{stem}_labelTrainIds.png"))

    assert np.array_equal(pred("grey16"), pred("grey8"))
    assert np.array_equal(pred("rgb16"), pred("rgb8"))
