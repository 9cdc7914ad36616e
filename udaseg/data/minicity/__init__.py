"""MiniCity: the embedded, procedurally generated street-scene benchmark (docs/contracts.md §5).

MiniCity stands in for GTA5, SYNTHIA-RAND-CITYSCAPES, Cityscapes (with Foggy and Rain Cityscapes)
and ACDC on machines that cannot download them. It is written in the exact on-disk formats of
those datasets, so the real loaders, converters and checks run on it unchanged, and it has a real,
class-conditional domain shift (see :mod:`.appearance`), so that adaptation methods have something
to adapt to.

Pipeline of one frame (:mod:`.frame`):

    domains.py      camera and layout statistics per domain
    layout.py       samples a metric 3-D street from those statistics …
    objects.py      … with people, vehicles, trees, poles … built from boxes and ellipsoids
    scene.py        what a scene is: camera, ground layout, primitive table with labels
    render.py       vectorised ray casting with a z-buffer → primitive, depth and face per pixel
    appearance.py   the domain's look: palette, textures, light and shadows, camera effects
    weather.py      fog, rain, snow and night from the exact depth
    frame.py        the stages in order, plus the Cityscapes camera rig (bonnet, border)
    writer.py       the real datasets' file formats; samples
    plan.py         which frames and files a scale has, and each frame's generator key
    readme.py       the README.md written next to the data

:func:`generate` renders every frame in parallel worker processes (each frame has its own
``numpy.random.Generator`` keyed by seed, domain, condition, split and index, so the files are
byte-identical for a seed whatever the number of workers), into a temporary sibling folder that is
renamed to the output folder only when complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from udaseg.errors import DataError

GENERATOR_VERSION = "1.1"
MANIFEST = "minicity.json"

__all__ = ["GENERATOR_VERSION", "MiniCitySummary", "generate", "read_manifest"]


@dataclass
class MiniCitySummary:
    """What :func:`generate` produced (or found already complete)."""

    root: Path
    seed: int
    scale: str
    size: tuple[int, int]  # Cityscapes-domain (H, W)
    sizes: dict[str, tuple[int, int]]  # per domain
    counts: dict[str, dict[str, int]]  # per domain: images per split (and foggy/rain variants)
    bytes: int  # size on disk of the images and labels
    version: str = GENERATOR_VERSION
    seconds: float | None = None  # generation time (None when an existing MiniCity was reused)
    reused: bool = False
    samples: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        h, w = self.size
        head = (f"MiniCity {self.version} at {self.root} (seed {self.seed}, scale {self.scale}, "
                f"Cityscapes size {h}x{w})")
        if self.reused:
            head += "\n  already complete with these parameters: nothing regenerated"
        else:
            head += f"\n  generated in {self.seconds:.1f} s, {self.bytes / 2 ** 20:.1f} MiB"
        lines = [head]
        for domain, counts in self.counts.items():
            dh, dw = self.sizes[domain]
            parts = ", ".join(f"{k} {v}" for k, v in counts.items())
            lines.append(f"  {domain:<11}{dh}x{dw}  {parts}")
        return "\n".join(lines)


def read_manifest(root: Path) -> dict | None:
    """The ``minicity.json`` of a MiniCity folder, or None if there is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable MiniCity manifest ({err})") from None


def generate(out: Path, size: tuple[int, int] | None = None, seed: int = 0, scale: str = "default",
             progress: bool = True, workers: int | None = None) -> MiniCitySummary:
    """Generate MiniCity into ``out``.

    ``size`` is the Cityscapes-domain (H, W) (default 256×512); the other domains keep their real
    dataset's aspect ratio at the same width. ``scale`` is ``small`` (tests), ``default`` (the CPU
    benchmark) or ``large`` (GPU machines). ``workers`` (processes) defaults to all CPU cores, or
    one for tiny sets; the files do not depend on it.

    If ``out`` already holds a complete MiniCity generated with the same parameters, it is left
    as it is and its summary returned. Any other non-empty ``out`` is refused with a DataError.
    """
    from udaseg.data.minicity.plan import DEFAULT_SIZE, SCALES, file_counts, plan, sizes_for

    out = Path(out)
    if scale not in SCALES:
        raise DataError(f"unknown MiniCity scale {scale!r}; expected one of {', '.join(SCALES)}")
    size = _check_size(DEFAULT_SIZE if size is None else size)
    seed = int(seed)
    if seed < 0:
        raise DataError(f"MiniCity seed must be a non-negative integer, got {seed}")
    parameters = {"version": GENERATOR_VERSION, "seed": seed, "scale": scale, "size": list(size)}

    existing = _existing(out, parameters)
    if existing is not None:
        return existing

    jobs = plan(scale, size)
    sizes = sizes_for(size)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    try:
        histograms, written = _run(jobs, seed, tmp, progress, workers)
        from udaseg.data.minicity.writer import write_samples

        write_samples(tmp, jobs)
        counts = file_counts(jobs)
        manifest = _manifest(parameters, sizes, counts, histograms, written)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        from udaseg.data.minicity.readme import readme_text

        (tmp / "README.md").write_text(readme_text(manifest))
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MiniCitySummary(out, seed, scale, size, sizes, counts, written, seconds=time.perf_counter() - start,
                           samples={d: out / "samples" / f"{d}.png" for d in sizes})


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise DataError(f"MiniCity size must be (height, width), got {size!r}") from None
    if h < 32 or w < 32:
        raise DataError(f"MiniCity size {h}x{w} is too small: height and width must be at least 32")
    if h > 4096 or w > 8192:
        raise DataError(f"MiniCity size {h}x{w} is too large (at most 4096x8192)")
    return h, w


