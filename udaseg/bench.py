"""``udaseg bench``: median training-step time and peak memory per config, and ratios to source-only.

Each config runs in a fresh subprocess (so that its peak memory is its own): the method is built
exactly as ``udaseg train`` builds it, fed synthetic batches of the benchmark's crop size (uint8
images, random labels; data loading is not timed), and ``train_step`` is timed over ``steps``
iterations after ``warmup`` untimed ones. Reported per config:

* ``step_s`` — the **median** step time (CUDA synchronised), and its interquartile range;
* memory — on CUDA the peak allocated by PyTorch (``torch.cuda.max_memory_allocated``); on CPU the
  process's peak resident set (``ru_maxrss``) and its growth over the resident set measured after
  imports, before the method is built;
* ``ratio_to_daformer`` / ``mem_ratio_to_daformer`` — the same against plain ``daformer`` with the
  same benchmark, model and precision, for DAFormer's add-ons (MIC, TigDA, EBDA);
* ``ratio`` / ``mem_ratio`` — step time / memory over that of the ``source_only`` config with the same benchmark
  (batch and crop) and precision in the same invocation, with the same model where there is one (else the
  benchmark's first: HRDA against plain training of its base network) — the cost of a method
  relative to plain supervised training.

Nothing here is a test: numbers depend on the machine; record the command, the machine and the
date beside any figure you quote.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from udaseg.errors import ConfigError, UdasegError


@dataclass(frozen=True)
class BenchEntry:
    args: tuple[str, ...]  # config arguments, as for ``udaseg train``
    steps: int | None = None  # preset default for this entry (None: the command's --steps)
    warmup: int | None = None

    @property
    def label(self) -> str:
        return " ".join(self.args)


_MINICITY = ("minicity_cpu", "benchmark=minicity_gta2cs")
_B5 = ("benchmark=gta2cs", "model=mitb5_daformer", "schedule=poly10warm", "model.pretrained=null")
PRESETS: dict[str, list[BenchEntry]] = {
    "cpu": [
        BenchEntry((*_MINICITY, "method=source_only")),
        BenchEntry((*_MINICITY, "method=source_only_aug")),
        BenchEntry((*_MINICITY, "method=oracle")),
        BenchEntry((*_MINICITY, "method=source_only", "precision=bf16")),
        BenchEntry((*_MINICITY, "method=daformer_minicity")),
        # What the ImageNet feature distance costs (one more backbone forward on the source images).
        BenchEntry((*_MINICITY, "method=daformer_minicity", "method.fd.weight=0", "method.label=daformer(fd off)")),
        BenchEntry((*_MINICITY, "minicity_mic", "method=daformer_minicity", "method.label=daformer+mic")),
        BenchEntry((*_MINICITY, "minicity_hrda")),
        BenchEntry((*_MINICITY, "minicity_hrda", "minicity_mic", "method.label=hrda+mic")),
        BenchEntry((*_MINICITY, "minicity_tigda", "method=daformer_minicity")),
        BenchEntry((*_MINICITY, "minicity_ebda", "method=daformer_minicity")),
        BenchEntry((*_MINICITY, "minicity_ebda", "method=daformer_minicity", "method.ebda_mode=reuse",
                    "method.label=daformer+ebda(reuse)")),
        # MiT-B5 + DAFormer head at the papers' 512×512 crop, batch 2: slow on a CPU, so few steps.
        BenchEntry((*_B5, "method=source_only"), steps=3, warmup=1),
        BenchEntry((*_B5, "method=source_only", "precision=bf16"), steps=3, warmup=1),
    ],
    "gpu": [
        BenchEntry((*_B5, "method=source_only")),
        BenchEntry((*_B5, "method=source_only", "precision=bf16")),
        BenchEntry((*_B5, "method=source_only_aug", "precision=bf16")),
        BenchEntry((*_B5, "method=daformer")),
        BenchEntry((*_B5, "method=daformer", "method.mic=true", "method.label=daformer+mic")),
        BenchEntry(("benchmark=gta2cs_hr", "model=mitb5_daformer", "schedule=poly10warm", "model.pretrained=null",
                    "method=source_only")),
        BenchEntry(("benchmark=gta2cs_hr", "model=mitb5_hrda", "schedule=poly10warm", "model.pretrained=null",
                    "method=hrda")),
        BenchEntry(("benchmark=gta2cs_hr", "model=mitb5_hrda", "schedule=poly10warm", "model.pretrained=null",
                    "method=hrda", "method.mic=true", "method.mic.block_size=64", "method.label=hrda+mic")),
        BenchEntry(("benchmark=gta2cs", "model=deeplabv2_r101", "schedule=poly09_sgd", "method=source_only",
                    "benchmark.source.crop_size=[720,1280]")),
    ],
}
# The DeepLab-v2 family and DiGA on their MiniCity CPU stand-ins, each against source-only on the
# same model and batch (`udaseg bench --preset family`); pipelines are timed at their first stage
# (BAFFT step 1, DAF, DiGA's warm-up), plus BAFFT's step 2 (synthetic pseudo-labels).
_SYN16 = ("minicity_cpu", "benchmark=minicity_synthia2cs", "benchmark.label_space=synthia16")
_PRODA = ("minicity_cpu", "benchmark=minicity_gta2cs", "model=minicity_lite0_deeplab_proda", "benchmark.batch_size=2")
PRESETS["family"] = [
    BenchEntry((*_MINICITY, "method=source_only", "model=minicity_lite0_deeplab")),
    BenchEntry((*_MINICITY, "minicity_advent")),
    BenchEntry((*_MINICITY, "minicity_advent", "method.multi_level=true", "method.label=advent(multi-level)")),
    BenchEntry((*_MINICITY, "minicity_bafft", "method.label=bafft_step1")),
    BenchEntry((*_MINICITY, "minicity_bafft", "method.step=2", "method.label=bafft_step2")),
    BenchEntry((*_SYN16, "method=source_only", "model=minicity_lite0_deeplab_daf",
                "benchmark.source.options={depth: true}")),
    BenchEntry((*_SYN16, "minicity_daf")),
    BenchEntry((*_PRODA, "method=source_only")),
    BenchEntry((*_PRODA, "method=diga", "method.styling=fda", "method.label=diga_warmup(fda)")),
    BenchEntry((*_PRODA, "method=diga", "method.styling=none", "method.label=diga_warmup(photometric)")),
]
PRESETS["all"] = PRESETS["cpu"] + PRESETS["gpu"] + PRESETS["family"]


def crop_size(cfg) -> tuple[int, int]:
    """The (h, w) of the training crops the config feeds its method."""
    spec = cfg.benchmark.source
    for key in ("crop_size", "resize_to", "fit_size"):
        value = spec.get(key)
        if value:
            return int(value[0]), int(value[1])
    raise ConfigError(f"benchmark {cfg.benchmark.name}: the source stream has no crop_size, resize_to or "
                      "fit_size, so bench cannot tell the input size")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(args: list[str], steps: int, warmup: int, device_name: str = "auto") -> dict:
    """Build the method of ``args`` and time ``train_step`` on synthetic batches (this process)."""
    import torch

    from udaseg import config as config_lib
    from udaseg.data.catalog import get_label_space
    from udaseg.engine.trainer import pick_device, rank_seed, seed_everything
    from udaseg.methods import MethodContext, create_method, get_method_class

    cfg = config_lib.compose(args)
    device = pick_device(device_name if device_name != "auto" else cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(rank_seed(cfg.seed, 0))
    space = get_label_space(cfg.benchmark.label_space)
    baseline_rss = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=max(cfg.iters, steps + warmup),
                        label_space=space, device=device, precision=cfg.precision)
    method = create_method(cfg.method, ctx).to(device)
    method_cls = get_method_class(cfg.method.name)
    h, w = crop_size(cfg)
    batch = cfg.benchmark.batch_size
    generator = torch.Generator().manual_seed(0)

    def images():
        return torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=generator).to(device)

    def labels():
        return torch.randint(0, space.num_classes, (batch, h, w), generator=generator).to(device)

    def depth():  # SYNTHIA-like depth in metres (DAF's BerHu reads it)
        return (1.0 + 99.0 * torch.rand((batch, h, w), generator=generator)).to(device)

    times = []
    method.train()
    for it in range(warmup + steps):
        source = {"img": images(), "label": labels()}
        if cfg.benchmark.source.options.get("depth"):
            source["depth"] = depth()
        # Offline pseudo-labels ride along for the methods that read them (BAFFT step 2).
        target = {"img": images(), "pseudo_label": labels()} if method_cls.reads_target(cfg.method) else None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        method.set_iteration(it)
        method.train_step(source, target, it)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if it >= warmup:
            times.append(time.perf_counter() - start)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    result = {
        "config": " ".join(args), "benchmark": cfg.benchmark.name, "method": cfg.method.label or cfg.method.name,
        "method_name": cfg.method.name, "model": cfg.model.name, "precision": cfg.precision,
        "batch_size": batch, "crop": [h, w],
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup,
        "step_s": statistics.median(times), "step_s_iqr": [quartiles[0], quartiles[2]],
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = _peak_rss_mib()
        result["peak_rss_mib"] = peak
        result["peak_mem_mib"] = peak - baseline_rss
    return result


def _run_child(entry: BenchEntry, steps: int, warmup: int, device: str) -> dict:
    payload = json.dumps({"args": list(entry.args), "steps": steps, "warmup": warmup, "device": device})
    proc = subprocess.run([sys.executable, "-m", "udaseg.bench", payload], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"config": entry.label, "error": " | ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_ratios(results: list[dict]) -> None:
    """``ratio`` = step time and ``mem_ratio`` = peak memory over those of source_only on the same
    benchmark (same batch and crop) and precision — with the same model where there is one, else
    the benchmark's first source_only (so HRDA is compared with plain training of its base network)."""
    ok = [r for r in results if "error" not in r]
    same_model = {(r["benchmark"], r["model"], r["precision"]): r for r in ok if r["method"] == "source_only"}
    any_model: dict[tuple, dict] = {}
    for r in ok:
        if r["method"] == "source_only":
            any_model.setdefault((r["benchmark"], r["precision"]), r)
    for r in ok:
        ref = (same_model.get((r["benchmark"], r["model"], r["precision"]))
               or any_model.get((r["benchmark"], r["precision"])))
        r["ratio"] = r["step_s"] / ref["step_s"] if ref else None
        r["mem_ratio"] = r["peak_mem_mib"] / ref["peak_mem_mib"] if ref and ref["peak_mem_mib"] > 0 else None
    # Add-ons of the self-training core (MIC, TigDA, EBDA …) against plain DAFormer on the same model.
    daformer = {(r["benchmark"], r["model"], r["precision"]): r for r in ok if r["method"] == "daformer"}
    for r in ok:
        ref = daformer.get((r["benchmark"], r["model"], r["precision"])) if r["method_name"] == "daformer" else None
        r["ratio_to_daformer"] = r["step_s"] / ref["step_s"] if ref else None
        r["mem_ratio_to_daformer"] = (r["peak_mem_mib"] / ref["peak_mem_mib"]
                                      if ref and ref["peak_mem_mib"] > 0 else None)


