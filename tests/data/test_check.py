"""``udaseg data check``: each problem kind is caught and the files named; the histogram; the CLI."""

from __future__ import annotations

import shutil

import data_fixtures as F
import numpy as np
import pytest

from udaseg.cli import main
from udaseg.data.check import LISTED_PER_KIND, check
from udaseg.errors import DataError


def test_clean_dataset_is_ok(tmp_path):
    report = check("cityscapes", F.make_cityscapes(tmp_path / "cs"), workers=1)
    assert report.ok, report.describe()
    assert {s: (c.images, c.labelled) for s, c in report.splits.items()} == {
        "train": (4, 4), "val": (2, 2), "test": (2, 0)}
    assert "OK" in report.describe().splitlines()[0]


def test_histogram_by_hand(tmp_path):
    root = tmp_path / "gta"
    label = np.full((4, 5), 7, np.uint8)        # road
    label[0, :] = 23                            # 5 sky
    label[1, :2] = 0                            # 2 unlabeled -> ignore
    F.write_rgb(root / "images" / "00001.png", np.zeros((4, 5, 3), np.uint8))
    F.write_palette(root / "labels" / "00001.png", label)
    report = check("gta5", root, workers=1)
    assert report.class_pixels[0] == 13 and report.class_pixels[10] == 5 and report.class_pixels[255] == 2
    text = report.describe()
    assert "road" in text and "72.22%" in text and "27.78%" in text and "ignore = 10.0%" in text


def test_every_problem_kind_is_reported_with_its_file(tmp_path):
    root = F.make_gta5(tmp_path / "gta", n=6)
    F.truncate(root / "images" / "00001.png")                     # unreadable image
    F.truncate(root / "labels" / "00002.png")                     # unreadable label
    F.widen_label(root / "labels" / "00003.png")                  # size mismatch
    F.put_label_value(root / "labels" / "00004.png", 40)          # value outside the id set
    (root / "labels" / "00005.png").unlink()                      # image without label
    (root / "images" / "00006.png").unlink()                      # label without image
    report = check("gta5", root, workers=1)
    assert not report.ok
    p = report.problems
    assert len(p["unreadable"]) == 2
    assert any("images/00001.png" in m for m in p["unreadable"])
    assert any("labels/00002.png" in m for m in p["unreadable"])
    assert len(p["size_mismatch"]) == 1 and "labels/00003.png" in p["size_mismatch"][0]
    assert len(p["label_values"]) == 1 and "labels/00004.png holds values 40" in p["label_values"][0]
    assert sorted(p["unpaired"]) == ["images/00005.png: image without label (expected labels/00005.png)",
                                     "labels/00006.png: label without image (expected images/00006.png)"]
    text = report.describe()
    for name in ("00001", "00002", "00003", "00004", "00005", "00006"):
        assert name in text
    assert "6 PROBLEM(S)" in text


def test_prepared_files_are_checked_too(tmp_path):
    from udaseg.data.prepare import prepare

    root = F.make_gta5(tmp_path / "gta")
    prepare("gta5", root, progress=False, workers=1)
    F.put_label_value(root / "labels" / "00002_labelTrainIds.png", 19)
    report = check("gta5", root, workers=1)
    assert report.problems["label_values"] == [
        "label labels/00002_labelTrainIds.png holds values 19 outside the valid Cityscapes train ids {0-18, 255}"]


def test_synthia_depth_is_checked(tmp_path):
    root = F.make_synthia(tmp_path / "syn")
    F.truncate(root / "Depth" / "Depth" / "0000001.png")
    (root / "Depth" / "Depth" / "0000002.png").unlink()
    report = check("synthia", root, workers=1)
    assert any("Depth/Depth/0000001.png" in m for m in report.problems["unreadable"])
    assert any("0000002.png: image without depth" in m for m in report.problems["unpaired"])


def test_empty_and_missing_splits(tmp_path):
    root = F.make_cityscapes(tmp_path / "cs")
    for path in (root / "leftImg8bit" / "val").rglob("*.png"):
        path.unlink()
    for path in (root / "gtFine" / "val").rglob("*.png"):
        path.unlink()
    shutil.rmtree(root / "leftImg8bit" / "test")
    report = check("cityscapes", root, workers=1)
    assert [m.split(":")[0] for m in report.problems["empty_split"]] == ["cityscapes split 'val'"]
    assert not report.problems["missing_split"]                  # not asked for: just absent
    report = check("cityscapes", root, splits=["train", "test"], workers=1)
    assert len(report.problems["missing_split"]) == 1 and "leftImg8bit/test" in report.problems["missing_split"][0]
    assert list(report.splits) == ["train"]


def test_long_lists_are_cut_with_a_count(tmp_path):
    root = F.make_gta5(tmp_path / "gta", n=LISTED_PER_KIND + 5, size=(4, 4))
    for path in (root / "labels").glob("*.png"):
        path.unlink()
    text = check("gta5", root, workers=1).describe()
    assert f"unpaired files ({LISTED_PER_KIND + 5}):" in text and "… and 5 more" in text


def test_missing_root_and_misused_class_map(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        check("gta5", tmp_path / "absent")
    with pytest.raises(DataError, match="custom datasets only"):
        check("gta5", F.make_gta5(tmp_path / "gta"), class_map="x.yaml")


def test_custom_with_class_map_option(tmp_path):
    root = F.make_custom(tmp_path / "custom")
    moved = tmp_path / "buildings.yaml"
    (root / "class_map.yaml").rename(moved)
    report = check("custom", root, class_map=str(moved), workers=1)
    assert report.ok and report.label_space.name == "buildings"
    F.put_label_value(root / "SegmentationClass" / "00002.png", 7)
    assert "SegmentationClass/00002.png holds values 7" in check("custom", root, class_map=str(moved)).problems[
        "label_values"][0]


def test_cli_check_exit_codes(tmp_path, capsys):
    root = F.make_gta5(tmp_path / "gta")
    assert main(["data", "check", "gta5", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    F.truncate(root / "images" / "00002.png")
    assert main(["data", "check", "gta5", str(root)]) == 1
    assert "images/00002.png" in capsys.readouterr().out
    assert main(["data", "check", "gta5", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    cs = F.make_cityscapes(tmp_path / "cs")
    assert main(["data", "check", "cityscapes", str(cs), "--split", "val"]) == 0
    assert main(["data", "check", "cityscapes", str(cs), "--split", "nope"]) == 2
