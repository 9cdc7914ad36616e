"""``udaseg demo``: the main job on the embedded benchmark, on a laptop CPU in minutes.

1. Generate MiniCity (default scale) into ``--data`` unless it is already there.
2. Train, with the MiniCity CPU preset (``configs/experiment/minicity_cpu.yaml``) on
   ``minicity_gta2cs``: **source-only** (GTA labels only; the target is never read) and
   **oracle** (MiniCity-Cityscapes' own training labels; the upper bound no UDA method may use).
3. Evaluate both on MiniCity-Cityscapes val (the final checkpoints; no model selection) and write
   a report with tables and pictures to ``<out>/report.md``.

Runs that already finished in ``--out`` are reused and unfinished ones resumed, so an
interrupted demo continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

BENCHMARK = "minicity_gta2cs"
METHODS = ("source_only", "oracle")
SEED = 0


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


def run_demo(out: Path, data: Path, *, scale: str = "default", size: tuple[int, int] | None = None,
             overrides: tuple[str, ...] = ()) -> int:
    """The demo; ``scale``, ``size`` and ``overrides`` (config ``key=value``) exist for tests."""
    from udaseg.data.minicity import generate
    from udaseg.report import write_report

    start = time.time()
    summary = generate(data, scale=scale, size=size)
    print(summary.describe())
    finals = {}
    for method in METHODS:
        args = ["minicity_cpu", f"benchmark={BENCHMARK}", f"method={method}", f"seed={SEED}",
                f"data_root={data}", *overrides]
        finals[method] = _train_or_reuse(args, out / BENCHMARK / f"{method}_s{SEED}")
    report = write_report([out / BENCHMARK / f"{m}_s{SEED}" for m in METHODS], out / "report.md",
                          title="udaseg demo: MiniCity GTA → Cityscapes")
    metric = finals["source_only"]["metric"]
    low, high = finals["source_only"][metric], finals["oracle"][metric]
    print(f"\nMiniCity GTA → Cityscapes, {metric} on MiniCity-Cityscapes val (seed {SEED}, final checkpoints):")
    print(f"  source-only {100 * low:5.1f}")
    print(f"  oracle      {100 * high:5.1f}   (trained on the target's labels: the upper bound)")
    print(f"  the gap a UDA method can close: {100 * (high - low):.1f} points")
    print(f"report: {report}   (took {(time.time() - start) / 60:.1f} min)")
    return 0
