"""``udaseg data prepare``: train-id files, hand-checked statistics, idempotence, refusal,
--force, atomic writes, label-space switches, parallel workers, and the CLI exit codes."""

from __future__ import annotations

import json

import data_fixtures as F
import numpy as np
import pytest
from PIL import Image

from udaseg.cli import main
from udaseg.data import catalog
from udaseg.data.base import PREPARED_MANIFEST, read_prepared_state
from udaseg.data.prepare import prepare
from udaseg.data.registry import create_dataset
from udaseg.errors import DataError


def _gta_root(tmp_path):
    """Two GTA5 frames with known content (4x5 labels, Cityscapes label ids):
    00001: 12 road (7), 6 car (26), 2 'unlabeled' (0);  00002: 15 sky (23), 5 road (7)."""
    root = tmp_path / "gta"
    a = np.array([[7, 7, 7, 7, 7], [7, 7, 7, 7, 7], [7, 7, 26, 26, 26], [26, 26, 26, 0, 0]], np.uint8)
    b = np.array([[23] * 5, [23] * 5, [23] * 5, [7] * 5], np.uint8)
    for i, label in enumerate((a, b), start=1):
        F.write_rgb(root / "images" / f"{i:05d}.png", np.zeros((4, 5, 3), np.uint8))
        F.write_palette(root / "labels" / f"{i:05d}.png", label)
    return root


def test_gta5_train_ids_and_statistics_by_hand(tmp_path):
    root = _gta_root(tmp_path)
    report = prepare("gta5", root, progress=False, workers=1)
    assert report.label_files["written"] == 2
    train_ids = np.asarray(Image.open(root / "labels" / "00001_labelTrainIds.png"))
    assert Image.open(root / "labels" / "00001_labelTrainIds.png").mode == "L"
    assert train_ids.tolist() == [[0] * 5, [0] * 5, [0, 0, 13, 13, 13], [13, 13, 13, 255, 255]]
    stats = json.loads((root / "sample_class_stats.json").read_text())
    assert stats == [{"0": 12, "13": 6, "file": "labels/00001_labelTrainIds.png"},
                     {"0": 5, "10": 15, "file": "labels/00002_labelTrainIds.png"}]
    with_class = json.loads((root / "samples_with_class.json").read_text())
    assert with_class == {"0": [["labels/00001_labelTrainIds.png", 12], ["labels/00002_labelTrainIds.png", 5]],
                          "10": [["labels/00002_labelTrainIds.png", 15]],
                          "13": [["labels/00001_labelTrainIds.png", 6]]}
    assert json.loads((root / PREPARED_MANIFEST).read_text())["label_space"] == "cityscapes19"
    assert report.class_pixels == {0: 17, 10: 15, 13: 6}
    assert "2 written" in report.describe()


def test_synthia_conversion_uses_the_red_channel(tmp_path):
    root = tmp_path / "synthia"
    classes = np.array([[3, 3, 8], [1, 22, 10]], np.uint16)
    F.write_rgb(root / "RGB" / "0000000.png", np.zeros((2, 3, 3), np.uint8))
    F.write_synthia_label(root / "GT" / "LABELS" / "0000000.png", classes, instance_ids=np.full((2, 3), 9))
    prepare("synthia", root, progress=False, workers=1)
    out = np.asarray(Image.open(root / "GT" / "LABELS" / "0000000_labelTrainIds.png"))
    assert out.tolist() == [[0, 0, 13], [10, 255, 11]]
    assert json.loads((root / "sample_class_stats.json").read_text()) == [
        {"0": 2, "10": 1, "11": 1, "13": 1, "file": "GT/LABELS/0000000_labelTrainIds.png"}]


