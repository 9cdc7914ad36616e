"""Dark Zurich (Sakaridis et al., ICCV 2019): 1920×1080 frames of Zurich by day, twilight and
night; the UDA target is ``train`` at night (2,416 images), evaluated on ``val`` (50 labelled
night images) or on the test server (151 images).

Layout under ROOT (official ``Dark_Zurich_train_anon``, ``Dark_Zurich_val_anon`` and
``Dark_Zurich_test_anon`` packages unpacked together)::

    rgb_anon/train/{day,twilight,night}/<seq>/<seq>_frame_<n>_rgb_anon.png
    rgb_anon/val/night/<seq>/<seq>_frame_<n>_rgb_anon.png
    gt/val/night/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png   (+ _gt_labelIds.png)
    rgb_anon/test/night/<seq>/<seq>_frame_<n>_rgb_anon.png

Option ``conditions`` (times of day): one, several or ``"all"``; default ``"night"``. Only ``val``
is labelled; ``train`` and ``test`` are image-only. ``udaseg data prepare darkzurich ROOT``
writes class statistics of the labelled ``val`` split (there are no labelled training images).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from udaseg.data.acdc import scan_anon_folder
from udaseg.data.base import SampleFiles, SegDataset, SplitScan, Unpaired, parse_choice
from udaseg.data.registry import register_dataset

TIMES_OF_DAY = ("day", "twilight", "night")


@register_dataset("darkzurich")
class DarkZurich(SegDataset):
    splits = ("train", "val", "test")
    labelled_splits = ("val",)
    stats_splits = ("val",)
    layout = ("a Dark Zurich folder with rgb_anon/<split>/<day|twilight|night>/<seq>/*_rgb_anon.png and "
              "gt/val/night/<seq>/*_gt_labelTrainIds.png")

    def __init__(self, root: str | Path, split: str = "train", *, conditions: str | Sequence[str] = "night", **common):
        self.conditions_option = conditions
        super().__init__(root, split, **common)

    @classmethod
    def check_options(cls, root: Path) -> dict:
        return {"conditions": "all"}

    def scan(self) -> SplitScan:
        split_dir = self.require_split_dir(self.root / "rgb_anon" / self.split)
        present = [c for c in TIMES_OF_DAY if (split_dir / c).is_dir()]
        self.conditions = parse_choice(self.conditions_option, TIMES_OF_DAY, "condition", self.name, present)
        samples: list[SampleFiles] = []
        unpaired: list[Unpaired] = []
        for condition in self.conditions:
            image_dir = self.require_split_dir(split_dir / condition)
            gt_dir = self.root / "gt" / self.split / condition if self.split in self.labelled_splits else None
            found, missing = scan_anon_folder(self, image_dir, gt_dir, {"condition": condition})
            samples += found
            unpaired += missing
        return SplitScan(samples, unpaired, split_dir)
