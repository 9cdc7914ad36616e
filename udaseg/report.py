"""``udaseg report RUN_DIR...``: results tables and pictures from run directories.

Runs are grouped by (benchmark, evaluation set, method label, model); the seeds of a group are
aggregated as **mean ± sample standard deviation** (ddof = 1; one seed shows "± –" — no spread is
measured — with its seed count beside it). Where a benchmark has a ``source_only`` and an ``oracle`` group,
every method also gets the fraction of the source-only → oracle gap it closes:
(mIoU − source-only) / (oracle − source-only), computed on the group means, against the source-only
and oracle of the same model family (:func:`model_family`; "–" where that family lacks either).

Written: one Markdown file with a summary table per benchmark/evaluation set, a per-class IoU
table, the provenance of every number (command, seeds, machine, wall time), and pictures beside it
(per-class IoU bars, a confusion matrix per method, training curves). Nothing is measured here:
every figure comes from the runs' ``eval.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from udaseg.errors import UdasegError


@dataclass
class Run:
    path: Path
    benchmark: str
    label: str
    model: str
    seed: int
    evals: list[dict]
    metrics: list[dict]
    env: dict
    train_seconds: float | None
    # Where the run sits on the training-iteration axis: it continues ``start`` iterations of
    # training (see :func:`start_iteration`) and runs ``iters`` more.
    start: int = 0
    iters: int | None = None


@dataclass
class Group:
    benchmark: str
    eval_name: str
    label: str
    model: str
    runs: list[Run] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)  # one eval row per run
    # The row name in tables without a model column: the label, plus the model where the same
    # label appears with another model on the same benchmark (source-only on two networks).
    name: str = ""

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def values(self, key: str) -> list[float]:
        return [row[key] for row in self.results if row.get(key) is not None]

    def mean(self, key: str) -> float | None:
        vals = self.values(key)
        return statistics.fmean(vals) if vals else None

    def std(self, key: str) -> float | None:
        vals = self.values(key)
        return statistics.stdev(vals) if len(vals) > 1 else None  # one seed: no spread to report

    def class_mean(self, name: str) -> float | None:
        vals = [row["per_class_iou"].get(name) for row in self.results]
        vals = [v for v in vals if v is not None]
        return statistics.fmean(vals) if vals else None


def method_label(cfg: dict) -> str:
    method = cfg.get("method", {})
    return method.get("label") or method.get("name", "?")


def benchmark_name(cfg: dict) -> str:
    """The benchmark a run's rows are tabled under: runs of one benchmark in another label space
    (SYNTHIA's 16 classes) are a table of their own, e.g. ``minicity_synthia2cs [synthia16]``."""
    space = cfg["benchmark"].get("label_space", "cityscapes19")
    return cfg["benchmark"]["name"] + ("" if space == "cityscapes19" else f" [{space}]")


def start_iteration(cfg: dict, _depth: int = 0) -> int:
    """The training iterations a run continues: ``schedule.offset`` where set (a run continuing one
    schedule, e.g. a pipeline stage), else those of the run directory its ``model.init_from``
    names (that run's start plus its ``iters``, recursively); 0 for a run from pretrained weights,
    from a file outside any run directory, or whose initial run directory is gone."""
    offset = int((cfg.get("schedule") or {}).get("offset") or 0)
    init = (cfg.get("model") or {}).get("init_from")
    if offset or not init or _depth > 16:
        return offset
    source = Path(str(init))
    if not source.exists() and ":" in str(init):  # RUN:NETWORK (the teacher of a run)
        source = Path(str(init).rpartition(":")[0])
    try:
        parent = yaml.safe_load((source / "config.yaml").read_text()) if source.is_dir() else None
    except (OSError, yaml.YAMLError):
        parent = None
    if not isinstance(parent, dict) or not parent.get("iters"):
        return 0
    return start_iteration(parent, _depth + 1) + int(parent["iters"])


def load_run(path: Path) -> Run:
    path = Path(path)
    cfg_path, eval_path = path / "config.yaml", path / "eval.json"
    if not cfg_path.exists():
        raise UdasegError(f"{path}: not a run directory (no config.yaml)")
    if not eval_path.exists():
        raise UdasegError(f"{path}: the run has no eval.json (unfinished? resume it with udaseg train --resume)")
    cfg = yaml.safe_load(cfg_path.read_text())
    evaluation = json.loads(eval_path.read_text())
    if evaluation.get("network", "") is None:
        raise UdasegError(f"{path}: the run trains no segmentation network ({evaluation.get('note', 'no result')}): "
                          "nothing to report")
    metrics = []
    if (path / "metrics.jsonl").exists():
        metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_rows = [m for m in metrics if "eval" not in m and "time" in m]
    env = json.loads((path / "env.json").read_text()) if (path / "env.json").exists() else {}
    benchmark = benchmark_name(cfg)
    label = method_label(cfg)
    if evaluation.get("selection"):  # select_on_val: a row of its own, named for what it is
        label += " [best on target val]"
    return Run(path=path, benchmark=benchmark, label=label, model=cfg["model"]["name"],
               seed=int(cfg.get("seed", 0)), evals=evaluation.get("all") or [evaluation], metrics=metrics,
               env=env, train_seconds=train_rows[-1]["time"] if train_rows else None,
               start=start_iteration(cfg), iters=cfg.get("iters"))


def is_pipeline_dir(path: Path) -> bool:
    """A pipeline's run directory (udaseg/engine/pipeline.py writes ``pipeline.json``)."""
    return (Path(path) / "pipeline.json").exists()


def _segments(eval_path: Path) -> bool:
    """Whether a finished run's ``eval.json`` holds a segmentation result (a stage that trains no
    segmentation network, e.g. DiGA's translator, writes ``"network": null`` and nothing to report)."""
    return json.loads(Path(eval_path).read_text()).get("network") is not None


def stage_run_dirs(path: Path) -> list[Path]:
    """The training stages' run directories of a pipeline run that finished with a segmentation
    result (not, e.g., a translator stage)."""
    return sorted(p.parent for p in (Path(path) / "stages").glob("*/eval.json") if _segments(p))


def expand_run_dirs(paths: list) -> list[Path]:
    """Run directories among ``paths``: a path holding ``config.yaml`` is one (a pipeline's are its
    training stages); any other folder is searched (recursively) for finished runs, so
    ``udaseg report runs/`` works."""
    found: list[Path] = []
    for path in map(Path, paths):
        if is_pipeline_dir(path):  # a pipeline: one row per training stage
            found += stage_run_dirs(path)
        elif (path / "config.yaml").exists():
            found.append(path)
        elif path.is_dir():
            inner = sorted(p.parent for p in path.rglob("eval.json")
                           if (p.parent / "config.yaml").exists() and not is_pipeline_dir(p.parent) and _segments(p))
            if not inner:
                raise UdasegError(f"{path}: no run directory (with config.yaml and eval.json) in it")
            found += inner
        else:
            raise UdasegError(f"{path}: not a folder")
    return found


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        for row in run.evals:
            key = (run.benchmark, row.get("name") or row.get("dataset", "?"), run.label, run.model)
            group = groups.setdefault(key, Group(*key))
            group.runs.append(run)
            group.results.append(row)
    models: dict[tuple, set] = {}
    for bench, _, label, model in groups:
        models.setdefault((bench, label), set()).add(model)
    for (bench, _, label, model), group in groups.items():
        group.name = label if len(models[(bench, label)]) == 1 else f"{label} ({model})"
    for group in groups.values():
        seeds = group.seeds
        if len(set(seeds)) != len(seeds):
            dupes = sorted({s for s in seeds if seeds.count(s) > 1})
            raise UdasegError(f"{group.benchmark}/{group.label}/{group.model}: seed(s) {dupes} appear in more "
                              f"than one run directory: {', '.join(str(r.path) for r in group.runs)}")
    return list(groups.values())


def _metric_keys(groups: list[Group]) -> list[str]:
    keys: list[str] = []
    for group in groups:
        for row in group.results:
            for key in row:
                if key.startswith("mIoU") and key not in keys and row[key] is not None:
                    keys.append(key)
    order = {"mIoU19": 0, "mIoU16": 1, "mIoU13": 2, "mIoU7": 3}
    return sorted(keys, key=lambda k: order.get(k, 9))


def _fmt(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean * scale:.1f} ± " + ("–" if std is None else f"{std * scale:.1f}")


def _order(groups: list[Group]) -> list[Group]:
    rank = {"source_only": 0, "source_only+aug": 1, "source_only_continued": 2, "oracle": 99}
    return sorted(groups, key=lambda g: (rank.get(g.label, 50), g.label, g.model))


FAMILY_SUFFIXES = ("_hrda", "_daf")


def model_family(model: str) -> str:
    """The model family whose source-only and oracle a row's gap is measured against: the model
    preset without the wrapper a method adds (HRDA's multi-resolution wrapper, DAF's depth branch),
    e.g. ``minicity_lite0_hrda`` → ``minicity_lite0``, ``minicity_lite0_deeplab_daf`` →
    ``minicity_lite0_deeplab``."""
    for suffix in FAMILY_SUFFIXES:
        if model.endswith(suffix):
            return model[: -len(suffix)]
    return model


def _gap_closed(group: Group, low: Group | None, high: Group | None, key: str) -> str:
    if low is None or high is None:
        return "–"
    m, lo, hi = group.mean(key), low.mean(key), high.mean(key)
    if m is None or lo is None or hi is None or hi - lo <= 1e-9:
        return "–"
    return f"{(m - lo) / (hi - lo) * 100:.0f}%"


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a comparison of two report rows on one benchmark: ``better`` (a method
    label) beats ``than`` on the benchmark's headline metric. ``than`` is the row of ``better``'s
    model family when the benchmark has one (a label can appear with several models, e.g. the
    controls); ``same_family``: only that row counts (a control of another network is no answer)."""

    text: str
    benchmark: str
    better: str
    than: str
    same_family: bool = False


# The papers' claims on the MiniCity benchmarks, by the labels tools/minicity_results.sh gives the
# runs (a pipeline's stages are labelled by stage: bafft_step2, daf+isl+ida, diga_warmup, diga_round2) and
# the tables they land in (:func:`benchmark_name`: DAF's protocol trains 16-way on SYNTHIA).
# HRDA and MIC report Cityscapes → ACDC as well as GTA → Cityscapes, so their claims are asked on both.
CLAIMS = (
    Claim("DAFormer > the augmentation control", "minicity_gta2cs", "daformer", "source_only+aug", same_family=True),
    Claim("HRDA > DAFormer (GTA)", "minicity_gta2cs", "hrda", "daformer"),
    Claim("HRDA > DAFormer (ACDC)", "minicity_cs2acdc", "hrda", "daformer"),
    Claim("MIC > DAFormer (GTA)", "minicity_gta2cs", "daformer+mic", "daformer"),
    Claim("MIC > DAFormer (ACDC)", "minicity_cs2acdc", "daformer+mic", "daformer"),
    Claim("MIC > HRDA (GTA)", "minicity_gta2cs", "hrda+mic", "hrda"),
    Claim("MIC > HRDA (ACDC)", "minicity_cs2acdc", "hrda+mic", "hrda"),
    Claim("TigDA > DAFormer (GTA)", "minicity_gta2cs", "daformer+tigda", "daformer"),
    Claim("TigDA > DAFormer (SYNTHIA)", "minicity_synthia2cs", "daformer+tigda", "daformer"),
    Claim("EBDA > DAFormer (ACDC)", "minicity_cs2acdc", "daformer+ebda", "daformer"),
    Claim("EBDA > DAFormer (Foggy)", "minicity_cs2foggy", "daformer+ebda", "daformer"),
    Claim("ADVENT > source-only", "minicity_gta2cs", "advent", "source_only", same_family=True),
    Claim("BAFFT > ADVENT", "minicity_gta2cs", "bafft_step2", "advent"),
    Claim("DAF > ADVENT", "minicity_synthia2cs [synthia16]", "daf", "advent"),
    Claim("DAF + ISL + IDA > DAF", "minicity_synthia2cs [synthia16]", "daf+isl+ida", "daf"),
    Claim("DiGA warm-up > source-only", "minicity_gta2cs", "diga_warmup", "source_only", same_family=True),
    Claim("DiGA > DAFormer", "minicity_gta2cs", "diga_round2", "daformer"),
)


def claim_verdict(better: Group, than: Group, key: str) -> tuple[str, str]:
    """(difference in points, verdict): "reproduced" when ``better`` is ahead by more than one
    standard deviation (the larger of the two rows'), "reversed" when behind by more, "within
    noise" otherwise; with a single seed on either side no spread is measured: "one seed"."""
    a, b = better.mean(key), than.mean(key)
    if a is None or b is None:
        return "–", "no score"
    diff = (a - b) * 100
    stds = [better.std(key), than.std(key)]
    if any(sd is None for sd in stds):
        return f"{diff:+.1f}", "one seed: no spread measured"
    spread = max(sd for sd in stds if sd is not None) * 100
    if diff > spread:
        return f"{diff:+.1f}", f"reproduced (> 1 std, {spread:.1f})"
    if diff < -spread:
        return f"{diff:+.1f}", f"reversed (< −1 std, {spread:.1f})"
    return f"{diff:+.1f}", f"within noise (std {spread:.1f})"


def load_diagnoses(path: Path, claims: tuple[Claim, ...] = CLAIMS) -> dict[str, str]:
    """What the diagnostics say about claims MiniCity does not reproduce: a YAML mapping from a
    claim's text (:data:`CLAIMS`) to one or two sentences (written from the run records' diagnostics,
    by hand — nothing here is measured)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UdasegError(f"{path}: cannot read the claims' diagnoses ({e})") from e
    if not isinstance(data, dict):
        raise UdasegError(f"{path}: expected a mapping from claim to diagnosis, got {type(data).__name__}")
    known = {c.text for c in claims}
    for key, text in data.items():
        if key not in known:
            raise UdasegError(f"{path}: {key!r} is not a claim of the table (udaseg.report.CLAIMS)")
        if not isinstance(text, str) or not text.strip():
            raise UdasegError(f"{path}: the diagnosis of {key!r} must be text")
    return {key: " ".join(text.split()) for key, text in data.items()}


def class_changes(better: Group, than: Group, n: int = 2) -> str:
    """The ``n`` largest per-class IoU gains and losses of ``better`` over ``than`` (group means,
    points), e.g. "terrain +29.5, traffic sign +11.3; truck −8.0, car −4.4"; "–" where none."""
    diffs = []
    for name in better.results[0].get("per_class_iou", {}):
        a, b = better.class_mean(name), than.class_mean(name)
        if a is not None and b is not None and not (math.isnan(a) or math.isnan(b)):
            diffs.append(((a - b) * 100, name))
    gains = [f"{name} {d:+.1f}" for d, name in sorted(diffs, reverse=True)[:n] if d >= 0.05]
    losses = [f"{name} −{-d:.1f}" for d, name in sorted(diffs)[:n] if d <= -0.05]
    return "; ".join(part for part in (", ".join(gains), ", ".join(losses)) if part) or "–"


def claims_table(groups: list[Group], claims: tuple[Claim, ...] = CLAIMS,
                 diagnoses: dict[str, str] | None = None) -> list[str]:
    """The claims section: each claim with the two rows' means, the difference and the verdict,
    on the benchmark's headline evaluation set and metric; a claim whose rows were not run says so.
    ``diagnoses`` (:func:`load_diagnoses`) fill the last column of claims that are not reproduced."""
    diagnoses = diagnoses or {}
    lines = ["## Claims", "",
             "Each paper's claim, answered by the rows above (headline metric of the benchmark's first "
             "evaluation set; verdict against one standard deviation over seeds, given once both rows have "
             "at least two seeds). Where a claim is not "
             "reproduced, the last column says what the runs' diagnostics show; the column before it "
             "lists the largest per-class IoU gains and losses (points, means over seeds).", "",
             "| claim | benchmark | rows | means | seeds | difference (points) | MiniCity's answer "
             "| largest class changes | diagnosis |",
             "|---|---|---|---|---|---|---|---|---|"]
    for claim in claims:
        candidates = [g for g in groups if g.benchmark == claim.benchmark]
        first_set = candidates[0].eval_name if candidates else None
        candidates = [g for g in candidates if g.eval_name == first_set]
        better = next((g for g in candidates if g.label == claim.better), None)
        than = None
        if better is not None:  # ``than`` of better's model family where there is one (never the first found)
            others = sorted((g for g in candidates if g.label == claim.than), key=lambda g: g.model)
            kin = [g for g in others if model_family(g.model) == model_family(better.model)]
            than = next(iter(kin if kin or claim.same_family else others), None)
        rows = f"{claim.better} vs {claim.than}"
        if better is None or than is None:
            missing = claim.better if better is None else claim.than
            lines.append(f"| {claim.text} | {claim.benchmark} | {rows} | – | – | – | not run yet ({missing}) | – | – |")
            continue
        key = better.results[0].get("metric") or "mIoU19"
        diff, verdict = claim_verdict(better, than, key)
        means = f"{_fmt(better.mean(key), better.std(key))} vs {_fmt(than.mean(key), than.std(key))}"
        seeds = f"{len(better.seeds)} vs {len(than.seeds)}"
        diagnosis = "–" if verdict.startswith("reproduced") else diagnoses.get(claim.text, "–")
        lines.append(f"| {claim.text} | {claim.benchmark} | {rows} | {means} | {seeds} | {diff} | {verdict} "
                     f"| {class_changes(better, than)} | {diagnosis} |")
    return lines + [""]


def write_report(run_dirs: list[Path], out: Path, title: str = "Results", notes: str = "",
                 claims: bool = False, diagnoses: dict[str, str] | None = None) -> Path:
    runs = [load_run(p) for p in run_dirs]
    if not runs:
        raise UdasegError("no run directories given")
    groups = group_runs(runs)
    out = Path(out)
    pictures = out.parent / f"{out.stem}_files"
    pictures.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "",
             "Written by `udaseg report` from run directories; every number is the mean ± sample std "
             "(ddof 1) over the seeds listed (\"± –\" where there is one seed: no spread is measured), "
             "evaluated on the final checkpoint of each run (no model "
             "selection on target labels, except in rows marked [best on target val]). mIoU in %.", ""]
    if notes:
        lines += [notes.strip(), ""]
    by_bench: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for group in groups:
        by_bench[(group.benchmark, group.eval_name)].append(group)
    # A benchmark's first evaluation set is its headline (eval.json's top level): it gets the full
    # section; further sets (e.g. ACDC per condition) one compact table after it.
    eval_sets: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        for row in run.evals:
            name = row.get("name") or row.get("dataset", "?")
            if name not in eval_sets[run.benchmark]:
                eval_sets[run.benchmark].append(name)

    for (bench, eval_name), bench_groups in sorted(by_bench.items()):
        if eval_name != eval_sets[bench][0]:
            continue
        bench_groups = _order(bench_groups)
        keys = _metric_keys(bench_groups)
        primary = bench_groups[0].results[0].get("metric") or (keys[0] if keys else "mIoU19")
        keys = sorted(keys, key=lambda k: k != primary)  # the benchmark's headline first
        def references(model: str) -> tuple[Group | None, Group | None]:
            """Source-only and oracle of ``model``'s family (:func:`model_family`); none when that
            family lacks either — never another family's, whose gap is another quantity."""
            pair: dict[str, Group] = {}
            for g in bench_groups:  # noqa: B023 (called within this iteration only)
                if g.label in ("source_only", "oracle") and model_family(g.model) == model_family(model):
                    pair.setdefault(g.label, g)
            return pair.get("source_only"), pair.get("oracle")

        lines += [f"## {bench} — evaluated on {eval_name}", ""]
        header = ["method", "model", "seeds", *keys, f"gap closed ({primary})"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for g in bench_groups:
            cells = [g.label, g.model, f"{len(g.results)} ({', '.join(map(str, sorted(g.seeds)))})",
                     *[_fmt(g.mean(k), g.std(k)) for k in keys],
                     _gap_closed(g, *references(g.model), primary)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        classes = list(bench_groups[0].results[0]["per_class_iou"])
        lines += [f"Per-class IoU (%, mean over seeds) on {eval_name}:", "",
                  "| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for g in bench_groups:
            vals = [g.class_mean(c) for c in classes]
            lines.append(f"| {g.name} | " + " | ".join("–" if v is None else f"{v * 100:.1f}" for v in vals) + " |")
        lines.append("")
        if len(eval_sets[bench]) > 1:
            lines += _per_set_table(bench, eval_sets[bench], by_bench, primary, bench_groups)
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{bench}_{eval_name}").replace("__", "_")
        for picture in (_plot_per_class(bench_groups, classes, pictures / f"{stem}_per_class.png"),
                        _plot_curves(bench_groups, pictures / f"{stem}_curves.png"),
                        _plot_confusions(bench_groups, classes, pictures / f"{stem}_confusion.png")):
            if picture is not None:
                if picture.name.endswith("_confusion.png"):
                    lines += [f"Confusion matrices on {eval_name} (summed over seeds), row-normalised: each row is a "
                              "ground-truth class and shows the share of its labelled pixels predicted as each class "
                              "(grey: a class with no labelled pixels).", ""]
                lines += [f"![{picture.stem}]({pictures.name}/{picture.name})", ""]
        lines += _similar_pairs_table(bench_groups, classes)
        lines += _pseudo_label_precision_table(bench_groups, classes)
        lines += _offline_pseudo_label_table(bench_groups, classes)
        diagnostics = _plot_pseudo_labels(bench_groups, pictures / f"{stem}_pseudo_labels.png")
        if diagnostics is not None:
            lines += ["Pseudo-labels of the self-training methods over training, against the target's training "
                      "labels (diagnostics only: the labels are shown to the method after each step and never "
                      "enter a loss or select a model). Left: pixel accuracy of the teacher's pseudo-labels; "
                      "right: the batch confidence weight q (fraction of pixels with confidence ≥ τ).", "",
                      f"![{diagnostics.stem}]({pictures.name}/{diagnostics.name})", ""]
        entropy = _plot_entropy(bench_groups, pictures / f"{stem}_entropy.png")
        if entropy is not None:
            lines += [f"Entropy of the predictions on {eval_name} (labelled pixels, summed over seeds, as a share "
                      "of each method's pixels): solid where the prediction is right, dashed where it is wrong; "
                      "x in nats up to ln C.", "", f"![{entropy.stem}]({pictures.name}/{entropy.name})", ""]
            lines += _entropy_table(bench_groups, eval_name)
        lines += ["Provenance:", ""]
        for g in bench_groups:
            times = [r.train_seconds for r in g.runs if r.train_seconds is not None]
            env = g.runs[0].env
            command = " ".join(env.get("command", [])) or "?"
            where = (f"{env.get('device', '?')}, {env.get('cpu_threads', '?')} threads, torch {env.get('torch', '?')}, "
                     f"world size {env.get('world_size', 1)}")
            took = f"; median training time {statistics.median(times) / 60:.1f} min" if times else ""
            seeds = (f"seeds {sorted(g.seeds)}; `{command}` (seed varied)" if len(g.runs) > 1 else
                     f"one seed ({g.seeds[0]}; no spread measured); `{command}`")
            lines.append(f"- {g.label} / {g.model}: {seeds}; {where}{took}")
        lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    if claims:
        lines += claims_table(groups, diagnoses=diagnoses)
    out.write_text("\n".join(lines))
    return out


def _pseudo_label_precision_table(groups: list[Group], classes: list[str]) -> list[str]:
    """Per-class precision of the pseudo-labels (``pl_precision`` of the training log, against the
    target's training labels) over the last quarter of each run's logged rows, then over seeds."""
    rows = []
    for g in groups:
        per_run = []
        for run in g.runs:
            logged = [m["pl_precision"] for m in run.metrics if isinstance(m.get("pl_precision"), dict)]
            if logged:
                per_run.append(logged[len(logged) - max(1, len(logged) // 4):])
        if not per_run:
            continue
        vals = []
        for c in classes:
            run_means = [statistics.fmean(v) for v in ([row[c] for row in tail if row.get(c) is not None]
                                                       for tail in per_run) if v]
            vals.append(statistics.fmean(run_means) if run_means else None)
        rows.append(f"| {g.name} | " + " | ".join("–" if v is None else f"{v * 100:.0f}" for v in vals) + " |")
    if not rows:
        return []
    return ["Per-class precision (%) of the pseudo-labels over the last quarter of training (the share of "
            "the pixels pseudo-labelled c whose target label is c; diagnostics only, never used in training):", "",
            "| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes), *rows, ""]


def _offline_pseudo_label_steps(run: Run) -> list[tuple[str, dict]]:
    """(step folder, summary) of the offline pseudo-label steps whose labels a pipeline stage
    trained on: the step folders its config names (``…/stages/NN_step/pseudo_labels``) that wrote a
    summary scored against the split's labels."""
    if run.path.parent.name != "stages":
        return []
    text = (run.path / "config.yaml").read_text()
    found = []
    for folder in dict.fromkeys(re.findall(r"stages/(\d+_[\w.-]+)/pseudo_labels", text)):
        summary_path = run.path.parent / folder / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            if summary.get("accuracy_vs_labels") is not None:
                found.append((folder, summary))
    return found


def _offline_pseudo_label_table(groups: list[Group], classes: list[str]) -> list[str]:
    """The offline pseudo-labels each pipeline stage trained on, against the split's labels (means
    over seeds): the fraction of pixels labelled, their accuracy and per class the precision / the
    share of the class's pixels labelled correctly — over the seeds whose step recorded per-class
    figures, counted in the seeds column where they are fewer."""
    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v * 100:.0f}"

    rows = []
    for g in groups:
        steps: dict[str, list[dict]] = defaultdict(list)
        for run in g.runs:
            for folder, summary in _offline_pseudo_label_steps(run):
                steps[folder].append(summary)
        for folder, summaries in steps.items():
            labelled = mean([s.get("labelled_fraction", 1.0) for s in summaries])
            accuracy = mean([s["accuracy_vs_labels"] for s in summaries])
            recorded = [s["per_class"] for s in summaries if isinstance(s.get("per_class"), dict)]
            seeds = str(len(summaries))
            if 0 < len(recorded) < len(summaries):
                seeds += f" (per class {len(recorded)})"
            cells = []
            for c in classes:
                per_class = [v for table in recorded if (v := table.get(c))]
                if not per_class:
                    cells.append("–")
                    continue
                cells.append(f"{pct(mean([v['precision'] for v in per_class]))}/"
                             f"{pct(mean([v['correct'] for v in per_class]))}")
            rows.append(f"| {g.name} | {folder} | {seeds} | {pct(labelled)} | {pct(accuracy)} | "
                        + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["Offline pseudo-labels each pipeline stage trained on, against the target's training labels "
            "(diagnostics only; means over seeds): the share of pixels labelled, their accuracy, and per "
            "class the precision of the pseudo-label / the share of the class's pixels labelled correctly "
            "(%; \"–/0\": no pixel was given that label; \"–\" per class: not recorded by that run; seeds "
            "\"3 (per class 2)\": the per-class cells are means over the 2 seeds that recorded them).", "",
            "| method | step | seeds | labelled | accuracy | " + " | ".join(classes) + " |",
            "|---|---|---|---|---|" + "---|" * len(classes), *rows, ""]


# Classes that look alike and that TigDA's text guidance means to separate (its paper's examples,
# plus the vehicles): the report shows how often each is predicted as the other.
SIMILAR_PAIRS = (("person", "rider"), ("road", "sidewalk"), ("car", "truck"), ("car", "bus"), ("truck", "bus"))


def _similar_pairs_table(groups: list[Group], classes: list[str]) -> list[str]:
    """For each pair (a, b) of :data:`SIMILAR_PAIRS` in ``classes``: the share (%) of a's labelled
    pixels predicted b and of b's predicted a (rows of each run's confusion matrix; mean over seeds)."""
    index = {c: i for i, c in enumerate(classes)}
    directed = [(a, b) for x, y in SIMILAR_PAIRS if x in index and y in index for a, b in ((x, y), (y, x))]
    rows = []
    for g in groups:
        mats = [np.asarray(row["confusion"], dtype=np.float64) for row in g.results if row.get("confusion")]
        if not mats or not directed:
            continue
        cells = []
        for a, b in directed:
            shares = [m[index[a], index[b]] / m[index[a]].sum() for m in mats if m[index[a]].sum() > 0]
            cells.append(f"{statistics.fmean(shares) * 100:.1f}" if shares else "–")
        rows.append(f"| {g.name} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["Confusion between similar classes (% of the pixels labelled a that are predicted b, mean over seeds):", "",
            "| method | " + " | ".join(f"{a} → {b}" for a, b in directed) + " |",
            "|---|" + "---|" * len(directed), *rows, ""]


def _entropy_table(groups: list[Group], eval_name: str) -> list[str]:
    """Mean prediction entropy (nats; from each run's entropy histogram, at the bin centres) over all,
    correctly and wrongly predicted labelled pixels, mean ± std over seeds."""
    rows = []
    for g in groups:
        per_run = []
        for row in g.results:
            hist = row.get("entropy_histogram")
            if not hist:
                continue
            correct, wrong = (np.asarray(hist[k], dtype=np.float64) for k in ("correct", "wrong"))
            centres = (np.arange(len(correct)) + 0.5) * hist["max"] / len(correct)
            per_run.append([float((h * centres).sum() / h.sum()) if h.sum() else None
                            for h in (correct + wrong, correct, wrong)])
        if not per_run:
            continue
        cells = []
        for k in range(3):
            vals = [v for r in per_run if (v := r[k]) is not None]
            cells.append("–" if not vals else f"{statistics.fmean(vals):.3f} ± " + (
                f"{statistics.stdev(vals):.3f}" if len(vals) > 1 else "–"))
        rows.append(f"| {g.name} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [f"Mean entropy (nats) of the predictions on {eval_name}, mean ± std over seeds:", "",
            "| method | all pixels | correct | wrong |", "|---|---|---|---|", *rows, ""]


def _per_set_table(bench: str, names: list[str], by_bench: dict, key: str, order: list[Group]) -> list[str]:
    """Methods × evaluation sets of one benchmark, the headline metric's mean ± std."""
    cell = {(g.label, g.model, name): g for name in names for g in by_bench.get((bench, name), [])}
    lines = [f"{key} (%) on every evaluation set of {bench}:", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for g in order:
        vals = [cell.get((g.label, g.model, name)) for name in names]
        lines.append(f"| {g.name} | " + " | ".join("–" if v is None else _fmt(v.mean(key), v.std(key))
                                                   for v in vals) + " |")
    return lines + [""]


# ---------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # a legend placed outside the axes stays in
    plt.close(fig)
    return path


def _legend(ax, **kw) -> None:
    if any(not label.startswith("_") for label in ax.get_legend_handles_labels()[1]):
        ax.legend(**kw)


def _plot_per_class(groups: list[Group], classes: list[str], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(8, len(classes) * 0.7), 3.6))
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(classes))
    # Beyond the default cycle's 10 colours, 20 distinct ones (no two rows share a colour).
    colours = plt.get_cmap("tab20").colors if len(groups) > 10 else [f"C{i}" for i in range(10)]
    for i, g in enumerate(groups):
        vals = [g.class_mean(c) for c in classes]
        ax.bar(x + i * width, [0 if v is None else v * 100 for v in vals], width, label=g.name,
               color=colours[i % len(colours)])
    ax.set_xticks(x + 0.4 - width / 2, classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    # Below the axes: over them it hides the bars of the frequent classes.
    _legend(ax, fontsize=7, ncol=min(len(groups), 5), loc="upper center", bbox_to_anchor=(0.5, -0.45),
            frameon=False)
    return _save(plt, fig, path)


def _plot_curves(groups: list[Group], path: Path) -> Path | None:
    """Training loss and the logged evaluations (markers) of every run, on one iteration axis: a
    run that continues another (``model.init_from``, ``schedule.offset``) starts where that one
    ended (:func:`start_iteration`); the x-axis spans every run from its start to its last iteration."""
    plt = _plt()
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 3.4))
    drawn, evals_per_run, span = False, [], []
    for gi, g in enumerate(groups):
        for i, run in enumerate(g.runs):
            span += [run.start, run.start + (run.iters or 0)]
            train = [m for m in run.metrics if "eval" not in m]
            loss_keys = [k for k in (train[0] if train else {}) if k.startswith("loss")]
            if train and loss_keys:
                total = [sum(m.get(k, 0.0) for k in loss_keys) for m in train]
                ax_loss.plot([run.start + m["iter"] for m in train], total, alpha=0.7, color=f"C{gi}",
                             label=g.name if i == 0 else None)
                span += [run.start + m["iter"] for m in train]
                drawn = True
            evals = [m for m in run.metrics if m.get("eval") == g.eval_name and "mIoU" in m]
            evals_per_run.append(len(evals))
            if evals:
                ax_miou.plot([run.start + m["iter"] for m in evals], [m["mIoU"] * 100 for m in evals], marker="o",
                             ms=5, alpha=0.8, color=f"C{gi}", label=g.name if i == 0 else None)
    if not drawn:
        plt.close(fig)
        return None
    continued = any(run.start for g in groups for run in g.runs)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_miou):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(min(span) - 0.02 * (max(span) - min(span) or 1), max(span) + 0.02 * (max(span) - min(span) or 1))
        ax.set_xlabel("iteration" + (" (a continued run starts where the run it continues ended)"
                                     if continued else ""), fontsize=8 if continued else None)
    ax_loss.set_title("training loss (sum of terms)")
    ax_miou.set_title("mIoU on the evaluation set (each marker one evaluation)")
    ax_miou.set_ylabel("mIoU (%)")
    top = max((line.get_ydata().max() for line in ax_miou.get_lines()), default=0.0)
    ax_miou.set_ylim(0, max(5.0, top * 1.15))
    if max(evals_per_run, default=0) <= 1:
        ax_miou.text(0.5, 0.5, "one evaluation per run (the final\ncheckpoint; eval_every=0): no curve",
                     transform=ax_miou.transAxes, ha="center", va="center", fontsize=9, color="0.35")
    _legend(ax_loss, fontsize=7)
    _legend(ax_miou, fontsize=7)
    return _save(plt, fig, path)


def _plot_pseudo_labels(groups: list[Group], path: Path) -> Path | None:
    """Pseudo-label accuracy and confidence weight over training (the ``pl_acc`` and
    ``pseudo_weight`` entries that self-training methods log)."""
    series = [(gi, g, run) for gi, g in enumerate(groups) for run in g.runs
              if any("pl_acc" in m or "pseudo_weight" in m for m in run.metrics)]
    if not series:
        return None
    plt = _plt()
    fig, (ax_acc, ax_w) = plt.subplots(1, 2, figsize=(10, 3.4))
    labelled: set[str] = set()
    for gi, g, run in series:
        rows = [m for m in run.metrics if "eval" not in m]
        label = g.name if g.name not in labelled else None
        labelled.add(g.name)
        for ax, key in ((ax_acc, "pl_acc"), (ax_w, "pseudo_weight")):
            pts = [(run.start + m["iter"], m[key]) for m in rows if m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), alpha=0.7, color=f"C{gi}", label=label)
    ax_acc.set_title("pseudo-label pixel accuracy (diagnostics)")
    ax_w.set_title("pseudo-label weight q")
    continued = any(run.start for _, _, run in series)
    for ax in (ax_acc, ax_w):  # a continued run from where it starts, as in the curves
        ax.set_xlabel("iteration" + (" (a continued run starts where the run it continues ended)"
                                     if continued else ""), fontsize=8 if continued else None)
        ax.set_ylim(0, 1)
        _legend(ax, fontsize=7)
    return _save(plt, fig, path)


def _plot_entropy(groups: list[Group], path: Path) -> Path | None:
    """Per-pixel prediction entropy of each method (the ``entropy_histogram`` of its eval rows)."""
    hists = []
    for gi, g in enumerate(groups):
        rows = [row["entropy_histogram"] for row in g.results if row.get("entropy_histogram")]
        if rows:
            correct = np.sum([r["correct"] for r in rows], axis=0).astype(np.float64)
            wrong = np.sum([r["wrong"] for r in rows], axis=0).astype(np.float64)
            hists.append((gi, g.name, rows[0]["max"], correct, wrong))
    if not hists:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for gi, label, top, correct, wrong in hists:
        total = max(correct.sum() + wrong.sum(), 1.0)
        centres = (np.arange(len(correct)) + 0.5) * top / len(correct)
        ax.plot(centres, correct / total, color=f"C{gi}", label=label)
        ax.plot(centres, wrong / total, color=f"C{gi}", linestyle="--")
    ax.set_yscale("log")
    ax.set_xlabel("entropy (nats)")
    ax.set_ylabel("share of pixels")
    # The line styles in the legend too (grey: they apply to every method's colour).
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    styles = [Line2D([], [], color="0.4", label="correctly predicted pixels"),
              Line2D([], [], color="0.4", linestyle="--", label="wrongly predicted pixels")]
    ax.legend(handles=handles + styles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return _save(plt, fig, path)


def _plot_confusions(groups: list[Group], classes: list[str], path: Path) -> Path | None:
    """Each method's confusion matrix (summed over seeds), **row-normalised**: a row is one
    ground-truth class, its cells the shares of that class's labelled pixels predicted as each
    class (a row sums to 1, less any pixels predicted outside the classes — eval.json's extra last
    column, which only scored prediction files fill and which is not drawn). A class without
    labelled pixels is a grey row. One colour bar for all."""
    mats = []
    for g in groups:
        conf = [np.asarray(row["confusion"], dtype=np.float64) for row in g.results if row.get("confusion")]
        if conf:
            mats.append((g.name, np.sum(conf, axis=0)))
    if not mats:
        return None
    plt = _plt()
    n, cols = len(classes), min(len(mats), 2)
    rows = math.ceil(len(mats) / cols)
    side = max(4.5, 0.32 * n + 1.6)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 1.0, side * rows + 0.5), squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    image = None
    for ax, (label, mat) in zip(axes.flat, mats):
        totals = mat.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(totals > 0, mat[:, :n] / np.where(totals > 0, totals, 1), np.nan)
        image = ax.imshow(norm, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted class", fontsize=9)
        ax.set_ylabel("ground-truth class", fontsize=9)
    for ax in list(axes.flat)[len(mats):]:
        ax.axis("off")
    fig.suptitle("Confusion matrices, row-normalised: each row is the share of that ground-truth\n"
                 "class's labelled pixels predicted as each class", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03 if rows == 1 else 0.02, pad=0.02)
    bar.set_label("share of the row's labelled pixels", fontsize=9)
    return _save(plt, fig, path, layout=False)  # laid out before the colour bar took its place