def test_cityscapes_converts_train_and_val_and_counts_train_only(tmp_path):
    root = F.make_cityscapes(tmp_path / "cs")
    prepare("cityscapes", root, progress=False, workers=1)
    gt = root / "gtFine"
    assert len(list(gt.glob("train/*/*_gtFine_labelTrainIds.png"))) == 4
    assert len(list(gt.glob("val/*/*_gtFine_labelTrainIds.png"))) == 2
    assert not (gt / "test").exists()
    files = [e["file"] for e in json.loads((root / "sample_class_stats.json").read_text())]
    assert len(files) == 4 and all(f.startswith("gtFine/train/") for f in files)
    # the loader now reads the prepared files, with the same result as the raw ids
    prepared = create_dataset("cityscapes", root, "val")
    raw = create_dataset("cityscapes", root, "val", use_prepared=False)
    assert prepared.label_source(0).prepared and not raw.label_source(0).prepared
    assert all(np.array_equal(prepared.load(i)["label"], raw.load(i)["label"]) for i in range(len(raw)))


def test_foggy_rain_and_clear_prepare_agree_on_a_shared_root(tmp_path):
    root = F.make_cityscapes(tmp_path / "cs")
    prepare("cityscapes", root, progress=False, workers=1)
    for variant in ("cityscapes_foggy", "cityscapes_rain"):
        report = prepare(variant, root, progress=False, workers=1)
        assert report.label_files["written"] == 0 and report.label_files["unchanged"] == 6
        assert set(report.statistics_files.values()) == {"unchanged"}


def test_acdc_writes_only_statistics_from_the_official_train_ids(tmp_path):
    root = F.make_acdc(tmp_path / "acdc")
    report = prepare("acdc", root, progress=False, workers=1)
    assert not report.label_files
    files = [e["file"] for e in json.loads((root / "sample_class_stats.json").read_text())]
    assert len(files) == 8 and all("/train/" in f and f.endswith("_gt_labelTrainIds.png") for f in files)


def test_idempotent(tmp_path):
    root = _gta_root(tmp_path)
    prepare("gta5", root, progress=False, workers=1)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    report = prepare("gta5", root, progress=False, workers=1)
    assert report.label_files["unchanged"] == 2 and report.label_files["written"] == 0
    assert set(report.statistics_files.values()) == {"unchanged"}
    assert stamps == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_refuses_different_content_unless_forced(tmp_path):
    root = _gta_root(tmp_path)
    prepare("gta5", root, progress=False, workers=1)
    target = root / "labels" / "00002_labelTrainIds.png"
    F.write_grey(target, np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match="labels/00002_labelTrainIds.png") as err:
        prepare("gta5", root, progress=False, workers=1)
    assert "--force" in str(err.value)
    assert (np.asarray(Image.open(target)) == 0).all()          # left alone
    report = prepare("gta5", root, force=True, progress=False, workers=1)
    assert report.label_files["overwritten"] == 1 and report.label_files["unchanged"] == 1
    assert np.asarray(Image.open(target))[0, 0] == 10


def test_refuses_different_statistics_unless_forced(tmp_path):
    root = _gta_root(tmp_path)
    prepare("gta5", root, progress=False, workers=1)
    (root / "samples_with_class.json").write_text("{}")
    with pytest.raises(DataError, match="samples_with_class.json exists with different content"):
        prepare("gta5", root, progress=False, workers=1)
    assert prepare("gta5", root, force=True, progress=False, workers=1).statistics_files[
        "samples_with_class.json"] == "overwritten"


def test_no_temporary_or_half_written_file_after_a_failure(tmp_path, monkeypatch):
    root = _gta_root(tmp_path)
    import udaseg.data.prepare as P

    calls = []

    def failing_write(path, label):
        calls.append(path)
        path.write_bytes(b"\x89PNG half")                     # a partial file under the temp name
        if len(calls) == 2:
            raise OSError("disk full")
        P.cv2.imwrite(str(path), label)

    monkeypatch.setattr(P, "_write_png", failing_write)
    with pytest.raises(OSError, match="disk full"):
        prepare("gta5", root, progress=False, workers=1)
    names = sorted(p.name for p in (root / "labels").iterdir())
    assert names == ["00001.png", "00001_labelTrainIds.png", "00002.png"]   # no temp, no half file
    assert not list(root.rglob("*.tmp*")) and not (root / "sample_class_stats.json").exists()
    monkeypatch.undo()
    assert prepare("gta5", root, progress=False, workers=1).label_files["written"] == 1


