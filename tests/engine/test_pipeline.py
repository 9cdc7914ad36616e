"""Multi-stage pipelines: stage configs, stage:// artefacts, the pseudo-label step, the data views
built from artefacts, and a 4-stage pipeline killed in stage 3 that resumes to completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from udaseg import config as config_lib
from udaseg.data.artefacts import StageView
from udaseg.data.registry import create_dataset
from udaseg.engine import pipeline
from udaseg.engine.checkpoint import load_checkpoint
from udaseg.engine.steps import PseudoLabelStepConfig, pseudo_labels
from udaseg.errors import ConfigError, DataError
from udaseg.models.inference import infer_logits

ISL = {"method": "source_only",
       "benchmark": {"source": {"dataset": "cityscapes", "root": "cityscapes",
                                "labels_from": "stage://pseudo/pseudo_labels"}}}


def _pipeline_args(tiny_train_args, stages: dict, **extra) -> list[str]:
    return tiny_train_args(**extra) + [f"stages={json.dumps(stages)}"]


# -- stage configs ------------------------------------------------------------------------------
def test_stage_config_switches_method_and_keeps_the_rest(tiny_train_args):
    base = config_lib.compose(tiny_train_args(method="advent", **{"method.adv_lambda": 0.01}))
    cfg = config_lib.compose_stage(base, {"method": "source_only", "iters": 7}, "stages.x")
    assert cfg.method.name == "source_only" and "adv_lambda" not in cfg.method  # a fresh method group
    assert cfg.iters == 7 and cfg.model.backbone_options.width == 8 and cfg.seed == base.seed
    edited = config_lib.compose_stage(base, {"method": {"ent_lambda": 0.001}}, "stages.x")
    assert edited.method.adv_lambda == 0.01 and edited.method.ent_lambda == 0.001  # a mapping edits
    sched = config_lib.compose_stage(base, {"schedule": "poly09_sgd"}, "stages.x")
    assert sched.schedule.optimizer == "sgd" and sched.schedule.power == 0.9
    with pytest.raises(ConfigError, match=r"stages\.x.*unknown key.*'method\.no_such_key'"):
        config_lib.compose_stage(base, {"method": {"no_such_key": 1}}, "stages.x")


def test_plan_chains_networks_labels_and_artefact_paths(tiny_train_args, tmp_path):
    stages = {"so": {}, "pseudo": {"step": "pseudo_labels", "rule": "argmax"}, "isl": ISL,
              "fresh": {"init_from": None, "method": {"label": "restart"}}}
    cfg = config_lib.compose(_pipeline_args(tiny_train_args, stages))
    planned = pipeline.plan(cfg, tmp_path)
    names = [s.name for s, _ in planned]
    assert names == ["so", "pseudo", "isl", "fresh"]
    so, step, isl, fresh = (c for _, c in planned)
    assert so.method.label == "so" and so.model.init_from is None
    assert step.rule == "argmax" and step.threshold == 0.9
    assert isl.method.label == "so+isl" and isl.model.init_from == str(tmp_path / "stages" / "01_so")
    assert isl.benchmark.source.labels_from == str(tmp_path / "stages" / "02_pseudo" / "pseudo_labels")
    assert fresh.model.init_from is None and fresh.method.label == "restart"


@pytest.mark.parametrize("stages, message", [
    ({"a": {"benchmark": {"source": {"subset": "stage://b/easy.txt"}}}, "b": {}}, "names no earlier stage"),
    ({"p": {"step": "pseudo_labels"}, "a": {}}, "needs a training stage before it"),
    ({"a": {}, "p": {"step": "no_such_step"}}, "unknown pipeline step 'no_such_step'"),
    ({"a": {}, "p": {"step": "pseudo_labels", "treshold": 0.5}}, r"unknown key.*treshold"),
    ({"a": {}, "b": {"init_from": "c"}, "c": {}}, "init_from 'c' is not an earlier training stage"),
    ({"a": "x"}, "expected a mapping"),
])
def test_plan_rejects_bad_stage_tables_before_anything_runs(tiny_train_args, tmp_path, stages, message):
    cfg = config_lib.compose(_pipeline_args(tiny_train_args, stages))
    with pytest.raises(ConfigError, match=message):
        pipeline.plan(cfg, tmp_path)
    assert not (tmp_path / "stages").exists()


def test_lr_follows_the_schedule_horizon_and_offset(tiny_train_args):
    """ISL-style: poly 0.9 over a 90-iteration horizon, the run trains 10 iterations from 20."""
    from udaseg.data.catalog import get_label_space
    from udaseg.methods import MethodContext, create_method

    cfg = config_lib.compose(tiny_train_args(iters=10, schedule="poly09_sgd", **{
        "schedule.horizon": 90, "schedule.offset": 20, "schedule.lr": 1e-2, "schedule.warmup_iters": 0}))
    ctx = MethodContext(cfg.model, cfg.schedule, cfg.schedule.horizon, get_label_space("cityscapes19"),
                        torch.device("cpu"))
    method = create_method(cfg.method, ctx)
    method.set_iteration(3 + cfg.schedule.offset)  # what the trainer does at t = 3
    assert method.lr == pytest.approx(1e-2 * (1 - 23 / 90) ** 0.9, rel=1e-12)  # 7.6717e-3
    with pytest.raises(ConfigError, match="schedule.horizon"):
        config_lib.compose(tiny_train_args(iters=10, **{"schedule.horizon": 25, "schedule.offset": 20}))


# -- data views from artefacts -------------------------------------------------------------------
def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def test_stage_view_subsets_and_relabels(minicity_small, tmp_path):
    ds = create_dataset("cityscapes", minicity_small / "cityscapes", "train")
    names = [s.name for s in ds.samples]
    (tmp_path / "easy.txt").write_text(f"{names[2]}\n{names[0]}\n")
    h, w = ds.load(0)["img"].shape[:2]
    for i, name in enumerate(names[:3]):
        _write_png(tmp_path / "pl" / f"{name}.png", np.full((h // 2, w // 2), i, np.uint8))  # half size
    view = StageView(ds, subset=str(tmp_path / "easy.txt"), labels_from=str(tmp_path / "pl"),
                     pseudo_labels=str(tmp_path / "pl"))
    assert len(view) == 2 and [s.name for s in view.samples] == [names[0], names[2]]  # the dataset's order
    item = view[1]
    assert item["name"] == names[2] and item["label"].shape == (h, w)  # resized to the image
    assert item["label"].dtype == torch.int64 and torch.all(item["label"] == 2)
    assert torch.equal(item["pseudo_label"], item["label"]) and view.label_space.name == "cityscapes19"


def test_stage_view_errors_name_the_file(minicity_small, tmp_path):
    ds = create_dataset("cityscapes", minicity_small / "cityscapes", "train")
    (tmp_path / "bad.txt").write_text("no_such_image\n")
    with pytest.raises(DataError, match=r"bad\.txt: 1 name\(s\) are not samples.*no_such_image"):
        StageView(ds, subset=str(tmp_path / "bad.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.txt is empty"):
        StageView(ds, subset=str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match=r"missing label map .*pl/.*\.png"):
        StageView(ds, labels_from=str(tmp_path / "pl"))[0]
    name = ds.samples[0].name
    _write_png(tmp_path / "pl" / f"{name}.png", np.full((4, 4), 19, np.uint8))
    with pytest.raises(DataError, match=r"ids \[19\] are outside the label space"):
        StageView(ds, labels_from=str(tmp_path / "pl"))[0]


# -- the pseudo-label step -----------------------------------------------------------------------
@pytest.mark.parametrize("rule, threshold", [("argmax", None), ("threshold", "median"), ("threshold", 1.01)])
def test_pseudo_label_step_applies_its_rule(tiny_run, tmp_path, rule, threshold):
    cfg = config_lib.load_resolved(tiny_run / "config.yaml")
    ctx = pipeline.StepContext(cfg, tmp_path, tiny_run, torch.device("cpu"))
    if threshold == "median":  # of the first image's confidences: about half its pixels are kept
        first = next(ctx.batches("target"))
        threshold = float(infer_logits(ctx.network(), first["img"]).softmax(1).amax(1).median())
    options = PseudoLabelStepConfig(rule=rule, threshold=threshold if threshold is not None else 0.9)
    summary = pseudo_labels(ctx, options)
    model = ctx.network()
    total = kept = 0
    for batch in ctx.batches("target"):
        conf, pred = infer_logits(model, batch["img"]).softmax(1)[0].max(0)
        keep = torch.ones_like(conf, dtype=torch.bool) if rule == "argmax" else conf >= threshold
        expected = torch.where(keep, pred, torch.full_like(pred, 255))
        written = np.asarray(Image.open(tmp_path / "pseudo_labels" / f"{batch['name'][0]}.png"))
        assert np.array_equal(written, expected.numpy().astype(np.uint8))
        total, kept = total + keep.numel(), kept + int(keep.sum())
    assert summary["images"] == len(ctx.dataset("target"))
    assert summary["labelled_fraction"] == pytest.approx(kept / total)
    if rule == "threshold" and threshold > 1:
        assert summary["labelled_fraction"] == 0.0 and "accuracy_vs_labels" not in summary
    else:
        assert 0.0 <= summary["accuracy_vs_labels"] <= 1.0  # MiniCity's target has labels: a diagnostic


# -- end to end ----------------------------------------------------------------------------------
def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "udaseg", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


TINY_DAF = ["model=minicity_deeplab_daf", "model.backbone_options.width=8", "model.backbone_options.depths=[1,1,1,1]",
            "model.depth.up_channels=4", "model.depth.fusion_channels=8", "model.depth.kernel_size=3"]


def test_daf_ida_pipeline_killed_in_stage_3_resumes_to_completion(tiny_train_args, tmp_path):
    """minicity_daf_ida on a tiny MiniCity: daf → pseudo → isl → rank → ida; SIGKILLed while ISL
    (stage 3) trains, resumed with --resume to the end."""
    args = [a for a in tiny_train_args("daf_ida", benchmark="minicity_synthia2cs", **{"method.disc_width": 4})
            if not a.startswith("model")] + TINY_DAF + [
        "minicity_daf_ida", "stages.isl.iters=24", "stages.isl.checkpoint_every=4", "stages.ida.iters=4",
        "stages.isl.benchmark.source.crop_size=[32,64]", "stages.ida.benchmark.source.crop_size=[32,64]"]
    run = tmp_path / "run"
    proc = _cli(["train", *args, "--out", str(run), "--quiet"])
    ckpt = run / "stages" / "03_isl" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["iter"] >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the pipeline ended before stage 3 could be killed: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "eval.json").exists() and not (run / "stages" / "04_rank").exists()
    first = run / "stages" / "01_daf" / "checkpoints" / "last.pt"
    before = first.stat().st_mtime_ns, (run / "stages" / "02_pseudo" / "summary.json").stat().st_mtime_ns

    resumed = _cli(["train", "--resume", "--out", str(run), "--quiet"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    # Finished stages were not redone; stage 3 continued from its checkpoint, logging each row once.
    assert (first.stat().st_mtime_ns, (run / "stages" / "02_pseudo" / "summary.json").stat().st_mtime_ns) == before
    rows = [json.loads(line) for line in (run / "stages" / "03_isl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "eval" not in r] == list(range(1, 25))
    state = json.loads((run / "pipeline.json").read_text())
    assert state["complete"] and [s["stage"] for s in state["stages"]] == ["daf", "pseudo", "isl", "rank", "ida"]
    final = json.loads((run / "eval.json").read_text())
    last = json.loads((run / "stages" / "05_ida" / "eval.json").read_text())
    assert final["stage"] == "ida" and final["mIoU16"] == last["mIoU16"]
    ida_cfg = OmegaConf.load(run / "stages" / "05_ida" / "config.yaml")
    assert ida_cfg.model.init_from == str(run / "stages" / "03_isl") and ida_cfg.method.label == "daf+isl+ida"
    assert ida_cfg.benchmark.source.subset == str(run / "stages" / "04_rank" / "easy.txt")
    rank = run / "stages" / "04_rank"
    easy, hard = ((rank / f).read_text().split() for f in ("easy.txt", "hard.txt"))
    assert len(easy) == int(0.66 * (len(easy) + len(hard))) and not set(easy) & set(hard)
    assert sorted(p.stem for p in (rank / "pseudo_labels").glob("*.png")) == sorted(easy)

    from udaseg.report import expand_run_dirs

    expected = ["01_daf", "03_isl", "05_ida"]  # a report row per training stage
    assert [p.name for p in expand_run_dirs([run])] == [p.name for p in expand_run_dirs([tmp_path])] == expected


def test_method_inputs_load_tensor_files_and_run_networks(tiny_run, tmp_path):
    from udaseg.engine.checkpoint import load_input, network_weights
    from udaseg.errors import UdasegError

    torch.save({"centroids": torch.arange(6.0).view(2, 3)}, tmp_path / "c.pt")
    assert torch.equal(load_input(str(tmp_path / "c.pt"))["centroids"], torch.arange(6.0).view(2, 3))
    weights = load_input(f"{tiny_run}:student")
    assert weights.keys() == network_weights(tiny_run)[0].keys() == load_input(str(tiny_run)).keys()
    with pytest.raises(UdasegError, match=r"inputs\.centroids: .*nope\.pt does not exist"):
        load_input(str(tmp_path / "nope.pt"), "inputs.centroids")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(UdasegError, match=r"cannot read .*bad\.pt"):
        load_input(str(tmp_path / "bad.pt"))


def test_stage_stream_with_another_dataset_starts_from_the_stream_defaults(tiny_train_args):
    base = config_lib.compose(tiny_train_args(benchmark="minicity_synthia2cs", **{
        "benchmark.source.options": "{depth: true}"}))
    cfg = config_lib.compose_stage(base, ISL, "stages.isl")
    source = cfg.benchmark.source
    assert source.dataset == "cityscapes" and dict(source.options) == {} and source.crop_size is None
    assert source.labels_from == "stage://pseudo/pseudo_labels"  # resolved by the pipeline, not here
    same = config_lib.compose_stage(base, {"benchmark": {"source": {"flip_prob": 0.0}}}, "stages.x")
    assert dict(same.benchmark.source.options) == {"depth": True} and same.benchmark.source.crop_size == [32, 64]


@pytest.mark.parametrize("args", [
    ["bafft_paper", "benchmark=gta2cs"], ["daf_ida_paper", "benchmark=synthia2cs"],
    ["daf_ida_paper", "daf_ida_seven", "benchmark=synthia2cs"],
    ["daf_ida_paper", "daf_ida_mapillary", "benchmark=synthia2mapillary"], ["diga_paper", "benchmark=gta2cs"],
    ["minicity_cpu", "minicity_bafft", "benchmark=minicity_gta2cs"],
    ["minicity_cpu", "minicity_daf_ida", "benchmark=minicity_synthia2cs"],
    ["minicity_diga"], ["minicity_diga_fda"], ["minicity_diga_semisup"], ["minicity_diga_synthia"]])
def test_shipped_pipelines_plan(args, tmp_path):
    """Every stage of the shipped pipelines composes and checks (the paper settings included)."""
    planned = pipeline.plan(config_lib.compose(args), tmp_path)
    trains = [c for s, c in planned if not s.is_step]
    assert len(trains) >= 2 and trains[-1].model.init_from
    labels = [c.method.label for c in trains]
    assert len(set(labels)) == len(labels)  # one report row per training stage


def test_experiment_dotted_keys_edit_a_group_the_file_selects(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("schedule: poly09_sgd\nschedule.horizon: 250000\nmodel.head_options: {two_branch_quirk: true}\n")
    cfg = config_lib.compose([str(exp), "benchmark=gta2cs", "method=advent", "model=deeplabv2_r101"])
    assert cfg.schedule.optimizer == "sgd" and cfg.schedule.horizon == 250000
    assert cfg.model.head_options.two_branch_quirk is True
    exp.write_text("schedule: poly09_sgd\nschedule.no_such_key: 1\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml.*schedule\.no_such_key"):
        config_lib.compose([str(exp), "benchmark=gta2cs", "method=advent", "model=deeplabv2_r101"])


def test_a_split_step_may_come_first_and_networks_of_stages_resolve(tiny_train_args, tmp_path):
    stages = {"split": {"step": "semisup_split", "fraction": 0.5},
              "sup": {"benchmark": {"source": {"dataset": "cityscapes", "root": "cityscapes",
                                               "subset": "stage://split/labelled.txt"}}},
              "next": {"inputs": {"net": "stage://sup:teacher", "file": "stage://split/x.pt"}}}
    planned = pipeline.plan(config_lib.compose(_pipeline_args(tiny_train_args, stages)), tmp_path)
    nxt = planned[2][1]
    assert nxt.inputs.net == f"{tmp_path / 'stages' / '02_sup'}:teacher"
    assert nxt.inputs.file == str(tmp_path / "stages" / "01_split" / "x.pt")
    assert planned[1][1].model.init_from is None  # nothing trained before it


def test_pseudo_labels_at_the_network_input_size(tiny_run, tmp_path):
    """at_input_size: labels of the test_scale-resized image (BAFFT, ISL), read back at full size."""
    cfg = config_lib.load_resolved(tiny_run / "config.yaml")
    ctx = pipeline.StepContext(cfg, tmp_path, tiny_run, torch.device("cpu"))
    summary = pseudo_labels(ctx, PseudoLabelStepConfig(rule="argmax", test_scale=[64, 32], at_input_size=True))
    first = next(ctx.batches("target"))
    h, w = first["img"].shape[-2:]  # 64×128 stored, 32×64 at the input size
    written = np.asarray(Image.open(tmp_path / "pseudo_labels" / f"{first['name'][0]}.png"))
    expected = infer_logits(ctx.network(), first["img"], test_scale=[64, 32], out_size=(h // 2, w // 2)).argmax(1)[0]
    assert written.shape == (h // 2, w // 2) and np.array_equal(written, expected.numpy().astype(np.uint8))
    assert 0.0 <= summary["accuracy_vs_labels"] <= 1.0
    assert list(summary["per_class"]) == list(ctx.label_space.classes)  # labelled / correct / precision per class
    view = StageView(ctx.dataset("target"), labels_from=str(tmp_path / "pseudo_labels"))
    assert view[0]["label"].shape == (h, w)  # nearest back to the image for the training transforms
