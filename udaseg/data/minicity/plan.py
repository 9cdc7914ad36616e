"""What a MiniCity of a given scale contains: one :class:`FrameJob` per rendered frame, with the
file names of every file written for it (the real datasets' naming schemes).

Each job carries the key of its random generator, ``(seed, domain, condition, split, index)``, so
any subset of jobs can run in any order, in any process, and produce byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udaseg.data.minicity.domains import ACDC_CONDITIONS, DOMAINS, domain_image_size
from udaseg.data.minicity.weather import FOGGY_CITYSCAPES_BETAS, RAIN_CITYSCAPES_SETTINGS

DEFAULT_SIZE = (256, 512)  # Cityscapes-domain (H, W)
SCALE_NAMES = ("small", "default", "large")


@dataclass(frozen=True)
class ScaleCounts:
    gta: int
    synthia: int
    cityscapes: dict[str, int]  # split → frames
    rain_frames: dict[str, int]  # split → frames that also get Rain Cityscapes variants
    rain_patterns: tuple[int, ...]
    acdc: dict[str, int]  # split → frames per condition


SCALES: dict[str, ScaleCounts] = {
    # Enough for every domain, split, condition and file kind to exist; seconds at 64×128.
    "small": ScaleCounts(gta=8, synthia=6, cityscapes={"train": 6, "val": 4}, rain_frames={"train": 2, "val": 1},
                         rain_patterns=(1,), acdc={"train": 2, "val": 2, "test": 1}),
    # The CPU benchmark: about 2 minutes on 2 cores at 256×512 (the demo's budget includes it).
    "default": ScaleCounts(gta=600, synthia=360, cityscapes={"train": 450, "val": 120},
                           rain_frames={"train": 50, "val": 10}, rain_patterns=(1, 2),
                           acdc={"train": 40, "val": 10, "test": 10}),
    # GPU machines: the real datasets' split sizes where affordable (use --size for resolution).
    "large": ScaleCounts(gta=10000, synthia=5000, cityscapes={"train": 2975, "val": 500},
                         rain_frames={"train": 262, "val": 33}, rain_patterns=(1, 2, 3, 4),
                         acdc={"train": 400, "val": 100, "test": 125}),
}

# Stable small integers for generator keys (never reorder: it would change every file).
DOMAIN_KEYS = {"gta": 1, "synthia": 2, "cityscapes": 3, "acdc": 4}
CONDITION_KEYS = {"clear": 0, "fog": 1, "night": 2, "rain": 3, "snow": 4}
SPLIT_KEYS = {"all": 0, "train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class RainVariant:
    alpha: float
    beta: float
    dropsize: float
    pattern: int

    def suffix(self) -> str:
        return f"rain_alpha_{self.alpha}_beta_{self.beta}_dropsize_{self.dropsize}_pattern_{self.pattern}"


@dataclass(frozen=True)
class FrameJob:
    domain: str
    split: str  # "all" for the source domains
    index: int
    condition: str  # clear, or the ACDC condition
    size: tuple[int, int]
    style: int  # city / sequence style of the look
    files: dict[str, str]  # kind → path relative to the output root
    foggy: dict[float, str] = field(default_factory=dict)  # beta → path
    rain: dict[RainVariant, str] = field(default_factory=dict)

    def key(self, seed: int) -> list[int]:
        return [seed, DOMAIN_KEYS[self.domain], CONDITION_KEYS[self.condition], SPLIT_KEYS[self.split], self.index]


def sizes_for(cityscapes_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    return {domain: domain_image_size(domain, cityscapes_size) for domain in DOMAINS}


def plan(scale: str, cityscapes_size: tuple[int, int]) -> list[FrameJob]:
    counts = SCALES[scale]
    sizes = sizes_for(cityscapes_size)
    jobs: list[FrameJob] = []
    for i in range(counts.gta):
        name = f"{i + 1:05d}.png"
        jobs.append(FrameJob("gta", "all", i, "clear", sizes["gta"], 0,
                             {"image": f"gta/images/{name}", "label": f"gta/labels/{name}"}))
    for i in range(counts.synthia):
        name = f"{i:07d}.png"
        jobs.append(FrameJob("synthia", "all", i, "clear", sizes["synthia"], 0,
                             {"image": f"synthia/RGB/{name}", "label": f"synthia/GT/LABELS/{name}",
                              "depth": f"synthia/Depth/Depth/{name}"}))
    jobs += _cityscapes_jobs(counts, sizes["cityscapes"])
    jobs += _acdc_jobs(counts, sizes["acdc"])
    return jobs


def _cityscapes_jobs(counts: ScaleCounts, size) -> list[FrameJob]:
    jobs = []
    rain_variants = [RainVariant(a, b, d, p) for a, b, d in RAIN_CITYSCAPES_SETTINGS for p in counts.rain_patterns]
    for split, n in counts.cityscapes.items():
        cities = DOMAINS["cityscapes"].cities[split]
        n_rain = counts.rain_frames.get(split, 0)
        rain_every = max(1, n // max(n_rain, 1))
        for i in range(n):
            city_index = i % len(cities)
            city = cities[city_index]
            stem = f"{city}_{i // len(cities):06d}_000019"
            folder = f"{split}/{city}"
            files = {"image": f"cityscapes/leftImg8bit/{folder}/{stem}_leftImg8bit.png",
                     "label": f"cityscapes/gtFine/{folder}/{stem}_gtFine_labelIds.png"}
            foggy = {beta: f"cityscapes/leftImg8bit_foggy/{folder}/{stem}_leftImg8bit_foggy_beta_{beta}.png"
                     for beta in FOGGY_CITYSCAPES_BETAS}
            rain = {}
            if i % rain_every == 0 and i // rain_every < n_rain:
                rain = {v: f"cityscapes/leftImg8bit_rain/{folder}/{stem}_leftImg8bit_{v.suffix()}.png"
                        for v in rain_variants}
            # City style: each city has its own mix of facade colours (see appearance.Look).
            jobs.append(FrameJob("cityscapes", split, i, "clear", size, city_index % 3, files, foggy, rain))
    return jobs


def _acdc_jobs(counts: ScaleCounts, size) -> list[FrameJob]:
    jobs = []
    for c, condition in enumerate(ACDC_CONDITIONS):
        for s, (split, n) in enumerate(counts.acdc.items()):
            for i in range(n):
                # Each condition and split has its own GoPro sequences of up to 12 frames.
                sequence = f"GOPR{300 + 200 * c + 60 * s + i // 12:04d}"
                stem = f"{sequence}_frame_{40 + 60 * (i % 12):06d}"
                folder = f"{condition}/{split}/{sequence}"
                files = {"image": f"acdc/rgb_anon/{folder}/{stem}_rgb_anon.png"}
                if split != "test":
                    files["label"] = f"acdc/gt/{folder}/{stem}_gt_labelIds.png"
                    files["train_label"] = f"acdc/gt/{folder}/{stem}_gt_labelTrainIds.png"
                jobs.append(FrameJob("acdc", split, i, condition, size, (i // 12) % 3, files))
    return jobs


def file_counts(jobs: list[FrameJob]) -> dict[str, dict[str, int]]:
    """Images per domain and split/kind, for the summary."""
    counts: dict[str, dict[str, int]] = {}
    for job in jobs:
        d = counts.setdefault(job.domain, {})
        key = job.split if job.domain != "acdc" else f"{job.condition}/{job.split}"
        if job.domain in ("gta", "synthia"):
            key = "images"
        d[key] = d.get(key, 0) + 1
        if job.foggy:
            d[f"foggy/{job.split}"] = d.get(f"foggy/{job.split}", 0) + len(job.foggy)
        if job.rain:
            d[f"rain/{job.split}"] = d.get(f"rain/{job.split}", 0) + len(job.rain)
    return counts
