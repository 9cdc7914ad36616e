"""Writing frames in the real datasets' on-disk formats, plus the sample pictures and README.

Formats (read back the way the reference converters read the real data):

* GTA5: RGB PNG; label = palette-mode PNG whose pixel *indices* are Cityscapes label ids, with the
  Cityscapes colour palette attached (as the released GTA5 labels).
* SYNTHIA-RAND-CITYSCAPES: RGB PNG; ``GT/LABELS`` = 16-bit 3-channel PNG with the SYNTHIA class id
  in R and the instance id in G, written by OpenCV in BGR order so that
  ``cv2.imread(p, cv2.IMREAD_UNCHANGED)[..., -1]`` is the class id (DAFormer's converter);
  ``Depth/Depth`` = 16-bit single-channel z-depth in centimetres, clipped at 65535 (sky).
* Cityscapes: ``*_leftImg8bit.png`` RGB, ``*_gtFine_labelIds.png`` 8-bit label ids; Foggy and Rain
  Cityscapes variants next to it in ``leftImg8bit_foggy`` / ``leftImg8bit_rain``.
* ACDC: ``*_rgb_anon.png`` RGB, ``*_gt_labelIds.png`` and ``*_gt_labelTrainIds.png`` (8-bit).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from udaseg.data import catalog
from udaseg.data.base import read_rgb, read_synthia_label
from udaseg.data.minicity import weather
from udaseg.data.minicity.frame import Frame, make_frame
from udaseg.data.minicity.plan import FrameJob

PNG_LEVEL = 1  # zlib level: level 1 is ~5x faster than the default 6 and within 10 % of its size

LABEL_ID_PALETTE = [(0, 0, 0)] * 256
for _label in catalog.CITYSCAPES_LABELS:
    if _label.id >= 0:
        LABEL_ID_PALETTE[_label.id] = _label.color
_FLAT_PALETTE = [c for rgb in LABEL_ID_PALETTE for c in rgb]
LABEL_ID_TO_TRAIN_ID_LUT = catalog.raw_to_space_lut("cityscapes_id", "cityscapes19")
SYNTHIA_ID_TO_TRAIN_ID_LUT = catalog.raw_to_space_lut("synthia_id", "cityscapes19")


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    _write(path, np.ascontiguousarray(rgb[..., ::-1]))


def write_palette_label(path: Path, label_ids: np.ndarray) -> None:
    image = Image.frombytes("P", (label_ids.shape[1], label_ids.shape[0]), np.ascontiguousarray(label_ids).tobytes())
    image.putpalette(_FLAT_PALETTE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, compress_level=PNG_LEVEL)


def write_synthia_label(path: Path, synthia_ids: np.ndarray, instance_ids: np.ndarray) -> None:
    bgr = np.zeros(synthia_ids.shape + (3,), dtype=np.uint16)
    bgr[..., 2] = synthia_ids  # R: class id (cv2 reads BGR, so [..., -1])
    bgr[..., 1] = np.clip(instance_ids, 0, 65535)  # G: instance id
    _write(path, bgr)


def depth_centimetres(depth_m: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        cm = np.round(np.nan_to_num(depth_m * 100.0, nan=65535.0, posinf=65535.0))
    return np.clip(cm, 0, 65535).astype(np.uint16)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL]):
        raise OSError(f"could not write {path}")


# ---------------------------------------------------------------------------------------------
def run_job(args: tuple[FrameJob, int, str]) -> dict:
    """Render one frame and write all of its files under ``root``. Returns statistics: bytes written
    and the number of pixels per Cityscapes label id. Top-level so that worker processes can import
    it (multiprocessing with ``spawn``)."""
    job, seed, root = args
    cv2.setNumThreads(1)  # parallelism is across processes
    rng = np.random.default_rng(job.key(seed))
    frame = make_frame(job.domain, rng, job.size, style=job.style, condition=job.condition)
    root_path = Path(root)
    paths = {kind: root_path / rel for kind, rel in job.files.items()}
    write_rgb(paths["image"], frame.image)
    if job.domain == "gta":
        write_palette_label(paths["label"], frame.label_ids)
    elif job.domain == "synthia":
        write_synthia_label(paths["label"], frame.synthia_ids(), frame.instance_ids())
        _write(paths["depth"], depth_centimetres(frame.render.depth))
    elif "label" in paths:
        _write(paths["label"], frame.label_ids)
        if "train_label" in paths:
            _write(paths["train_label"], LABEL_ID_TO_TRAIN_ID_LUT[frame.label_ids])
    _write_variants(job, frame, seed, root_path)
    written = sum(p.stat().st_size for p in paths.values())
    written += sum((root_path / p).stat().st_size for p in list(job.foggy.values()) + list(job.rain.values()))
    histogram = np.bincount(frame.label_ids.ravel(), minlength=256)
    if job.domain == "synthia":  # count what SYNTHIA actually annotates, in Cityscapes ids
        train = SYNTHIA_ID_TO_TRAIN_ID_LUT[frame.synthia_ids()]
        ids = np.array([catalog.TRAIN_ID_TO_LABEL_ID.get(t, 0) for t in range(256)], dtype=np.uint8)[train]
        histogram = np.bincount(ids.ravel(), minlength=256)
    return {"domain": job.domain, "bytes": written, "histogram": histogram}


def _write_variants(job: FrameJob, frame: Frame, seed: int, root: Path) -> None:
    """Foggy Cityscapes (three β) and Rain Cityscapes variants of a clear Cityscapes frame, computed
    from the final image and the exact distance, as the real ones were from the real images."""
    if not job.foggy and not job.rain:
        return
    clear = frame.image.astype(np.float32) / 255
    t: np.ndarray | None = None
    t_beta = 0.0
    for beta, rel in sorted(job.foggy.items()):
        # exp(−2βℓ) = exp(−βℓ)²: the Foggy Cityscapes betas double, so square instead of exp.
        t = t * t if t is not None and beta == 2 * t_beta else weather.transmittance(frame.distance, beta)
        t_beta = beta
        write_rgb(root / rel, _to_uint8(weather.fog(clear, frame.distance, beta, frame.airlight, t=t)))
    for variant, rel in job.rain.items():
        rainy = weather.rain(clear, frame.distance, variant.alpha, variant.beta, variant.dropsize, variant.pattern,
                             seed, frame.airlight * 0.85)
        write_rgb(root / rel, _to_uint8(rainy))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
def read_label_ids(domain: str, path: Path) -> np.ndarray:
    """Label ids of a written label file, as Cityscapes label ids (SYNTHIA via its train ids)."""
    if domain == "synthia":
        synthia = read_synthia_label(path).astype(np.uint8)
        train = SYNTHIA_ID_TO_TRAIN_ID_LUT[synthia]
        table = np.zeros(256, dtype=np.uint8)
        for t, label_id in catalog.TRAIN_ID_TO_LABEL_ID.items():
            table[t] = label_id
        return table[train]
    return np.array(Image.open(path))


def write_samples(root: Path, jobs: list[FrameJob], rows: int = 3) -> dict[str, Path]:
    """``samples/<domain>.png``: a few images beside their colourised labels (ACDC: one row per
    condition; Cityscapes: plus a row with a foggy (β = 0.02) and a rainy variant)."""
    out = {}
    for domain in ("gta", "synthia", "cityscapes", "acdc"):
        chosen: list[FrameJob] = []
        if domain == "acdc":
            for condition in ("fog", "night", "rain", "snow"):
                labelled = [j for j in jobs if j.domain == domain and j.condition == condition and "label" in j.files]
                chosen += labelled[:1]
        else:
            chosen = [j for j in jobs if j.domain == domain and (j.split in ("all", "val"))][:rows]
        if not chosen:
            continue
        tiles = []
        for job in chosen:
            image = read_rgb(root / job.files["image"])
            label = catalog.colorize(read_label_ids(domain, root / job.files["label"]), LABEL_ID_PALETTE)
            tiles.append(np.concatenate([image, label], axis=1))
        if domain == "cityscapes":
            rainy = [j for j in jobs if j.domain == domain and j.rain]
            if rainy:
                job = rainy[0]
                fog_img = read_rgb(root / job.foggy[max(job.foggy)])
                rain_img = read_rgb(root / next(iter(job.rain.values())))
                tiles.append(np.concatenate([fog_img, rain_img], axis=1))
        path = root / "samples" / f"{domain}.png"
        write_rgb(path, np.concatenate(tiles, axis=0))
        out[domain] = path
    return out
