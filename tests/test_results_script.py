"""tools/minicity_results.sh, the script behind docs/results/minicity.md: every run it starts composes
(a run that cannot start would stop the campaign hours in), and its report-only mode writes the page
from run records."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
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
    assert "| HRDA > DAFormer (GTA) | minicity_gta2cs | hrda vs daformer | – | – | not run yet (hrda) |" in page
    assert "| MIC > HRDA (ACDC) | minicity_cs2acdc | hrda+mic vs hrda | – | – | not run yet (hrda+mic) |" in page
