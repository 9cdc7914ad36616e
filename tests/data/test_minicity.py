"""MiniCity generator: on-disk formats read back the way the reference converters read the real
datasets, sizes, the physics of the weather variants, determinism, and the output-folder rules.

Most tests use the session's small MiniCity (``minicity_small``: 64×128, seed 0, scale small)."""

from __future__ import annotations

import filecmp
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from udaseg.data import catalog
from udaseg.data.minicity import generate
from udaseg.data.minicity.domains import DOMAINS, domain_image_size
from udaseg.data.minicity.weather import FOGGY_CITYSCAPES_BETAS, RAIN_CITYSCAPES_SETTINGS, fog, transmittance
from udaseg.errors import DataError

SIZE = (64, 128)
EXPECTED_SIZES = {"cityscapes": (64, 128), "gta": (70, 128), "synthia": (76, 128), "acdc": (72, 128)}
CITYSCAPES_IDS = set(catalog.CITYSCAPES_LABEL_IDS)
SYNTHIA_IDS = set(catalog.SYNTHIA_CLASS_NAMES)
LUT = catalog.raw_to_space_lut("cityscapes_id", "cityscapes19")
COMMON = {"road", "sidewalk", "building", "vegetation", "sky", "car", "pole", "person"}


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", path
        return np.array(im)


def _names(ids) -> set[str]:
    names = {label.id: label.name for label in catalog.CITYSCAPES_LABELS}
    return {names[i] for i in ids}


def _all_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
def test_sizes_keep_each_real_datasets_aspect_ratio():
    for domain, expected in EXPECTED_SIZES.items():
        assert domain_image_size(domain, SIZE) == expected
    h, w = domain_image_size("gta", (256, 512))
    assert (h, w) == (282, 512)
    for domain, spec in DOMAINS.items():
        h, w = domain_image_size(domain, (256, 512))
        assert h % 2 == 0 and abs(w / h - spec.aspect) < 0.02


def test_gta_reads_back_like_gta5(minicity_small):
    root = minicity_small / "gta"
    images = sorted((root / "images").glob("*.png"))
    labels = sorted((root / "labels").glob("*.png"))
    assert [p.name for p in images] == [p.name for p in labels] == [f"{i:05d}.png" for i in range(1, len(images) + 1)]
    by_id = sorted((label for label in catalog.CITYSCAPES_LABELS if label.id >= 0), key=lambda label: label.id)
    palette = [c for label in by_id for c in label.color]
    seen = set()
    for image, label in zip(images, labels):
        assert _rgb(image).shape == EXPECTED_SIZES["gta"] + (3,)
        with Image.open(label) as im:
            assert im.mode == "P"
            assert im.getpalette()[: len(palette)] == palette
            ids = np.array(im)  # palette indices = Cityscapes label ids
        assert ids.shape == EXPECTED_SIZES["gta"]
        seen |= set(np.unique(ids).tolist())
    assert seen <= CITYSCAPES_IDS
    assert _names(seen) >= COMMON


