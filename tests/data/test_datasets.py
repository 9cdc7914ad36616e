"""Loaders: the dataset contract for every registered dataset, label mapping per family,
options, and every bad-input case with the file named in the error."""

from __future__ import annotations

import data_fixtures as F
import numpy as np
import pytest
import torch
from PIL import Image

from udaseg.data import catalog
from udaseg.data.base import (
    EmptySplitError,
    LabelValueError,
    MissingSplitError,
    PairingError,
    SizeMismatchError,
    UnreadableFileError,
    read_index_label,
)
from udaseg.data.registry import create_dataset, dataset_options, list_datasets
from udaseg.errors import ConfigError, DataError

CONTRACT_NAMES = ("gta5", "synthia", "cityscapes", "cityscapes_foggy", "cityscapes_rain", "acdc", "darkzurich",
                  "mapillary", "custom")


@pytest.fixture
def make(tmp_path):
    """make(name) → a fresh fixture root for dataset ``name``."""
    return lambda name, **kw: F.MAKERS[name](tmp_path / name, **kw)


def test_registry_has_every_contract_name():
    assert set(CONTRACT_NAMES) <= set(list_datasets())


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_contract(make, name):
    ds = create_dataset(name, make(name), F.LABELLED_SPLIT[name])
    assert len(ds) > 0 and ds.name == name and ds.split == F.LABELLED_SPLIT[name] and ds.has_labels
    n_classes = ds.label_space.num_classes
    for i in range(len(ds)):
        item = ds[i]
        img, label = item["img"], item["label"]
        assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3
        assert label.dtype == torch.int64 and label.shape == img.shape[1:]
        values = set(label.unique().tolist())
        assert values <= set(range(n_classes)) | {255}
        assert isinstance(item["name"], str) and item["name"]
        loaded = ds.load(i)
        assert loaded["img"].dtype == np.uint8 and loaded["img"].shape == (*label.shape, 3)
        assert np.array_equal(loaded["img"].transpose(2, 0, 1), img.numpy())
        assert np.array_equal(loaded["label"], label.numpy())
    # spawn-started DataLoader workers receive the dataset pickled
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(ds))[0]["label"], ds[0]["label"])
    # meta batches with the default collate (strings and numbers only, same keys)
    batch = torch.utils.data.default_collate([ds[0], ds[len(ds) - 1]])
    assert batch["img"].shape[0] == 2 and batch["meta"]["dataset"] == [name, name]


@pytest.mark.parametrize("name", ["gta5", "cityscapes", "acdc"])
def test_raw_labels_map_through_the_catalog(make, name):
    ds = create_dataset(name, make(name), "train", use_prepared=False)
    source = ds.label_source(0)
    raw = read_index_label(source.path)
    lut = catalog.raw_to_space_lut("cityscapes_id" if "labelTrainIds" not in source.path.name else "train_id",
                                   "cityscapes19")
    assert np.array_equal(ds.load(0)["label"], lut[raw])


def test_names_follow_the_export_conventions(make):
    root = make("cityscapes")
    assert create_dataset("cityscapes", root, "val")[0]["name"] == "aachen_000000_000019"
    foggy = create_dataset("cityscapes_foggy", root, "val", beta=0.02)
    assert [s.name for s in foggy.samples] == ["aachen_000000_000019_foggy_beta_0.02",
                                               "bonn_000000_000019_foggy_beta_0.02"]
    rain = create_dataset("cityscapes_rain", root, "val")
    assert rain.samples[0].name == "aachen_000000_000019_rain_alpha_0.01_beta_0.005_dropsize_0.01_pattern_1"
    assert create_dataset("gta5", make("gta5"))[0]["name"] == "00001"
    assert create_dataset("acdc", make("acdc"), "val", conditions="night")[0]["name"] == "GOPR0401_frame_000000"


def test_foggy_and_rain_share_the_gtfine_label_of_their_frame(make):
    root = make("cityscapes")
    clear = create_dataset("cityscapes", root, "train")
    for variant in ("cityscapes_foggy", "cityscapes_rain"):
        ds = create_dataset(variant, root, "train")
        for i in range(len(ds)):
            stem = ds.samples[i].name.split("_foggy")[0].split("_rain")[0]
            j = next(k for k, s in enumerate(clear.samples) if s.name == stem)
            assert ds.label_source(i).path == clear.label_source(j).path


