"""GTA5 (Richter et al., "Playing for Data", 2016): 24,966 rendered frames, 1914×1052.

Layout under ROOT (the official ``01_images.zip`` … and ``01_labels.zip`` … unpacked together)::

    images/00001.png              RGB
    labels/00001.png              palette PNG whose indices are Cityscapes label ids
    labels/00001_labelTrainIds.png    written by `udaseg data prepare gta5 ROOT`

UDA uses every frame as the source training set, so the only split is ``train``. About 25
frames of the release are reported missing or of mismatched size (IAST issue #2):
``udaseg data check gta5 ROOT`` names them; ``unpaired="skip"`` leaves unpaired ones out.
"""

from __future__ import annotations

from udaseg.data.base import (
    CITYSCAPES_LABEL_IDS,
    LabelSource,
    SegDataset,
    SplitScan,
    files_with_suffix,
    pair_files,
)
from udaseg.data.registry import register_dataset


@register_dataset("gta5")
class GTA5(SegDataset):
    splits = ("train",)
    labelled_splits = ("train",)
    layout = "a GTA5 folder with images/NNNNN.png and labels/NNNNN.png (palette PNGs of Cityscapes label ids)"
    writes_train_ids = True

    def scan(self) -> SplitScan:
        images_dir = self.require_split_dir(self.root / "images")
        labels_dir = self.require_dir(self.root / "labels", "GTA5 label PNGs beside images/")
        labels = self.flat_labels(labels_dir, lambda path: LabelSource(path, CITYSCAPES_LABEL_IDS))
        images = [(p.stem, p, p.stem) for p in files_with_suffix(images_dir, ".png")]
        samples, unpaired = pair_files(
            images, labels,
            expected_label=lambda p: f"labels/{p.stem}.png",
            expected_image=lambda key: f"images/{key}.png",
        )
        return SplitScan(samples, unpaired, images_dir)
