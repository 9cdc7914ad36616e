"""``udaseg demo``: the main job on the embedded benchmark, on a laptop CPU in minutes.

1. Generate MiniCity (default scale) into ``--data`` unless it is already there.
2. Train, with the MiniCity CPU preset (``configs/experiment/minicity_cpu.yaml``) on
   ``minicity_gta2cs``:

   * **source-only** from the ImageNet-pretrained backbone (``SOURCE_ITERS`` iterations on GTA
     labels; the target is never read);
   * **DAFormer** self-training (``method=daformer_minicity``, with the ImageNet feature distance)
     for ``ADAPT_ITERS`` more iterations, starting from the source-only model (``model.init_from``):
     a DAFormer step costs 2.5–2.75× a source-only step on a CPU (docs/bench.md), and DAFormer from ImageNet for the
     whole budget does not fit the demo's 10 minutes next to MiniCity's generation;
   * **source-only, continued** for the same ``ADAPT_ITERS`` from the same model: the equal-budget
     control, so that the printed gain is that of self-training and not of more iterations;
   * with ``--oracle``, also the **oracle** (MiniCity-Cityscapes' own training labels for
     ``SOURCE_ITERS + ADAPT_ITERS`` iterations; the upper bound no UDA method may use) and the
     share of the gap DAFormer closes.
3. Evaluate every run on MiniCity-Cityscapes val (the final checkpoints; no model selection) and
   write a report with tables and pictures to ``<out>/report.md``; it opens with DAFormer's gain
   over source-only and over the control (:func:`headline`) and a picture of every run's
   predictions side by side (image | ground truth | source-only | DAFormer | control | oracle).

Runs that already finished in ``--out`` are reused and unfinished ones resumed, so an
interrupted demo continues where it stopped. The 3-seed comparison of every method
is ``docs/results/minicity.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

BENCHMARK = "minicity_gta2cs"
SEED = 0
SOURCE_ITERS = 250
ADAPT_ITERS = 120


def _train_or_reuse(args: list[str], run_dir: Path) -> dict:
    import json

    from udaseg import config as config_lib
    from udaseg.engine import trainer

    if (run_dir / "eval.json").exists():
        print(f"[demo] {run_dir} already finished: reusing it")
        return json.loads((run_dir / "eval.json").read_text())
    resume = (run_dir / "config.yaml").exists()
    cfg = config_lib.load_resolved(run_dir / "config.yaml") if resume else config_lib.compose(args)
    print(f"[demo] {'resuming' if resume else 'training'} {cfg.method.label or cfg.method.name} → {run_dir}")
    return trainer.train(cfg, run_dir, resume=resume)


def _runs(data: Path, out: Path, oracle: bool, overrides: tuple[str, ...],
          daformer_overrides: tuple[str, ...]) -> list[tuple[str, str, list[str]]]:
    """(key, printed name, config arguments) of the demo's runs, in training order."""
    base = ["minicity_cpu", f"benchmark={BENCHMARK}", f"seed={SEED}", f"data_root={data}"]
    source = out / BENCHMARK / f"source_only_s{SEED}"
    adapt = [f"iters={ADAPT_ITERS}", f"model.init_from={source}"]
    runs = [("source_only", "source-only", [*base, "method=source_only", f"iters={SOURCE_ITERS}"]),
            ("daformer", f"DAFormer, +{ADAPT_ITERS} its from source-only",
             [*base, "method=daformer_minicity", *adapt, "method.label=daformer_from_source_only",
              *daformer_overrides]),
            ("continued", f"source-only, +{ADAPT_ITERS} its (control)",
             [*base, "method=source_only", *adapt, "method.label=source_only_continued"])]
    if oracle:
        runs.append(("oracle", "oracle", [*base, "method=oracle", f"iters={SOURCE_ITERS + ADAPT_ITERS}"]))
    return [(key, name, [*args, *overrides]) for key, name, args in runs]