def test_foggy_beta_option(make):
    root = make("cityscapes")
    assert len(create_dataset("cityscapes_foggy", root, "train")) == 3 * 4
    assert len(create_dataset("cityscapes_foggy", root, "train", beta=[0.01, "0.02"])) == 2 * 4
    one = create_dataset("cityscapes_foggy", root, "train", beta="0.005")
    assert {s.meta["beta"] for s in one.samples} == {0.005}
    with pytest.raises(DataError, match="beta"):
        create_dataset("cityscapes_foggy", root, "train", beta=0.03)


def test_acdc_conditions_and_unlabelled_test_split(make):
    root = make("acdc")
    assert len(create_dataset("acdc", root, "train")) == 8
    night = create_dataset("acdc", root, "train", conditions="night")
    assert len(night) == 2 and {s.meta["condition"] for s in night.samples} == {"night"}
    assert len(create_dataset("acdc", root, "train", conditions=["fog", "snow"])) == 4
    test = create_dataset("acdc", root, "test")
    assert not test.has_labels and "label" not in test[0]
    with pytest.raises(DataError, match="condition"):
        create_dataset("acdc", root, "train", conditions="sunny")


def test_acdc_reads_official_train_ids_for_19_classes_and_label_ids_otherwise(make):
    root = make("acdc")
    assert create_dataset("acdc", root, "val").label_source(0).path.name.endswith("_gt_labelTrainIds.png")
    ds16 = create_dataset("acdc", root, "val", label_space="synthia16")
    assert ds16.label_source(0).path.name.endswith("_gt_labelIds.png")
    raw = read_index_label(ds16.label_source(0).path)
    assert np.array_equal(ds16.load(0)["label"], catalog.raw_to_space_lut("cityscapes_id", "synthia16")[raw])


def test_darkzurich_splits(make):
    root = make("darkzurich")
    train = create_dataset("darkzurich", root, "train")
    assert len(train) == 2 and not train.has_labels and train.samples[0].meta["condition"] == "night"
    assert len(create_dataset("darkzurich", root, "train", conditions="all")) == 6
    val = create_dataset("darkzurich", root, "val")
    assert val.has_labels and len(val) == 2
    assert not create_dataset("darkzurich", root, "test").has_labels


