"""SYNTHIA-RAND-CITYSCAPES (Ros et al., CVPR 2016): 9,400 rendered frames, 1280×760, with depth.

Layout under ROOT (the ``SYNTHIA-RAND-CITYSCAPES`` package, i.e. the ``RAND_CITYSCAPES`` folder)::

    RGB/0000000.png               RGB
    GT/LABELS/0000000.png         16-bit 3-channel PNG: SYNTHIA class id in R, instance id in G
    GT/LABELS/0000000_labelTrainIds.png   written by `udaseg data prepare synthia ROOT`
    Depth/Depth/0000000.png       16-bit depth in centimetres

The only split is ``train``. Options: ``depth=True`` adds ``"depth"`` (float32 metres; an image
without a depth file is then a pairing error). In ``cityscapes19`` the model keeps 19 outputs
(DAFormer line; terrain, truck and train never occur); ``synthia16`` is the compact 16-way space
(DiGA, DAF+IDA); ``seven`` reads the raw ids, because lane marking is *flat* there but ignored
in the 19/16-class tables.
"""

from __future__ import annotations

from pathlib import Path

from udaseg.data.base import (
    SYNTHIA_CLASS_IDS,
    LabelSource,
    SegDataset,
    SplitScan,
    Unpaired,
    files_with_suffix,
    pair_files,
    read_synthia_label,
)
from udaseg.data.registry import register_dataset


@register_dataset("synthia")
class Synthia(SegDataset):
    splits = ("train",)
    labelled_splits = ("train",)
    layout = ("a SYNTHIA-RAND-CITYSCAPES folder with RGB/NNNNNNN.png, GT/LABELS/NNNNNNN.png (16-bit, "
              "class id in R) and Depth/Depth/NNNNNNN.png")
    writes_train_ids = True

    def __init__(self, root: str | Path, split: str = "train", *, depth: bool = False, **common):
        self.with_depth = bool(depth)
        super().__init__(root, split, **common)

    @classmethod
    def check_options(cls, root: Path) -> dict:
        return {"depth": (Path(root) / "Depth" / "Depth").is_dir()}

    def scan(self) -> SplitScan:
        images_dir = self.require_split_dir(self.root / "RGB")
        labels_dir = self.require_dir(self.root / "GT" / "LABELS", "SYNTHIA label PNGs (GT/LABELS beside RGB/)")
        depth_dir = (self.require_dir(self.root / "Depth" / "Depth", "SYNTHIA depth PNGs (Depth/Depth beside RGB/)")
                     if self.with_depth else None)
        labels = self.flat_labels(
            labels_dir, lambda path: LabelSource(path, SYNTHIA_CLASS_IDS, reader=read_synthia_label))
        images = [(p.stem, p, p.stem) for p in files_with_suffix(images_dir, ".png")]
        samples, unpaired = pair_files(
            images, labels,
            expected_label=lambda p: f"GT/LABELS/{p.stem}.png",
            expected_image=lambda key: f"RGB/{key}.png",
        )
        if depth_dir is not None:
            kept = []
            for sample in samples:
                depth = depth_dir / f"{sample.name}.png"
                if depth.is_file():
                    sample.depth = depth
                    kept.append(sample)
                else:
                    unpaired.append(Unpaired(sample.image, f"image without depth (expected Depth/Depth/{depth.name})"))
            samples = kept
        return SplitScan(samples, unpaired, images_dir)