def headline(finals: dict[str, dict], metric: str, oracle: bool, adapt_iters: int = ADAPT_ITERS) -> str:
    """The sentence the demo exists for, from the runs' final ``eval.json``: DAFormer's gain over
    the source-only model it started from and over the equal-budget control (and the share of the
    source-only → oracle gap it closes). ``adapt_iters``: the iterations DAFormer and the control
    trained on top of the source-only model."""
    value = {key: 100 * row[metric] for key, row in finals.items()}
    text = (f"**DAFormer self-training reaches {value['daformer']:.1f} {metric}** on MiniCity-Cityscapes val "
            f"(seed {SEED}, final checkpoints): a gain of **{value['daformer'] - value['source_only']:+.1f} "
            f"points over the source-only model** it started from ({value['source_only']:.1f}), and of "
            f"**{value['daformer'] - value['continued']:+.1f} points over the equal-budget control** "
            f"(the same model trained on the source for the same {adapt_iters} more iterations: "
            f"{value['continued']:.1f}) — the latter is the gain of self-training itself, not of more "
            "iterations.")
    if oracle:
        low, high = value["source_only"], value["oracle"]
        text += f" The oracle (trained on the target's own labels, the upper bound) reaches {high:.1f}"
        text += (f": DAFormer closes {100 * (value['daformer'] - low) / (high - low):.0f} % of the source-only → "
                 "oracle gap." if high > low else ", not above source-only: there is no gap to close.")
    return text + (" One seed, so no spread is measured here; the 3-seed comparison of every method is "
                   "docs/results/minicity.md.")


def _prediction_picture(dirs: list[Path], path: Path, adapt_iters: int = ADAPT_ITERS) -> Path | None:
    """Image | ground truth | the prediction of each demo run, on a few MiniCity-Cityscapes val images."""
    import torch

    from udaseg.engine.checkpoint import load_network
    from udaseg.engine.summary import prediction_grid
    from udaseg.engine.trainer import build_dataset

    titles = {"source_only": "source-only", "daformer": f"DAFormer (+{adapt_iters} its)",
              "continued": f"control (source-only +{adapt_iters} its)", "oracle": "oracle"}
    networks = []
    for run_dir in dirs:
        network, cfg = load_network(run_dir)
        networks.append((titles.get(run_dir.name.rsplit("_s", 1)[0], run_dir.name), network))
    val_sets = [(spec, build_dataset(spec, cfg.data_root, cfg.benchmark.label_space)) for spec in cfg.benchmark.val]
    path.parent.mkdir(parents=True, exist_ok=True)
    return prediction_grid(networks, val_sets, torch.device("cpu"), path)


def run_demo(out: Path, data: Path, *, oracle: bool = False, scale: str = "default",
             size: tuple[int, int] | None = None, overrides: tuple[str, ...] = (),
             daformer_overrides: tuple[str, ...] = ()) -> int:
    """The demo; ``scale``, ``size`` and ``overrides`` (config ``key=value`` of every run, and
    of DAFormer's alone) exist for tests."""
    import yaml

    from udaseg.data.minicity import generate
    from udaseg.report import write_report

    start = time.time()
    summary = generate(data, scale=scale, size=size)
    print(summary.describe())
    finals, dirs = {}, []
    for key, _, args in _runs(data, out, oracle, overrides, daformer_overrides):
        dirs.append(out / BENCHMARK / f"{key}_s{SEED}")
        finals[key] = _train_or_reuse(args, dirs[-1])
    metric = finals["source_only"]["metric"]
    adapt_iters = int(yaml.safe_load((dirs[2] / "config.yaml").read_text())["iters"])  # the control's
    picture = _prediction_picture(dirs, out / "report_files" / "predictions.png", adapt_iters)
    notes = headline(finals, metric, oracle, adapt_iters) + (
        "\n\nPredictions on MiniCity-Cityscapes val (each row one image; the colours of the classes in the "
        "legend below the picture; black: no label):\n\n"
        f"![predictions]({picture.parent.name}/{picture.name})" if picture is not None else "")
    report = write_report(dirs, out / "report.md", title="udaseg demo: MiniCity GTA → Cityscapes", notes=notes)
    print(f"\nMiniCity GTA → Cityscapes, {metric} on MiniCity-Cityscapes val (seed {SEED}, final checkpoints):")
    for key, name, _ in _runs(data, out, oracle, overrides, daformer_overrides):
        print(f"  {name:<38} {100 * finals[key][metric]:5.1f}")
    gain = finals["daformer"][metric] - finals["continued"][metric]
    print(f"  self-training's gain over the equal-budget control: {100 * gain:+.1f} points")
    if oracle:
        low, high = finals["source_only"][metric], finals["oracle"][metric]
        closed = (f"DAFormer closes {100 * (finals['daformer'][metric] - low) / (high - low):.0f} % of the "
                  "source-only → oracle gap" if high > low else "it is not above source-only: no gap to close")
        print(f"  the oracle is trained on the target's labels (the upper bound); {closed}")
    print(f"report: {report}   (took {(time.time() - start) / 60:.1f} min; 3-seed results of every method: "
          "docs/results/minicity.md)")
    return 0