def test_synthia_class_id_is_the_red_channel_and_depth_is_metres(make):
    root = make("synthia")
    ds = create_dataset("synthia", root, depth=True)
    sample = ds.load(0)
    import cv2

    bgr = cv2.imread(str(ds.samples[0].labels[0].path), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(sample["label"], catalog.raw_to_space_lut("synthia_id", "cityscapes19")[bgr[..., 2]])
    depth_cm = cv2.imread(str(root / "Depth" / "Depth" / "0000000.png"), cv2.IMREAD_ANYDEPTH)
    assert sample["depth"].dtype == np.float32
    np.testing.assert_allclose(sample["depth"], depth_cm / 100.0, rtol=1e-6)
    item = ds[0]
    assert item["depth"].dtype == torch.float32 and item["depth"].shape == item["label"].shape
    assert "depth" not in create_dataset("synthia", root)[0]


def test_synthia_seven_classes_keep_lane_marking_as_flat(tmp_path):
    root = tmp_path / "synthia"
    label = np.full((8, 8), 22, dtype=np.uint8)  # lane marking: ignored in 19/16 classes, flat in 7
    F.write_rgb(root / "RGB" / "0000000.png", np.zeros((8, 8, 3), np.uint8))
    F.write_synthia_label(root / "GT" / "LABELS" / "0000000.png", label)
    assert (create_dataset("synthia", root)[0]["label"] == 255).all()
    assert (create_dataset("synthia", root, label_space="seven")[0]["label"] == 0).all()


def test_mapillary_maps_ids_by_name(make, tmp_path):
    v12 = create_dataset("mapillary", make("mapillary"), "train")
    assert v12.split == "training"
    names = list(reversed(catalog.MAPILLARY_V12_NAMES))  # another release with other id order
    other = create_dataset("mapillary", F.make_mapillary(tmp_path / "other", names=names), "val")
    for ds in (v12, other):
        for i in range(len(ds)):
            raw = read_index_label(ds.label_source(i).path)
            space_ids = set(np.unique(ds.load(i)["label"]).tolist())
            raw_names = {(names if ds is other else catalog.MAPILLARY_V12_NAMES)[v] for v in np.unique(raw)}
            expected = {catalog.MAPILLARY_NAME_TO_TRAIN_ID.get(n, 255) for n in raw_names}
            assert space_ids == expected
    seven = create_dataset("mapillary", tmp_path / "other", "val", label_space="seven")
    assert set(np.unique(seven.load(0)["label"]).tolist()) <= {0, 4, 6, 255}


def test_custom_class_map_maps_raw_values(make):
    root = make("custom")
    ds = create_dataset("custom", root, "train")
    assert ds.label_space.name == "buildings" and ds.label_space.classes == ("background", "building")
    assert [s.name for s in ds.samples] == ["00001", "00002", "00003"]
    label = ds.load(0)["label"]
    assert label[0, 0] == 1 and label[-1, -1] == 0
    assert len(create_dataset("custom", root, "val")) == 1
    with pytest.raises(DataError, match="differs"):
        create_dataset("custom", root, "train", label_space="cityscapes19")
    with pytest.raises(DataError, match="unknown split"):
        create_dataset("custom", root, "test")


def test_custom_class_map_problems_name_the_key(make):
    root = make("custom")
    bad = dict(F.BUILDINGS_CLASS_MAP, colour="red")
    F.make_custom(root, class_map=bad)
    with pytest.raises(DataError, match="colour"):
        create_dataset("custom", root)
    bad = dict(F.BUILDINGS_CLASS_MAP, id_map={0: 0, 255: 7})
    F.make_custom(root, class_map=bad)
    with pytest.raises(DataError, match="class_map.yaml: key 'id_map'"):
        create_dataset("custom", root)
    with pytest.raises(DataError, match="nope.yaml"):
        create_dataset("custom", root, class_map=root / "nope.yaml")


def test_shipped_example_class_maps_parse():
    from pathlib import Path

    from udaseg.data.custom import load_class_map

    folder = Path(__file__).resolve().parents[2] / "configs" / "datasets"
    maps = sorted(folder.glob("*.yaml"))
    assert len(maps) >= 4
    for path in maps:
        cmap = load_class_map(path)
        assert cmap.space.num_classes == 2 and cmap.labelled_splits


def test_unknown_option_split_and_dataset():
    with pytest.raises(ConfigError, match="'colour'.*gta5"):
        create_dataset("gta5", "/nonexistent", colour=1)
    with pytest.raises(ConfigError, match="unknown dataset"):
        create_dataset("kitti", "/nonexistent")
    assert "beta" in dataset_options("cityscapes_foggy") and "label_space" in dataset_options("cityscapes_foggy")


def test_unknown_split(make):
    with pytest.raises(DataError, match="unknown split 'valid'"):
        create_dataset("cityscapes", make("cityscapes"), "valid")


# ---------------------------------------------------------------------------------------------
# Bad input, for every dataset.
@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_missing_root(tmp_path, name):
    if name == "custom":  # its class map lives in the root
        with pytest.raises(DataError, match="class_map.yaml"):
            create_dataset(name, tmp_path / "absent")
        return
    with pytest.raises(MissingSplitError, match=str(tmp_path / "absent")):
        create_dataset(name, tmp_path / "absent", F.LABELLED_SPLIT[name])


@pytest.mark.parametrize("name", ["cityscapes", "cityscapes_foggy", "acdc", "mapillary", "custom"])
def test_missing_split_folder(make, name):
    import shutil

    root = make(name)
    options = {"conditions": "fog"} if name == "acdc" else {}  # "all" means the conditions present
    ds = create_dataset(name, root, F.LABELLED_SPLIT[name], **options)
    shutil.rmtree(ds.samples[0].image.parent if name in ("custom", "mapillary") else ds.samples[0].image.parent.parent)
    with pytest.raises(MissingSplitError) as err:
        create_dataset(name, root, F.LABELLED_SPLIT[name], **options)
    assert "does not exist" in str(err.value)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_image_without_label(make, name):
    root = make(name)
    ds = create_dataset(name, root, F.LABELLED_SPLIT[name])
    image = ds.samples[0].image
    for source in ds.samples[0].labels:
        source.path.unlink()
    with pytest.raises(PairingError) as err:
        create_dataset(name, root, F.LABELLED_SPLIT[name])
    assert image.name in str(err.value) and "image without label" in str(err.value)
    assert "expected" in str(err.value)
    kept = create_dataset(name, root, F.LABELLED_SPLIT[name], unpaired="skip")
    assert image not in [s.image for s in kept.samples] and kept.unpaired[0].path == image


@pytest.mark.parametrize("name", ["gta5", "synthia", "cityscapes", "acdc", "darkzurich", "mapillary", "custom"])
def test_label_without_image(make, name):
    root = make(name)
    ds = create_dataset(name, root, F.LABELLED_SPLIT[name])
    label = ds.samples[0].labels[0].path
    ds.samples[0].image.unlink()
    with pytest.raises(PairingError) as err:
        create_dataset(name, root, F.LABELLED_SPLIT[name])
    message = str(err.value)
    if name == "custom":  # the list file names the sample
        assert "train.txt" in message and "does not exist" in message
    else:
        assert label.name in message and "label without image" in message


def test_foggy_and_rain_do_not_require_an_image_for_every_frame(make):
    root = make("cityscapes")
    assert len(create_dataset("cityscapes_rain", root, "train")) == 4  # 2 of 4 frames have rain images


def test_synthia_image_without_depth(make):
    root = make("synthia")
    (root / "Depth" / "Depth" / "0000001.png").unlink()
    create_dataset("synthia", root)  # depth not requested: fine
    with pytest.raises(PairingError, match="0000001.png: image without depth"):
        create_dataset("synthia", root, depth=True)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_truncated_image(make, name):
    ds = create_dataset(name, make(name), F.LABELLED_SPLIT[name])
    F.truncate(ds.samples[0].image)
    with pytest.raises(UnreadableFileError) as err:
        ds[0]
    assert str(ds.samples[0].image) in str(err.value) and "expected" in str(err.value)
    ds[len(ds) - 1]  # the others still load


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_truncated_label(make, name):
    ds = create_dataset(name, make(name), F.LABELLED_SPLIT[name])
    F.truncate(ds.label_source(0).path)
    with pytest.raises(UnreadableFileError) as err:
        ds[0]
    assert str(ds.label_source(0).path) in str(err.value)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_size_mismatch(make, name):
    ds = create_dataset(name, make(name), F.LABELLED_SPLIT[name])
    F.widen_label(ds.label_source(0).path)
    with pytest.raises(SizeMismatchError) as err:
        ds[0]
    message = str(err.value)
    assert str(ds.samples[0].image) in message and str(ds.label_source(0).path) in message
    assert "expected the same size" in message


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_label_values_outside_the_id_set(make, name):
    ds = create_dataset(name, make(name), F.LABELLED_SPLIT[name])
    source = ds.label_source(0)
    bad = F.first_invalid_value(source.encoding.valid_ids)
    F.put_label_value(source.path, bad)
    with pytest.raises(LabelValueError) as err:
        ds[0]
    assert err.value.values == [bad] and str(source.path) in str(err.value) and str(bad) in str(err.value)


def test_16bit_synthia_values_above_255_are_reported(make):
    ds = create_dataset("synthia", make("synthia"))
    label = F.read_raw(ds.label_source(0).path).copy()
    label[0, 0] = 1000
    F.write_synthia_label(ds.label_source(0).path, label)
    with pytest.raises(LabelValueError, match="1000"):
        ds[0]


def test_multichannel_label_is_reported(make):
    ds = create_dataset("cityscapes", make("cityscapes"), "val")
    path = ds.label_source(0).path
    Image.fromarray(np.random.default_rng(0).integers(0, 30, (12, 24, 3), dtype=np.uint8)).save(path)
    with pytest.raises(UnreadableFileError, match="single-channel"):
        ds[0]


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_empty_split(make, name):
    root = make(name)
    for path in root.rglob("*"):
        if path.is_file() and path.name != "class_map.yaml":
            path.write_text("") if path.suffix == ".txt" else path.unlink()
    with pytest.raises(EmptySplitError) as err:
        create_dataset(name, root, F.LABELLED_SPLIT[name])
    assert "no usable samples" in str(err.value)


def test_the_class_map_example_of_the_docs_works(tmp_path):
    """The YAML example in docs/datasets.md parses and reads a dataset laid out as it says."""
    import re
    from pathlib import Path

    from udaseg.data.custom import load_class_map

    docs = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
    example = re.search(r"```yaml\n(# ROOT/class_map.yaml.*?)```", docs, re.S).group(1)
    root = F.make_custom(tmp_path / "custom")
    (root / "lists").mkdir()
    (root / "train.txt").rename(root / "lists" / "train.txt")
    (root / "val.txt").rename(root / "lists" / "val.txt")
    (root / "class_map.yaml").write_text(example)
    cmap = load_class_map(root / "class_map.yaml")
    assert cmap.space.classes == ("background", "building") and cmap.labelled_splits == ("train", "val")
    ds = create_dataset("custom", root, "train")
    assert len(ds) == 3 and set(np.unique(ds.load(0)["label"])) == {0, 1}
