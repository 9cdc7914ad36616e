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
    expected = cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_COLOR)[0, :, 0].tolist()
    assert read_rgb(tmp_path / "g.png")[0, :, 0].tolist() == expected


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


def _first_source_files(args: list[str]) -> tuple[Path, Path]:
    """The source image and label file the training loader reads first (the stream's draw 0)."""
    from udaseg import config as config_lib
    from udaseg.engine import trainer

    cfg = config_lib.compose(args)
    stream = trainer.build_stream(cfg.benchmark.source, cfg.data_root, cfg.benchmark.label_space, cfg.seed,
                                  trainer.SOURCE_STREAM)
    index = stream[0]["index"]
    return stream.dataset.samples[index].image, stream.dataset.label_source(index).path


@pytest.mark.parametrize("kind, workers", [("image", 0), ("image", 1), ("label", 1)])
def test_a_zero_byte_training_file_is_one_line_naming_it(minicity_copy, tiny_train_args, tmp_path, capsys,
                                                         kind, workers):
    from udaseg.cli import main

    args = tiny_train_args(iters=2, data_root=minicity_copy, workers=workers)
    image, label = _first_source_files(args)
    path = image if kind == "image" else label
    path.write_bytes(b"")
    assert main(["train", *args, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    expected = ("a complete, readable image file" if kind == "image" else "a complete single-channel label PNG")
    assert err.strip().splitlines() == [f"udaseg: error: cannot read {kind} {path} (0 bytes); expected {expected}"], err


# ---------------------------------------------------------------------------------------------
# Stale prepared label files.
def _prepared_cityscapes(tmp_path: Path):
    import data_fixtures as F

    from udaseg.data.prepare import prepare

    root = F.make_cityscapes(tmp_path / "cs")
    prepare("cityscapes", root, progress=False, workers=1)
    return root


def _edit_raw_after_prepare(raw: Path, value: int) -> None:
    import data_fixtures as F

    F.put_label_value(raw, value)
    later = os.stat(raw.with_name(raw.name.replace("_labelIds", "_labelTrainIds"))).st_mtime + 5
    os.utime(raw, (later, later))  # coarse file-system clocks: make "edited after" unambiguous


def test_a_raw_label_edited_after_prepare_is_read_with_a_warning(tmp_path):
    from udaseg.data.base import StalePreparedWarning
    from udaseg.data.registry import create_dataset

    root = _prepared_cityscapes(tmp_path)
    ds = create_dataset("cityscapes", root, "train")
    raw, prepared = ds.samples[0].labels[0].path, ds.label_source(0).path
    assert ds.label_source(0).prepared and ds.load(0)["label"][0, 0] != 10
    _edit_raw_after_prepare(raw, 23)  # sky: train id 10
    with pytest.warns(StalePreparedWarning) as caught:
        ds = create_dataset("cityscapes", root, "train")
    assert len(caught) == 1 and str(caught[0].message) == (
        f"cityscapes split 'train' under {root}: 1 prepared label file(s) are older than the raw label they were "
        f"made from (e.g. {prepared.relative_to(root)} is older than {raw.relative_to(root)}); reading the raw "
        f"labels instead. Refresh them and the RCS statistics with `udaseg data prepare cityscapes {root} --force`")
    assert ds.label_source(0).path == raw and ds.load(0)["label"][0, 0] == 10  # the edit is seen
    assert ds.stale_prepared == [(prepared, raw)]


def test_data_check_lists_stale_prepared_files_and_prepare_force_refreshes_them(tmp_path, recwarn):
    from udaseg.data.base import StalePreparedWarning
    from udaseg.data.check import check
    from udaseg.data.prepare import prepare
    from udaseg.data.registry import create_dataset
    from udaseg.errors import DataError

    root = _prepared_cityscapes(tmp_path)
    raw = create_dataset("cityscapes", root, "train").samples[0].labels[0].path
    _edit_raw_after_prepare(raw, 23)
    report = check("cityscapes", root, workers=1)
    assert not report.ok and [p.split(" is older")[0] for p in report.problems["stale_prepared"]] == [
        raw.relative_to(root).as_posix().replace("_labelIds", "_labelTrainIds")]
    with pytest.raises(DataError, match="--force"):
        prepare("cityscapes", root, progress=False, workers=1)  # content differs: refused
    prepare("cityscapes", root, progress=False, workers=1, force=True)
    ds = create_dataset("cityscapes", root, "train")
    assert ds.label_source(0).prepared and ds.load(0)["label"][0, 0] == 10 and not ds.stale_prepared
    assert not [w for w in recwarn if issubclass(w.category, StalePreparedWarning)]


def test_a_touched_raw_label_is_fresh_again_after_prepare(tmp_path):
    from udaseg.data.base import StalePreparedWarning
    from udaseg.data.prepare import prepare
    from udaseg.data.registry import create_dataset

    root = _prepared_cityscapes(tmp_path)
    ds = create_dataset("cityscapes", root, "train")
    raw = ds.samples[0].labels[0].path
    later = os.stat(ds.label_source(0).path).st_mtime + 5
    os.utime(raw, (later, later))  # same content, newer time (e.g. a copy that did not keep times)
    with pytest.warns(StalePreparedWarning):
        assert create_dataset("cityscapes", root, "train").stale_prepared
    report = prepare("cityscapes", root, progress=False, workers=1)  # no --force needed: content is the same
    assert report.label_files["unchanged"] > 0 and report.label_files["written"] == report.label_files["refused"] == 0
    assert not create_dataset("cityscapes", root, "train").stale_prepared