def test_switching_label_space(tmp_path):
    root = _gta_root(tmp_path)
    prepare("gta5", root, progress=False, workers=1)
    with pytest.raises(DataError, match="differ"):
        prepare("gta5", root, label_space="synthia16", progress=False, workers=1)
    state = read_prepared_state(root)
    assert state.label_space == "synthia16" and not state.complete
    # meanwhile the prepared files are a mix: loaders read the raw ids
    ds = create_dataset("gta5", root)
    assert not ds.label_source(0).prepared
    prepare("gta5", root, label_space="synthia16", force=True, progress=False, workers=1)
    assert read_prepared_state(root).complete
    ds16 = create_dataset("gta5", root, label_space="synthia16")
    assert ds16.label_source(0).prepared
    raw = F.read_raw(root / "labels" / "00001.png")
    assert np.array_equal(ds16.load(0)["label"], catalog.raw_to_space_lut("cityscapes_id", "synthia16")[raw])
    # 19-class reads fall back to the raw ids, which every space can use
    ds19 = create_dataset("gta5", root)
    assert not ds19.label_source(0).prepared
    assert np.array_equal(ds19.load(0)["label"], catalog.raw_to_space_lut("cityscapes_id", "cityscapes19")[raw])


def test_parallel_workers_give_the_same_files(tmp_path):
    one = F.make_gta5(tmp_path / "one", n=10, size=(8, 10))
    two = F.make_gta5(tmp_path / "two", n=10, size=(8, 10))
    prepare("gta5", one, progress=False, workers=1)
    prepare("gta5", two, progress=False, workers=2)
    assert (one / "sample_class_stats.json").read_text() == (two / "sample_class_stats.json").read_text()
    for path in (one / "labels").glob("*_labelTrainIds.png"):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(two / "labels" / path.name)))


def test_bad_inputs_stop_prepare_with_the_file_named(tmp_path):
    root = F.make_gta5(tmp_path / "gta")
    F.put_label_value(root / "labels" / "00002.png", 40)
    with pytest.raises(DataError, match=r"00002.png holds values 40"):
        prepare("gta5", root, progress=False, workers=1)
    (root / "labels" / "00003.png").unlink()
    with pytest.raises(DataError, match="00003.png: image without label"):
        prepare("gta5", root, progress=False, workers=1)
    with pytest.raises(DataError, match="does not exist"):
        prepare("gta5", tmp_path / "nothing", progress=False, workers=1)
    dz = F.make_darkzurich(tmp_path / "dz")
    import shutil

    shutil.rmtree(dz / "rgb_anon" / "val")
    with pytest.raises(DataError, match="no labelled split"):
        prepare("darkzurich", dz, progress=False, workers=1)


def test_custom_prepare_uses_the_class_map_space(tmp_path):
    root = F.make_custom(tmp_path / "custom")
    report = prepare("custom", root, progress=False, workers=1)
    assert report.label_space == "buildings"
    stats = json.loads((root / "sample_class_stats.json").read_text())
    assert stats[0] == {"0": 75, "1": 25, "file": "SegmentationClass/00001.png"} and len(stats) == 3


def test_cli_prepare_exit_codes(tmp_path, capsys):
    root = _gta_root(tmp_path)
    assert main(["data", "prepare", "gta5", str(root), "--quiet"]) == 0
    assert "prepared gta5" in capsys.readouterr().out
    F.write_grey(root / "labels" / "00001_labelTrainIds.png", np.zeros((4, 5), np.uint8))
    assert main(["data", "prepare", "gta5", str(root), "--quiet"]) == 2
    assert "00001_labelTrainIds.png" in capsys.readouterr().err
    assert main(["data", "prepare", "gta5", str(root), "--quiet", "--force"]) == 0
    assert main(["data", "prepare", "gta5", str(tmp_path / "absent"), "--quiet"]) == 2
