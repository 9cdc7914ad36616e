"""tools/minicity_results.sh, the script behind docs/results/minicity.md: every run it starts composes
(a run that cannot start would stop the campaign hours in), its queue records finished runs only and
resumes stopped ones, and its report-only mode writes the page from run records."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from udaseg import config as config_lib

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "tools" / "minicity_results.sh"


def _results_recipes() -> list[tuple[str, str, str]]:
    """(run name, benchmark, config arguments) of every run that tools/minicity_results.sh makes."""
    script = SCRIPT.read_text()
    variables = dict(re.findall(r"^(\w+)='([^']*)'", script, flags=re.M))
    body = script.split("RECIPES=(", 1)[1].split("\n)", 1)[0]
    recipes = []
    for line in body.splitlines():
        line = line.strip()
        if not line.startswith('"'):
            continue
        name, _label, benches, args = shlex.split(line)[0].split("|")
        args = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], args)
        recipes += [(name, bench, args) for bench in benches.split()]
    return recipes


RESULTS_RECIPES = _results_recipes()


def test_the_results_script_lists_its_runs():
    assert len(RESULTS_RECIPES) >= 40
    assert ("hrda", "minicity_gta2cs", "minicity_rcs minicity_hrda benchmark.target.pseudo_margins=[8,60,8,8]") \
        in RESULTS_RECIPES


@pytest.mark.parametrize("name,bench,args", RESULTS_RECIPES, ids=[f"{b}:{n}" for n, b, _ in RESULTS_RECIPES])
def test_every_run_of_the_results_script_composes(name, bench, args, tmp_path):
    """Each run of the results campaign is composed exactly as the script starts it: on the ImageNet
    preset, on its benchmark."""
    cfg = config_lib.compose(["minicity_cpu", *args.split(), f"benchmark={bench}", "seed=0", "threads=1"])
    config_lib.validate(cfg)
    assert cfg.benchmark.name == bench
    assert cfg.model.pretrained == "imagenet"
    if cfg.get("stages"):  # a pipeline: every stage composes too
        from udaseg.engine.pipeline import plan

        assert len(plan(cfg, tmp_path / "run")) >= 2


def test_every_claim_is_answered_by_rows_the_results_script_makes(tmp_path):
    """Each claim of the claims table names two (benchmark table, label) rows that the campaign
    produces — with the label the script gives each run and each pipeline stage's own — so no claim
    stays "not run yet" for a misspelt label or a table in another label space."""
    from omegaconf import OmegaConf

    from udaseg.engine.pipeline import plan
    from udaseg.report import CLAIMS, benchmark_name, method_label

    labels = dict(re.findall(r'^  "(\w[^|]*)\|([^|]+)\|', SCRIPT.read_text(), flags=re.M))
    rows = set()
    for name, bench, args in RESULTS_RECIPES:
        cfg = config_lib.compose(["minicity_cpu", *args.split(), f"benchmark={bench}", "seed=0", "threads=1",
                                  f"method.label={labels[name]}"])
        trained = [c for s, c in plan(cfg, tmp_path / "run") if not s.is_step] if cfg.get("stages") else [cfg]
        for c in trained:
            c = OmegaConf.to_container(c, resolve=True)
            rows.add((benchmark_name(c), method_label(c)))
    for claim in CLAIMS:
        assert (claim.benchmark, claim.better) in rows, claim.text
        assert (claim.benchmark, claim.than) in rows, claim.text


def test_report_only_writes_the_page_from_the_records(tmp_path):
    """REPORT_ONLY=1: no data, no runs — the report (with the claims table) from the committed records."""
    records = ROOT / "docs" / "results" / "runs" / "minicity_gta2cs"
    runs = sorted(p for p in records.glob("source_only_s*") if (p / "eval.json").exists())[:2]
    assert runs, f"no committed source-only record under {records}"
    copy = tmp_path / "runs" / "minicity_gta2cs"
    for run in runs:
        shutil.copytree(run, copy / run.name)
    out = tmp_path / "page" / "minicity.md"
    env = {**os.environ, "REPORT_ONLY": "1", "RECORDS": str(tmp_path / "runs"), "REPORT": str(out)}
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True, text=True, timeout=300)
    page = out.read_text()
    assert "## minicity_gta2cs" in page and "## Claims" in page
    assert re.search(rf"\| source_only \| minicity_lite0 \| {len(runs)} ", page)
    assert "| HRDA > DAFormer (GTA) | minicity_gta2cs | hrda vs daformer | – | – | – | not run yet (hrda) |" in page
    assert "| MIC > HRDA (ACDC) | minicity_cs2acdc | hrda+mic vs hrda | – | – | – | not run yet (hrda+mic) |" in page


_FAKE_UDASEG = r"""#!/usr/bin/env bash
# Stand-in for the udaseg command: logs its arguments; `train` fails for runs named *_s1 and otherwise
# writes what a finished run (or, resumed from stages/, a finished pipeline) leaves behind.
echo "$*" >> "$FAKE_LOG"
[[ "$1" == train ]] || exit 0
out=""; prev=""
for a in "$@"; do [[ "$prev" == --out ]] && out="$a"; prev="$a"; done
[[ "$out" == *_s1 ]] && { mkdir -p "$out"; echo half > "$out/config.yaml"; exit 1; }
mkdir -p "$out"
for f in config.yaml env.json metrics.jsonl; do echo "{}" > "$out/$f"; done
echo '{"metric": "mIoU19", "mIoU19": 0.25}' > "$out/eval.json"
if [[ -d "$out/stages" ]]; then
  echo "{}" > "$out/pipeline.json"
  for s in "$out"/stages/*/; do echo '{"mIoU19": 0.2}' > "$s/eval.json"; echo "{}" > "$s/summary.json"; done
fi
"""


def test_the_results_script_records_finished_runs_only_and_resumes_stopped_ones(tmp_path):
    """The campaign's queue, with a stand-in `udaseg`: a run that fails leaves no record and no commit
    (the queue goes on; the script exits 1 naming it), a stopped run and a stopped pipeline are resumed,
    a run stopped before its first checkpoint starts over, and each finished run is committed."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".complete").touch()
    python = venv / "bin" / "python"  # the real interpreter, so tools/env.sh finds udaseg installed from this clone
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    fake = venv / "bin" / "udaseg"
    fake.write_text(_FAKE_UDASEG)
    python.chmod(0o755)
    fake.chmod(0o755)
    runs, records, log = tmp_path / "runs", tmp_path / "records", tmp_path / "calls.log"
    bench = runs / "minicity_gta2cs"
    (bench / "source_only_s2" / "checkpoints").mkdir(parents=True)  # a run stopped at a checkpoint
    (bench / "source_only_s3" / "stages" / "01_step1").mkdir(parents=True)  # a stopped pipeline
    (bench / "source_only_s4").mkdir(parents=True)  # stopped before its first checkpoint
    (bench / "source_only_s4" / "stale").touch()
    records.mkdir()
    subprocess.run(["git", "init", "-q", str(records)], check=True)
    env = {
        **os.environ, "UDASEG_VENV": str(venv), "FAKE_LOG": str(log), "RECORDS": str(records),
        "REPORT": str(tmp_path / "page.md"), "ONLY": "source_only", "BENCHES": "minicity_gta2cs",
        "SEEDS": "0 1 2 3 4", "COMMIT": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data"), str(runs)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert f"1 run(s) did not finish: {bench}/source_only_s1" in done.stderr
    calls = log.read_text().splitlines()
    trains = [c for c in calls if c.startswith("train")]
    assert len(trains) == 5
    assert f"train --resume --out {bench}/source_only_s2 --quiet" in trains
    assert f"train --resume --out {bench}/source_only_s3 --quiet" in trains
    fresh = [c for c in trains if c.startswith("train minicity_cpu method=source_only ")]
    assert [c.split(" --out ")[1] for c in fresh] == [f"{bench}/source_only_s{s} --quiet" for s in (0, 1, 4)]
    assert "seed=4" in fresh[2] and "threads=1" in fresh[2] and "benchmark=minicity_gta2cs" in fresh[2]
    assert not (bench / "source_only_s4" / "stale").exists()  # started over, not on top of the old folder
    assert calls[-1].startswith("report ")

    got = records / "minicity_gta2cs"
    assert sorted(p.name for p in got.iterdir()) == [f"source_only_s{s}" for s in (0, 2, 3, 4)]
    assert sorted(p.name for p in (got / "source_only_s0").iterdir()) == \
        ["config.yaml", "env.json", "eval.json", "metrics.jsonl"]
    assert (got / "source_only_s3" / "pipeline.json").exists()
    assert sorted(p.name for p in (got / "source_only_s3" / "stages" / "01_step1").iterdir()) == \
        ["eval.json", "summary.json"]
    subjects = subprocess.run(["git", "-C", str(records), "log", "--format=%s"], capture_output=True, text=True,
                              check=True).stdout.split("\n")
    assert sorted(s for s in subjects if s) == [
        f"Run record: source_only on minicity_gta2cs, seed {s} (mIoU19 25.0)" for s in (0, 2, 3, 4)]

    again = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data"), str(runs)], env=env,
                           capture_output=True, text=True, timeout=300)  # a second pass retries only the failed run
    assert again.returncode == 1
    retried = [c for c in log.read_text().splitlines()[len(calls):] if c.startswith("train")]
    assert [c.split(" --out ")[1] for c in retried] == [f"{bench}/source_only_s1 --quiet"]
    assert retried[0].startswith("train minicity_cpu ")  # it failed before a checkpoint: from the beginning