def format_table(results: list[dict]) -> str:
    lines = [f"{'benchmark':<16} {'method':<16} {'model':<17} {'prec':<5} {'batch×crop':<13} "
             f"{'step (s)':>9} {'it/s':>7} {'ratio':>6} {'mem (MiB)':>10} {'ratio':>6} {'×DAF':>5}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['config']}: FAILED: {r['error']}")
            continue
        ratio, mem_ratio, daf = ("–" if r.get(k) is None else f"{r[k]:.2f}"
                                 for k in ("ratio", "mem_ratio", "ratio_to_daformer"))
        crop = f"{r['batch_size']}×{r['crop'][0]}×{r['crop'][1]}"
        lines.append(f"{r['benchmark']:<16} {r['method']:<16} {r['model']:<17} {r['precision']:<5} {crop:<13} "
                     f"{r['step_s']:>9.3f} {1 / r['step_s']:>7.2f} {ratio:>6} {r['peak_mem_mib']:>10.0f} "
                     f"{mem_ratio:>6} {daf:>5}")
    return "\n".join(lines)


def run_bench(args) -> int:
    import torch

    if args.configs:
        entries = [BenchEntry(tuple(shlex.split(c))) for c in args.configs]
    else:
        preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
        entries = PRESETS[preset]
    if args.steps < 1 or args.warmup < 0:
        raise UdasegError("--steps must be ≥ 1 and --warmup ≥ 0")
    explicit_steps = "--steps" in sys.argv
    explicit_warmup = "--warmup" in sys.argv
    results = []
    for entry in entries:
        steps = args.steps if explicit_steps or entry.steps is None else entry.steps
        warmup = args.warmup if explicit_warmup or entry.warmup is None else entry.warmup
        print(f"bench: {entry.label} ({warmup} warm-up + {steps} timed steps)", file=sys.stderr, flush=True)
        results.append(_run_child(entry, steps, warmup, args.device))
    add_ratios(results)
    print(format_table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"results": results, "command": sys.argv}, indent=2))
        print(f"written: {args.out}")
    return 1 if any("error" in r for r in results) else 0


def _child_main(payload: str) -> None:
    job = json.loads(payload)
    try:
        result = measure(job["args"], job["steps"], job["warmup"], job["device"])
    except UdasegError as err:
        print(f"udaseg bench: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(sys.argv[1])