def test_synthia_reads_back_like_daformers_converter(minicity_small):
    root = minicity_small / "synthia"
    images = sorted((root / "RGB").glob("*.png"))
    assert [p.name for p in images] == [f"{i:07d}.png" for i in range(len(images))]
    seen = set()
    for image in images:
        assert _rgb(image).shape == EXPECTED_SIZES["synthia"] + (3,)
        gt = cv2.imread(str(root / "GT" / "LABELS" / image.name), cv2.IMREAD_UNCHANGED)
        assert gt.dtype == np.uint16 and gt.shape == EXPECTED_SIZES["synthia"] + (3,)
        classes, instances = gt[..., -1], gt[..., 1]  # BGR: R = class id, G = instance id
        assert not gt[..., 0].any()
        seen |= set(np.unique(classes).tolist())
        cars = classes == 8
        if cars.any():
            assert instances[cars].min() > 0  # things carry instance ids …
        assert not instances[np.isin(classes, [1, 2, 3, 4, 6])].any()  # … stuff does not
        depth = cv2.imread(str(root / "Depth" / "Depth" / image.name), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == EXPECTED_SIZES["synthia"]
        assert (depth[classes == 1] == 65535).all()  # sky
        assert depth[classes == 3].min() > 0 and depth[classes == 3].max() < 65535  # road, in cm
    assert seen <= SYNTHIA_IDS
    assert not seen & {16, 18, 20}  # no terrain, truck or train, like the real SYNTHIA
    assert {1, 2, 3, 4, 6, 7, 8, 10, 22} <= seen  # sky … pedestrian, and lane markings (22)


def test_synthia_depth_is_exact_in_centimetres():
    from udaseg.data.minicity.frame import make_frame
    from udaseg.data.minicity.writer import depth_centimetres

    frame = make_frame("synthia", np.random.default_rng(3), (76, 128))
    depth = frame.render.depth
    cm = depth_centimetres(depth)
    finite = np.isfinite(depth)
    assert np.abs(cm[finite].astype(np.float64) - np.clip(depth[finite] * 100, 0, 65535)).max() <= 0.5 + 1e-3
    assert (cm[~finite] == 65535).all()


def test_cityscapes_reads_back_like_cityscapes(minicity_small):
    root = minicity_small / "cityscapes"
    cities = {}
    for split in ("train", "val"):
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        assert images, split
        cities[split] = {p.parent.name for p in images}
        assert cities[split] <= set(DOMAINS["cityscapes"].cities[split])
        for image in images:
            assert re.fullmatch(r"[a-z]+_\d{6}_\d{6}_leftImg8bit\.png", image.name)
            assert image.name.startswith(image.parent.name + "_")
            stem = image.name[: -len("_leftImg8bit.png")]
            assert _rgb(image).shape == SIZE + (3,)
            label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
            ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
            assert ids.dtype == np.uint8 and ids.shape == SIZE
            assert set(np.unique(ids).tolist()) <= CITYSCAPES_IDS
            # The ego vehicle's bonnet at the bottom and the rectification border, both void.
            assert (ids[-2] == 1).mean() > 0.5 and not (ids[: SIZE[0] // 2] == 1).any()
            assert (ids == 2).any()
    assert not cities["train"] & cities["val"]


def test_foggy_and_rain_cityscapes_names_pair_with_gtfine(minicity_small):
    root = minicity_small / "cityscapes"
    stems = {split: {p.name[: -len("_leftImg8bit.png")] for p in (root / "leftImg8bit" / split).glob("*/*.png")}
             for split in ("train", "val")}
    for split in ("train", "val"):
        foggy = sorted((root / "leftImg8bit_foggy" / split).glob("*/*.png"))
        assert len(foggy) == 3 * len(stems[split])
        for path in foggy:
            m = re.fullmatch(r"(.+)_leftImg8bit_foggy_beta_(0\.005|0\.01|0\.02)\.png", path.name)
            assert m and m.group(1) in stems[split]
            assert _rgb(path).shape == SIZE + (3,)
        rainy = sorted((root / "leftImg8bit_rain" / split).glob("*/*.png"))
        assert rainy and len(rainy) % len(RAIN_CITYSCAPES_SETTINGS) == 0
        rain_stems = set()
        for path in rainy:
            m = re.fullmatch(r"(.+)_leftImg8bit_rain_alpha_([\d.]+)_beta_([\d.]+)_dropsize_([\d.]+)"
                             r"_pattern_(\d+)\.png", path.name)
            assert m and m.group(1) in stems[split]
            assert tuple(float(v) for v in m.group(2, 3, 4)) in RAIN_CITYSCAPES_SETTINGS
            assert path.name.split("_leftImg8bit")[0] == m.group(1)  # the loaders' pairing rule
            rain_stems.add(m.group(1))
        assert rain_stems < stems[split] or len(stems[split]) == 1  # a subset of the frames


def test_acdc_reads_back_like_acdc(minicity_small):
    root = minicity_small / "acdc"
    for condition in ("fog", "night", "rain", "snow"):
        sequences = {}
        for split in ("train", "val", "test"):
            images = sorted((root / "rgb_anon" / condition / split).glob("*/*_rgb_anon.png"))
            assert images, (condition, split)
            sequences[split] = {p.parent.name for p in images}
            for image in images:
                m = re.fullmatch(r"(GOPR\d{4})_frame_(\d{6})_rgb_anon\.png", image.name)
                assert m and m.group(1) == image.parent.name
                assert _rgb(image).shape == EXPECTED_SIZES["acdc"] + (3,)
                stem = image.name[: -len("_rgb_anon.png")]
                gt = root / "gt" / condition / split / image.parent.name
                if split == "test":
                    assert not gt.exists()
                    continue
                ids = cv2.imread(str(gt / f"{stem}_gt_labelIds.png"), cv2.IMREAD_UNCHANGED)
                train_ids = cv2.imread(str(gt / f"{stem}_gt_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
                assert ids.dtype == train_ids.dtype == np.uint8 and ids.shape == EXPECTED_SIZES["acdc"]
                assert set(np.unique(ids).tolist()) <= CITYSCAPES_IDS
                assert np.array_equal(train_ids, LUT[ids])
        assert not sequences["train"] & sequences["val"] and not sequences["val"] & sequences["test"]
    assert not (root / "gt" / "fog" / "test").exists()


def test_common_classes_appear_in_every_domain(minicity_small):
    manifest = json.loads((minicity_small / "minicity.json").read_text())
    for domain, frequencies in manifest["label_id_frequencies"].items():
        assert set(frequencies) >= COMMON, domain
    assert not {"terrain", "truck", "train"} & set(manifest["label_id_frequencies"]["synthia"])
    assert {"ego vehicle", "rectification border"} <= set(manifest["label_id_frequencies"]["cityscapes"])


# ---------------------------------------------------------------------------------------------
def test_fog_is_monotonic_in_beta_and_distance():
    distance = np.array([0.0, 5.0, 20.0, 80.0, 300.0, np.inf], dtype=np.float32)
    previous = None
    for beta in FOGGY_CITYSCAPES_BETAS:
        t = transmittance(distance, beta)
        assert t[0] == 1.0 and t[-1] == 0.0 and np.all(np.diff(t) < 0)
        assert np.allclose(t[:-1], np.exp(-beta * distance[:-1]))
        if previous is not None:
            assert np.all(t[1:-1] < previous[1:-1])
        previous = t
    image = np.full((1, 6, 3), 0.2, dtype=np.float32)
    airlight = np.array([0.8, 0.8, 0.8], dtype=np.float32)
    foggy = fog(image, distance[None], 0.02, airlight)
    assert np.all(np.diff(foggy[0, :, 0]) > 0) and np.allclose(foggy[0, -1], airlight)


def test_foggy_files_fade_with_beta(minicity_small):
    root = minicity_small / "cityscapes"
    for clear in sorted((root / "leftImg8bit" / "train").glob("*/*.png"))[:3]:
        stem = clear.name[: -len("_leftImg8bit.png")]
        base = _rgb(clear).astype(np.float64)
        changes = []
        for beta in FOGGY_CITYSCAPES_BETAS:
            name = f"{stem}_leftImg8bit_foggy_beta_{beta}.png"
            foggy = _rgb(root / "leftImg8bit_foggy" / "train" / clear.parent.name / name)
            changes.append(np.abs(foggy - base).mean())
        assert changes[0] < changes[1] < changes[2]


# ---------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files_whatever_the_workers(minicity_small, tmp_path):
    again = tmp_path / "again"
    generate(again, size=SIZE, seed=0, scale="small", progress=False, workers=2)  # spawned workers
    files = _all_files(minicity_small)
    assert files == _all_files(again)
    match, mismatch, errors = filecmp.cmpfiles(minicity_small, again, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors


def test_another_seed_gives_other_data(minicity_small, tmp_path):
    other = tmp_path / "other"
    generate(other, size=SIZE, seed=1, scale="small", progress=False)
    images = sorted(p.relative_to(minicity_small) for p in minicity_small.rglob("*.png") if "samples" not in p.parts)
    different = [f for f in images if (other / f).read_bytes() != (minicity_small / f).read_bytes()]
    assert len(different) > 0.9 * len(images)


def test_rerun_with_same_parameters_is_a_no_op(minicity_small):
    before = {p: p.stat().st_mtime_ns for p in minicity_small.rglob("*")}
    summary = generate(minicity_small, size=SIZE, seed=0, scale="small", progress=False)
    assert summary.reused and "nothing regenerated" in summary.describe()
    assert {p: p.stat().st_mtime_ns for p in minicity_small.rglob("*")} == before
    assert summary.counts["cityscapes"]["train"] > 0 and summary.sizes["gta"] == EXPECTED_SIZES["gta"]


def test_refuses_other_folders_and_bad_arguments(minicity_small, tmp_path):
    with pytest.raises(DataError, match="other parameters"):
        generate(minicity_small, size=SIZE, seed=1, scale="small", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=re.escape(str(busy))):
        generate(busy, size=SIZE, scale="small", progress=False)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="scale"):
        generate(tmp_path / "x", scale="huge", progress=False)
    with pytest.raises(DataError, match="too small"):
        generate(tmp_path / "x", size=(16, 128), scale="small", progress=False)
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".*partial*")) and not list(minicity_small.parent.glob(".*partial*"))


def test_empty_folder_is_filled(tmp_path, monkeypatch):
    from udaseg.data.minicity import plan

    monkeypatch.setitem(plan.SCALES, "small", plan.ScaleCounts(
        gta=1, synthia=1, cityscapes={"train": 1, "val": 1}, rain_frames={"train": 1, "val": 1}, rain_patterns=(1,),
        acdc={"train": 1, "val": 1, "test": 1}))
    out = tmp_path / "empty"
    out.mkdir()
    summary = generate(out, size=(32, 64), scale="small", progress=False)
    assert not summary.reused and (out / "minicity.json").is_file()


def test_manifest_readme_and_samples(minicity_small):
    manifest = json.loads((minicity_small / "minicity.json").read_text())
    assert manifest["seed"] == 0 and manifest["scale"] == "small" and manifest["size"] == list(SIZE)
    assert manifest["complete"] and {tuple(v) for v in manifest["sizes"].values()} == set(EXPECTED_SIZES.values())
    for domain, camera in manifest["cameras"].items():
        assert camera["focal_px"][0] > 0 and camera["cx"] > 0 and camera["cy"] > 0, domain
    readme = (minicity_small / "README.md").read_text()
    assert manifest["regenerate"] in readme and "seed 0" in readme
    for domain in EXPECTED_SIZES:
        with Image.open(minicity_small / "samples" / f"{domain}.png") as im:
            assert im.mode == "RGB" and im.width == 2 * SIZE[1]


def test_cli_reports_the_summary(minicity_small, capsys):
    from udaseg.cli import main

    assert main(["data", "minicity", "--out", str(minicity_small), "--size", "64x128", "--seed", "0",
                 "--scale", "small", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "MiniCity" in out and "cityscapes" in out and "nothing regenerated" in out


# ---------------------------------------------------------------------------------------------
# Generator 1.1: thin classes are modelled so that they are resolvable at MiniCity's resolution
# (docs/minicity_generator.md). One object at a time, in front of the Cityscapes domain's camera
# (1.2 m up, level, f = 1.1·W at 256×512).
def _alone(add, seed: int):
    from udaseg.data.minicity.render import render
    from udaseg.data.minicity.scene import Camera, GroundLayout, SceneBuilder

    builder = SceneBuilder(np.random.default_rng(seed))
    add(builder)
    camera = Camera.looking(256, 512, 1.1 * 512, 256, 128, (0.0, 1.2, 0.0), 0.0, 0.0, 0.0)
    ground = GroundLayout(5.0, 0.13, (0.0, 0.0), (3.0, 3.0), (np.array([-30.0]), np.array([-30.0])),
                          (np.array([2], np.uint8), np.array([2], np.uint8)))
    scene = builder.build(camera, ground, np.array([0.0, 1.0, 0.0]), "cityscapes")
    return scene, render(scene).label_ids()


def test_traffic_lights_at_25_m_cover_hundreds_of_pixels_backplate_included():
    from udaseg.data.minicity import objects
    from udaseg.data.minicity.scene import ID, Material

    with_board, without = [], []
    for seed in range(24):
        scene, ids = _alone(lambda b: objects.add_traffic_light(b, 1.0, 25.0, 0.13, -1, overhead=False), seed)
        area = int((ids == ID["traffic light"]).sum())
        (with_board if (scene.material == Material.SIGNAL_BOARD).any() else without).append(area)
        boards = scene.label[scene.material == Material.SIGNAL_BOARD]
        assert (boards == ID["traffic light"]).all()  # Cityscapes labels the backboard as the light
    # A three-lamp housing is ≥ 0.32 × 0.9 m (≥ 140 px at 25 m); generator 1.0's was ~100 px.
    assert min(with_board + without) >= 140
    assert with_board and without and np.median(with_board) > 1.5 * np.median(without)
    assert np.median(with_board + without) >= 300


@pytest.mark.parametrize("motorcycle", [False, True])
def test_a_ridden_two_wheeler_seen_from_behind_is_one_piece(motorcycle):
    from udaseg.data.minicity import objects
    from udaseg.data.minicity.scene import ID

    label_id = ID["motorcycle"] if motorcycle else ID["bicycle"]
    for seed in range(12):
        _, ids = _alone(lambda b: objects.add_two_wheeler(b, (0.0, 12.0), 0, 0.0, 1.0, motorcycle, ridden=True),
                        seed)
        mask = (ids == label_id).astype(np.uint8)
        assert (ids == ID["rider"]).sum() > 500
        # Wheel, frame, rack, pedals (body, tail) show around the rider, and the rider's hands hide
        # the handlebar's ends: one piece, not a few pixels of tyre plus slivers as in generator 1.0
        # (a bicycle there: ~120 px in three pieces; a motorcycle: three pieces).
        assert mask.sum() >= (600 if motorcycle else 200), seed
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        assert stats[1:, cv2.CC_STAT_AREA].max() >= (1.0 if motorcycle else 0.9) * mask.sum(), seed


def test_a_minicity_of_another_generator_version_is_not_reused(minicity_small, tmp_path):
    from udaseg.data.minicity import GENERATOR_VERSION

    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((minicity_small / "minicity.json").read_text())
    assert manifest["version"] == GENERATOR_VERSION != "1.0"
    manifest["version"] = "1.0"
    (old / "minicity.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"other parameters \(version=1\.0.*generator 1\.0.*regenerate it"):
        generate(old, size=SIZE, seed=0, scale="small", progress=False)
    assert json.loads((old / "minicity.json").read_text())["version"] == "1.0"  # left as it was