def _existing(out: Path, parameters: dict) -> MiniCitySummary | None:
    """The summary of a complete MiniCity with these parameters in ``out``; None if ``out`` is
    missing or empty; a DataError for anything else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a folder; MiniCity needs a new or empty output folder")
    if not any(out.iterdir()):
        return None
    manifest = read_manifest(out)
    if manifest is None:
        raise DataError(f"{out} is not empty and holds no MiniCity ({MANIFEST} missing); "
                        "choose a new or empty output folder")
    found = {k: manifest.get(k) for k in parameters}
    if found != parameters or not manifest.get("complete"):
        described = ", ".join(f"{k}={v}" for k, v in found.items())
        stale = ""
        if found["version"] != parameters["version"]:  # never reused: another version's data differ
            stale = (f" It was made by MiniCity generator {found['version']}, whose scenes differ from this "
                     f"generator's ({GENERATOR_VERSION}, see docs/minicity_generator.md): regenerate it.")
        raise DataError(f"{out} holds a MiniCity generated with other parameters ({described}); "
                        f"requested {', '.join(f'{k}={v}' for k, v in parameters.items())}.{stale} "
                        "Remove it or choose another output folder")
    sizes = {d: tuple(s) for d, s in manifest["sizes"].items()}
    return MiniCitySummary(out, manifest["seed"], manifest["scale"], tuple(manifest["size"]), sizes,
                           manifest["counts"], manifest["bytes"], reused=True,
                           samples={d: out / "samples" / f"{d}.png" for d in sizes})


def _run(jobs, seed: int, root: Path, progress: bool, workers: int | None):
    from tqdm import tqdm

    from udaseg.data.minicity.writer import run_job

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(workers, len(jobs) // 64 or 1)  # tiny sets: process start-up would dominate
    workers = max(1, min(int(workers), len(jobs)))
    histograms: dict[str, np.ndarray] = {}
    written = 0
    args = ((job, seed, str(root)) for job in jobs)
    bar = tqdm(total=len(jobs), unit="frame", desc="MiniCity", disable=not progress, dynamic_ncols=True)
    try:
        results: Iterator[dict]
        if workers == 1:
            results = map(run_job, args)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers)
            results = pool.imap_unordered(run_job, args, chunksize=4)
        for result in results:
            domain = result["domain"]
            histograms[domain] = histograms.get(domain, 0) + result["histogram"]
            written += result["bytes"]
            bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        if workers > 1 and pool is not None:
            pool.terminate()
        raise
    finally:
        bar.close()
    return histograms, written


def _manifest(parameters: dict, sizes, counts, histograms, written: int) -> dict:
    """minicity.json: parameters, sizes, counts, cameras and class frequencies. Deterministic (no
    timings, no paths), so that two generations with one seed are identical file for file."""
    from udaseg.data.catalog import CITYSCAPES_LABELS
    from udaseg.data.minicity.domains import DOMAINS

    names = {label.id: label.name for label in CITYSCAPES_LABELS if label.id >= 0}
    cameras = {}
    for domain, spec in DOMAINS.items():
        h, w = sizes[domain]
        cam = spec.camera
        cameras[domain] = {
            "stands_for": spec.stands_for,
            "focal_px": [round(cam.focal_over_width[0] * w, 2), round(cam.focal_over_width[1] * w, 2)],
            "cx": round(w / 2 + cam.principal_offset[0] * w, 2),
            "cy": round(h / 2 + cam.principal_offset[1] * h, 2),
            "height_m": list(cam.height_m), "pitch_deg": list(cam.pitch_deg), "yaw_deg": list(cam.yaw_deg),
            "roll_deg": list(cam.roll_deg), "placement": cam.placement,
        }
    frequencies = {}
    for domain, hist in histograms.items():
        total = float(hist.sum())
        frequencies[domain] = {names[int(i)]: round(float(hist[i]) / total, 5)
                                for i in np.flatnonzero(hist) if int(i) in names}
    return {
        "generator": "udaseg.data.minicity", **parameters, "complete": True,
        "sizes": {d: list(s) for d, s in sizes.items()}, "counts": counts, "bytes": int(written),
        "cameras": cameras, "label_id_frequencies": frequencies,
        "regenerate": (f"udaseg data minicity --out DIR --size {parameters['size'][0]}x{parameters['size'][1]} "
                       f"--seed {parameters['seed']} --scale {parameters['scale']}"),
    }
