"""``udaseg predict``: segment image files, folders (recursively) and videos with a trained run.

Each input image gives one PNG per requested format (:mod:`udaseg.engine.export`: ``color``,
``overlay``, ``trainid``, ``labelid``) named ``<stem><suffix>.png``; images found in a folder keep
their path below it, so a Cityscapes ``leftImg8bit/test`` folder comes out in the layout the
server expects. Video frames are named ``<video stem>_<frame number>``. A file that is not a
readable image or video is skipped with a warning; the command then exits non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from udaseg.engine.export import export_prediction
from udaseg.errors import DataError, UdasegError
from udaseg.models.inference import infer_logits, inference_settings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class Frame:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    out_dir: Path  # relative to the output folder
    stem: str


def _read_image(path: Path) -> np.ndarray:
    """The data layer's reader, so that predict sees what training and evaluation see (16-bit
    images scaled to 8 bits, grey → RGB: :func:`udaseg.data.base.read_rgb`)."""
    from udaseg.data.base import read_rgb

    return read_rgb(path)


def _video_frames(path: Path, stride: int) -> Iterator[Frame]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError("OpenCV cannot open it as a video")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % stride == 0:
                yield Frame(np.ascontiguousarray(bgr[:, :, ::-1]), Path(path.stem), f"{path.stem}_{index:06d}")
            index += 1
        if index == 0:
            raise OSError("the video has no readable frame")
    finally:
        capture.release()


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """``(file, output sub-folder)`` for every input; folders are searched recursively for
    images and videos, keeping the path below the folder."""
    found: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not files:
                print(f"udaseg predict: warning: no image or video under {item}", file=sys.stderr)
            found += [(p, p.parent.relative_to(item)) for p in files]
        elif item.is_file():
            found.append((item, Path()))
        else:
            raise UdasegError(f"input not found: {item}")
    return found


def _output_stem(path: Path) -> str:
    return path.stem.removesuffix("_leftImg8bit").removesuffix("_rgb_anon")


def check_unique_outputs(inputs: list[tuple[Path, Path]]) -> None:
    """Two inputs whose predictions would land in the same output file (``a/x.png`` and
    ``b/x.png`` given as files, ``x.png`` and ``x.jpg`` in one folder, ``x_leftImg8bit.png`` and
    ``x.png``) are an error before anything is written — never a silent overwrite."""
    seen: dict[Path, Path] = {}
    for path, sub in inputs:
        key = sub / _output_stem(path)
        if key in seen:
            raise UdasegError(f"{seen[key]} and {path} would both be written as {key}_*.png: predict them into "
                              "separate --out folders, or rename one")
        seen[key] = path


def frames_of(path: Path, sub: Path, video_stride: int) -> Iterator[Frame]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        for frame in _video_frames(path, video_stride):
            yield Frame(frame.image, sub / frame.out_dir, frame.stem)
    else:
        yield Frame(_read_image(path), sub, _output_stem(path))


def run_predict(args) -> int:
    from udaseg.data.catalog import get_label_space
    from udaseg.engine.checkpoint import load_network
    from udaseg.engine.trainer import pick_device

    inputs = collect_inputs(args.inputs)
    check_unique_outputs(inputs)  # before any work
    device = pick_device(args.device)
    model, cfg = load_network(args.source, args.network, device)
    print(f"checkpoint: {model.checkpoint_path} ({args.network})")
    label_space = get_label_space(cfg.benchmark.label_space)
    # the run's first validation set's protocol (as eval scores it), the command line's flags over it
    settings = inference_settings(cfg.benchmark.val[0] if cfg.benchmark.val else None, mode=args.mode,
                                  window=args.window, stride=args.stride, test_scale=args.test_scale,
                                  flip=args.flip, scales=args.scales)
    formats = args.format or ["color"]
    out = Path(args.out)

    from tqdm import tqdm

    failed, written = [], 0
    for path, sub in tqdm(inputs, desc="predict", unit="file", disable=args.quiet):
        try:
            for frame in frames_of(path, sub, max(1, args.video_stride)):
                img = torch.from_numpy(frame.image).permute(2, 0, 1)[None]
                with torch.no_grad():
                    logits = infer_logits(model, img, **settings)
                pred = logits.argmax(dim=1)[0].cpu().numpy()
                for fmt in formats:
                    export_prediction(pred, out / frame.out_dir, frame.stem, fmt, label_space, image=frame.image)
                    written += 1
        except (OSError, SyntaxError, ValueError, DataError) as err:
            # read_rgb raises UnreadableFileError (a DataError) for files that are not images; OpenCV OSError.
            failed.append(path)
            print(f"udaseg predict: warning: skipped {path}: {err}", file=sys.stderr)
    print(f"wrote {written} file(s) to {out}" + (f"; {len(failed)} input(s) failed" if failed else ""))
    return 1 if failed else 0
