"""Cityscapes (Cordts et al., CVPR 2016) and its synthetic-weather variants Foggy Cityscapes
(Sakaridis et al., IJCV 2018) and Rain Cityscapes (Hu et al., CVPR 2019).

Layout under ROOT (official packages ``leftImg8bit_trainvaltest.zip``, ``gtFine_trainvaltest.zip``,
``leftImg8bit_trainvaltest_foggy.zip``, ``leftImg8bit_trainval_rain.zip`` unpacked together)::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (prepare)
    leftImg8bit_foggy/{train,val,test}/<city>/<stem>_leftImg8bit_foggy_beta_{0.005,0.01,0.02}.png
    leftImg8bit_rain/{train,val}/<city>/<stem>_leftImg8bit_rain_alpha_<a>_beta_<b>_dropsize_<d>_pattern_<p>.png

``cityscapes``        one sample per frame; ``name`` = ``<city>_<seq>_<frame>``.
``cityscapes_foggy``  one sample per fog image; option ``beta`` = one of 0.005/0.01/0.02, several,
                      or ``"all"`` (default); labels from gtFine by stem; ``name`` =
                      ``<stem>_foggy_beta_<β>`` (starts with the stem, as the Cityscapes evaluator
                      matches predictions).
``cityscapes_rain``   one sample per rain image (36 per frame); labels by cutting the name at
                      ``_leftImg8bit``; ``name`` = ``<stem>_rain_alpha_…_pattern_<p>``.

The ``test`` split is image-only: the released gtFine/test files are placeholders. Only a subset
of frames has rain images, so gtFine labels without a foggy/rain image are not an error for those
two. ``udaseg data prepare`` converts every gtFine ``_labelIds`` of train and val (whichever of the
three names is given, so they never disagree about the files) and counts statistics on train.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from udaseg.data.base import (
    CITYSCAPES_LABEL_IDS,
    DataError,
    LabelSource,
    PrepareJob,
    SampleFiles,
    SegDataset,
    SplitScan,
    files_with_suffix,
    pair_files,
)
from udaseg.data.registry import register_dataset

IMAGE_SUFFIX = "_leftImg8bit.png"
RAW_LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
FOG_BETAS = ("0.005", "0.01", "0.02")
_FOGGY_NAME = re.compile(r"^(?P<stem>.+)_leftImg8bit_foggy_beta_(?P<beta>[0-9.]+)\.png$")
_RAIN_NAME = re.compile(r"^(?P<stem>.+)_leftImg8bit_rain_(?P<params>alpha_.+)\.png$")


class _CityscapesFamily(SegDataset):
    """Shared pieces: gtFine label lookup and the ``<split>/<city>/`` image folders."""

    splits: tuple[str, ...] = ("train", "val", "test")
    labelled_splits: tuple[str, ...] = ("train", "val")
    writes_train_ids = True
    stats_splits = ("train",)
    image_folder = "leftImg8bit"
    labels_need_images = True

    def gtfine_labels(self, split: str) -> dict[str, list[LabelSource]]:
        """``<city>_<seq>_<frame>`` → its gtFine label files (raw label ids first)."""
        folder = self.require_dir(self.root / "gtFine" / split,
                                  f"the Cityscapes gtFine/{split}/<city>/*{RAW_LABEL_SUFFIX} labels")
        prepared = self.prepared_encoding()
        labels: dict[str, list[LabelSource]] = {}
        for path in files_with_suffix(folder, RAW_LABEL_SUFFIX, depth=2):
            labels.setdefault(path.name[: -len(RAW_LABEL_SUFFIX)], []).insert(
                0, LabelSource(path, CITYSCAPES_LABEL_IDS))
        if prepared is not None:
            for path in files_with_suffix(folder, TRAIN_LABEL_SUFFIX, depth=2):
                labels.setdefault(path.name[: -len(TRAIN_LABEL_SUFFIX)], []).append(
                    LabelSource(path, prepared, prepared=True))
        return labels

    def image_entries(self, folder: Path) -> Iterable[tuple[str, Path, str, dict]]:
        """(name, path, label key = frame stem, meta) of every image of the split folder."""
        raise NotImplementedError

    def scan(self) -> SplitScan:
        folder = self.require_split_dir(self.root / self.image_folder / self.split)
        labels = self.gtfine_labels(self.split) if self.split in self.labelled_splits else None
        metas: dict[Path, tuple[str, dict]] = {}
        stems: dict[Path, str] = {}
        images = []
        for name, path, stem, meta in self.image_entries(folder):
            metas[path] = (name, {"city": stem.split("_")[0], **meta})
            stems[path] = stem
            images.append((name, path, stem))
        samples, unpaired = pair_files(
            images, labels,
            expected_label=lambda p: f"gtFine/{self.split}/{p.parent.name}/{stems[p]}{RAW_LABEL_SUFFIX}",
            expected_image=lambda key: self.expected_image(key),
            labels_need_images=self.labels_need_images,
            make_sample=lambda key, image, sources: SampleFiles(metas[image][0], image, sources, meta=metas[image][1]),
        )
        return SplitScan(samples, unpaired, folder)

    def prepare_jobs(self) -> list[PrepareJob]:
        """Every gtFine label of the split, whether or not this variant has an image for it, so
        that preparing cityscapes, cityscapes_foggy and cityscapes_rain writes the same files."""
        count = self.split in self.stats_splits
        labels = self.gtfine_labels(self.split)
        return [self.prepare_job(labels[key], count) for key in sorted(labels)]

    def expected_image(self, stem: str) -> str:
        return f"{self.image_folder}/{self.split}/{stem.split('_')[0]}/{stem}{IMAGE_SUFFIX}"


@register_dataset("cityscapes")
class Cityscapes(_CityscapesFamily):
    layout = (f"a Cityscapes folder with leftImg8bit/<split>/<city>/*{IMAGE_SUFFIX} and "
              f"gtFine/<split>/<city>/*{RAW_LABEL_SUFFIX}")

    def image_entries(self, folder: Path):
        for path in files_with_suffix(folder, IMAGE_SUFFIX, depth=2):
            stem = path.name[: -len(IMAGE_SUFFIX)]
            yield stem, path, stem, {}


@register_dataset("cityscapes_foggy")
class FoggyCityscapes(_CityscapesFamily):
    layout = ("a Cityscapes folder with leftImg8bit_foggy/<split>/<city>/*_leftImg8bit_foggy_beta_<β>.png "
              f"and gtFine/<split>/<city>/*{RAW_LABEL_SUFFIX}")
    image_folder = "leftImg8bit_foggy"
    labels_need_images = False

    def __init__(self, root: str | Path, split: str = "train", *, beta: float | str | Sequence = "all", **common):
        self.betas = _parse_betas(beta)
        super().__init__(root, split, **common)

    def image_entries(self, folder: Path):
        for path in files_with_suffix(folder, ".png", depth=2):
            match = _FOGGY_NAME.match(path.name)
            if match is None or match["beta"] not in self.betas:
                continue
            stem = match["stem"]
            yield f"{stem}_foggy_beta_{match['beta']}", path, stem, {"beta": float(match["beta"])}


@register_dataset("cityscapes_rain")
class RainCityscapes(_CityscapesFamily):
    splits = ("train", "val")
    layout = ("a Cityscapes folder with leftImg8bit_rain/<split>/<city>/"
              "*_leftImg8bit_rain_alpha_<a>_beta_<b>_dropsize_<d>_pattern_<p>.png "
              f"and gtFine/<split>/<city>/*{RAW_LABEL_SUFFIX}")
    image_folder = "leftImg8bit_rain"
    labels_need_images = False

    def image_entries(self, folder: Path):
        for path in files_with_suffix(folder, ".png", depth=2):
            match = _RAIN_NAME.match(path.name)
            if match is None:
                continue
            stem = match["stem"]
            yield f"{stem}_rain_{match['params']}", path, stem, {"rain": match["params"]}


def _parse_betas(beta: float | str | Sequence) -> tuple[str, ...]:
    """Fog densities as the strings used in the file names."""
    values = beta.split(",") if isinstance(beta, str) else ([beta] if isinstance(beta, (int, float)) else list(beta))
    if [str(v).strip() for v in values] == ["all"]:
        return FOG_BETAS
    chosen = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        match = [b for b in FOG_BETAS if number is not None and abs(float(b) - number) < 1e-9]
        if not match:
            raise DataError(f"cityscapes_foggy: unknown beta {value!r}; expected one or more of "
                            f"{', '.join(FOG_BETAS)} or 'all'")
        chosen.append(match[0])
    return tuple(dict.fromkeys(chosen))
