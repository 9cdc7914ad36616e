"""ACDC, the Adverse Conditions Dataset with Correspondences (Sakaridis et al., ICCV 2021):
1920×1080 frames in fog, night, rain and snow (1600 train / 406 val / 2000 test).

Layout under ROOT (official ``rgb_anon_trainvaltest.zip`` and ``gt_trainval.zip`` unpacked together)::

    rgb_anon/{fog,night,rain,snow}/{train,val,test}/<seq>/<seq>_frame_<n>_rgb_anon.png
    gt/{fog,night,rain,snow}/{train,val}/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png   (+ _gt_labelIds.png)

The ``*_ref`` folders (normal-condition counterparts) are not used. Option ``conditions``: one
condition, several (list or comma-separated) or ``"all"`` (default: every condition folder present
for the split). ``test`` is image-only (labels are withheld by the benchmark server). ``name`` is
``<seq>_frame_<n>``, the stem the ACDC server expects. The official train-id files are read
directly for ``cityscapes19``; other label spaces use ``_gt_labelIds.png`` when present.
``udaseg data prepare acdc ROOT`` writes only the class statistics (train split, all conditions).

The folder walk is shared with Dark Zurich (same authors, same file conventions).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from udaseg.data.base import (
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_TRAIN_IDS,
    LabelSource,
    SampleFiles,
    SegDataset,
    SplitScan,
    Unpaired,
    files_with_suffix,
    pair_files,
    parse_choice,
    relative,
)
from udaseg.data.registry import register_dataset

IMAGE_SUFFIX = "_rgb_anon.png"
TRAIN_ID_SUFFIX = "_gt_labelTrainIds.png"
LABEL_ID_SUFFIX = "_gt_labelIds.png"
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def scan_anon_folder(dataset: SegDataset, image_dir: Path, gt_dir: Path | None, meta: dict
                     ) -> tuple[list[SampleFiles], list[Unpaired]]:
    """Pair ``image_dir/<seq>/<name>_rgb_anon.png`` with ``gt_dir/<seq>/<name>_gt_label*.png``
    (``gt_dir`` None: image-only split)."""
    labels: dict[str, list[LabelSource]] | None = None
    if gt_dir is not None:
        dataset.require_dir(gt_dir, f"the label folder of {relative(image_dir, dataset.root)} "
                                    f"(<seq>/<seq>_frame_<n>{TRAIN_ID_SUFFIX})")
        labels = {}
        for path in files_with_suffix(gt_dir, LABEL_ID_SUFFIX, depth=2):
            labels.setdefault(path.name[: -len(LABEL_ID_SUFFIX)], []).insert(0, LabelSource(path, CITYSCAPES_LABEL_IDS))
        for path in files_with_suffix(gt_dir, TRAIN_ID_SUFFIX, depth=2):
            labels.setdefault(path.name[: -len(TRAIN_ID_SUFFIX)], []).append(LabelSource(path, CITYSCAPES_TRAIN_IDS))
    images = []
    for path in files_with_suffix(image_dir, IMAGE_SUFFIX, depth=2):
        name = path.name[: -len(IMAGE_SUFFIX)]
        images.append((name, path, name))
    gt_rel = relative(gt_dir, dataset.root) if gt_dir is not None else ""
    image_rel = relative(image_dir, dataset.root)
    return pair_files(
        images, labels,
        expected_label=lambda p: f"{gt_rel}/{p.parent.name}/{p.name[: -len(IMAGE_SUFFIX)]}{TRAIN_ID_SUFFIX}",
        expected_image=lambda key: f"{image_rel}/{key.split('_frame_')[0]}/{key}{IMAGE_SUFFIX}",
        make_sample=lambda key, image, sources: SampleFiles(key, image, sources, meta=dict(meta)),
    )


@register_dataset("acdc")
class ACDC(SegDataset):
    splits = ("train", "val", "test")
    labelled_splits = ("train", "val")
    layout = ("an ACDC folder with rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png and "
              "gt/<condition>/<split>/<seq>/*_gt_labelTrainIds.png (conditions fog, night, rain, snow)")

    def __init__(self, root: str | Path, split: str = "train", *, conditions: str | Sequence[str] = "all", **common):
        self.conditions_option = conditions
        super().__init__(root, split, **common)

    def scan(self) -> SplitScan:
        present = [c for c in ACDC_CONDITIONS if (self.root / "rgb_anon" / c / self.split).is_dir()]
        if not present:
            self.require_split_dir(self.root / "rgb_anon" / ACDC_CONDITIONS[0] / self.split)
        self.conditions = parse_choice(self.conditions_option, ACDC_CONDITIONS, "condition", self.name, present)
        samples: list[SampleFiles] = []
        unpaired: list[Unpaired] = []
        for condition in self.conditions:
            image_dir = self.require_split_dir(self.root / "rgb_anon" / condition / self.split)
            gt_dir = self.root / "gt" / condition / self.split if self.split in self.labelled_splits else None
            found, missing = scan_anon_folder(self, image_dir, gt_dir, {"condition": condition})
            samples += found
            unpaired += missing
        return SplitScan(samples, unpaired, self.root / "rgb_anon")
