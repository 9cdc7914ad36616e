"""The class tables against cityscapesscripts and the id tables of the datasets' own tools."""

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels

from udaseg.data import catalog as C


def test_cityscapes_labels_match_cityscapesscripts():
    ours = {lab.id: lab for lab in C.CITYSCAPES_LABELS}
    assert len(ours) == len(cs_labels.labels) == 35
    for ref in cs_labels.labels:
        lab = ours[ref.id]
        assert lab.name == ref.name
        assert lab.category == ref.category and lab.category_id == ref.categoryId
        assert lab.has_instances == ref.hasInstances and lab.ignore_in_eval == ref.ignoreInEval
        assert lab.color == tuple(ref.color)
        expected_train = 255 if ref.trainId in (255, -1) else ref.trainId
        assert lab.train_id == expected_train


def test_train_classes_and_palette_match_cityscapesscripts():
    for t, name in enumerate(C.CITYSCAPES_CLASSES):
        ref = cs_labels.trainId2label[t]
        assert ref.name == name
        assert C.CITYSCAPES_PALETTE[t] == tuple(ref.color)
        assert C.TRAIN_ID_TO_LABEL_ID[t] == ref.id


def test_label_id_lut_matches_cityscapesscripts_for_every_id():
    lut = C.raw_to_space_lut("cityscapes_id", "cityscapes19")
    for ref in cs_labels.labels:
        if ref.id < 0:
            continue
        expected = 255 if ref.trainId in (255, -1) else ref.trainId
        assert lut[ref.id] == expected, ref.name
    assert (lut[34:] == 255).all()


def test_gta_table_of_the_spec():
    # docs/methods.md D8.3: exactly these 19 ids survive.
    lut = C.raw_to_space_lut("cityscapes_id", "cityscapes19")
    kept = {i: int(lut[i]) for i in range(256) if lut[i] != 255}
    assert kept == {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_synthia_table_of_the_spec():
    lut = C.raw_to_space_lut("synthia_id", "cityscapes19")
    expected = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
                8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
    for raw in range(256):
        assert lut[raw] == expected.get(raw, 255), raw
    # void, parking-slot, road-work and lane marking are ignored in the 19-class space ...
    assert all(lut[i] == 255 for i in (0, 13, 14, 22))
    # ... but lane marking is "flat" in the 7-class protocol of DADA/CTRL (bafft_daf_ida.md B.3.3).
    assert C.raw_to_space_lut("synthia_id", "seven")[22] == 0


def test_synthia16_protocol_table():
    # bafft_daf_ida.md B.3.2: compact 16-way ids with their SYNTHIA ids and Cityscapes label ids.
    table = [(3, 7), (4, 8), (2, 11), (21, 12), (5, 13), (7, 17), (15, 19), (9, 20), (6, 21), (1, 23),
             (10, 24), (17, 25), (8, 26), (19, 28), (12, 32), (11, 33)]
    syn = C.raw_to_space_lut("synthia_id", "synthia16")
    cs = C.raw_to_space_lut("cityscapes_id", "synthia16")
    for k, (sid, cid) in enumerate(table):
        assert syn[sid] == k and cs[cid] == k
    for cid in (22, 27, 31):  # terrain, truck, train
        assert cs[cid] == 255
    space = C.get_label_space("synthia16")
    assert space.num_classes == 16
    assert [space.classes[i] for i in space.eval_subsets["mIoU13"]] == [
        "road", "sidewalk", "building", "traffic light", "traffic sign", "vegetation", "sky", "person",
        "rider", "car", "bus", "motorcycle", "bicycle"]


def test_eval_subsets_of_the_19_class_vector():
    space = C.get_label_space("cityscapes19")
    names16 = [space.classes[i] for i in space.eval_subsets["mIoU16"]]
    assert len(names16) == 16 and not {"terrain", "truck", "train"} & set(names16)
    names13 = [space.classes[i] for i in space.eval_subsets["mIoU13"]]
    assert set(names16) - set(names13) == {"wall", "fence", "pole"}


def test_seven_class_tables():
    cs = C.raw_to_space_lut("cityscapes_id", "seven")
    groups = {0: [7, 8], 1: [11, 12, 13], 2: [17, 19, 20], 3: [21, 22], 4: [23], 5: [24, 25],
              6: [26, 27, 28, 29, 30, 31, 32, 33]}
    for k, ids in groups.items():
        assert all(cs[i] == k for i in ids)
    assert sum(int(v != 255) for v in cs) == sum(len(v) for v in groups.values())
    syn = C.raw_to_space_lut("synthia_id", "seven")
    for sid in (21, 16, 17, 19, 12, 18, 20):  # unmapped in DADA's SYNTHIA table
        assert syn[sid] == 255
    # Mapillary terrain is flat (DADA's inconsistency, kept on purpose).
    mp = C.raw_to_space_lut("mapillary_id", "seven")
    assert mp[C.MAPILLARY_V12_NAMES.index("nature--terrain")] == 0
    assert mp[C.MAPILLARY_V12_NAMES.index("object--vehicle--boat")] == 6
    assert mp[C.MAPILLARY_V12_NAMES.index("nature--water")] == 255
    assert len(C.MAPILLARY_V12_NAMES) == 66


def test_colorize_and_unknown_space():
    img = C.colorize(np.array([[0, 255]], dtype=np.uint8), C.CITYSCAPES_PALETTE)
    assert img.shape == (1, 2, 3) and tuple(img[0, 0]) == (128, 64, 128) and tuple(img[0, 1]) == (0, 0, 0)
    with pytest.raises(KeyError, match="unknown label space"):
        C.get_label_space("nope")
