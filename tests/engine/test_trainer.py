"""The training loop end to end on a tiny MiniCity: the run directory contract, the methods'
streams, stopping on bad losses, refusing bad resumes, and a SIGKILLed run that resumes to the
same result as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from udaseg import config as config_lib
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_checkpoint
from udaseg.errors import ConfigError, DataError, UdasegError
from udaseg.methods import register_method
from udaseg.methods.source_only import SourceOnly, SourceOnlyConfig

CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_contract(tmp_path, tiny_train_args):
    run = tmp_path / "run"
    final = trainer.train(config_lib.compose(tiny_train_args(iters=4)), run, progress=False)

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["iters"] == 4 and cfg["method"]["name"] == "source_only" and cfg["model"]["backbone"] == "tiny_cnn"
    env = json.loads((run / "env.json").read_text())
    assert {"python", "torch", "udaseg", "git_commit", "device", "seed", "command", "cpu"} <= set(env)
    assert env["device"] == "cpu" and env["world_size"] == 1

    rows = _rows(run)
    train_rows = [r for r in rows if "eval" not in r]
    assert [r["iter"] for r in train_rows] == [1, 2, 3, 4]
    assert all({"iter", "lr", "loss_seg", "time"} <= set(r) for r in train_rows)
    # schedule=minicity: lr(0) = 6e-3 · (1 − 0/4) · 1e-6 (warmup from ratio 1e-6 over 2 iterations)
    assert train_rows[0]["lr"] == pytest.approx(6e-3 * 1e-6)
    assert train_rows[2]["lr"] == pytest.approx(6e-3 * (1 - 2 / 4))
    evals = [r for r in rows if "eval" in r]
    assert len(evals) == 1 and evals[0]["final"] and evals[0]["eval"] == "cityscapes_val"
    assert set(evals[0]["per_class_iou"]) == set(CLASSES) and "mIoU" in evals[0]

    result = json.loads((run / "eval.json").read_text())
    assert result == json.loads(json.dumps(final))
    assert list(result["per_class_iou"]) == CLASSES
    assert {"mIoU19", "mIoU16", "mIoU13", "dataset", "split", "mode", "network"} <= set(result)
    assert (result["dataset"], result["split"], result["mode"], result["network"]) == ("cityscapes", "val", "whole",
                                                                                        "student")
    assert result["num_images"] == 4  # the small MiniCity's val split, each image once
    conf = np.array(result["confusion"])
    assert conf.shape == (19, 20) and conf.sum() > 0
    values = [v for v in result["per_class_iou"].values() if v is not None]
    assert result["mIoU19"] == pytest.approx(np.mean(values))

    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["iter"] == 4 and len(state["rng"]) == 1
    assert {"modules", "optimizers", "scaler", "extra"} <= set(state["method"])
    assert not list((run / "checkpoints").glob("*.tmp"))
    summary = (run / "summary.md").read_text()
    assert "cityscapes_val" in summary and "predictions.png" in summary
    assert (run / "predictions.png").stat().st_size > 0
    assert list((run / "summary_files").glob("*.png"))


@dataclass
class _RecSourceConfig(SourceOnlyConfig):
    name: str = "_rec_source"


@dataclass
class _RecTargetConfig(SourceOnlyConfig):
    name: str = "_rec_target"


SEEN: list = []


@register_method("_rec_source")
class _RecordingUDA(SourceOnly):
    """source_only that records its batches and asks for target batches like a UDA method."""

    Config = _RecSourceConfig
    uses_target = True

    def train_step(self, source, target, it):
        SEEN.append((source, target))
        return super().train_step(source, target, it)


@register_method("_rec_target")
class _RecordingOracle(_RecordingUDA):
    Config = _RecTargetConfig
    labelled_stream = "target"
    uses_target = False


def test_streams_and_that_target_labels_never_reach_the_method(tmp_path, tiny_train_args):
    SEEN.clear()
    trainer.train(config_lib.compose(tiny_train_args("_rec_source", iters=2)), tmp_path / "a", progress=False)
    (src, tgt), _ = SEEN
    assert src["img"].dtype == torch.uint8 and tuple(src["img"].shape) == (2, 3, 32, 64)
    assert src["label"].dtype == torch.int64 and tuple(src["label"].shape) == (2, 32, 64)
    assert set(src["label"].unique().tolist()) <= set(range(19)) | {255}
    assert "label" not in tgt and tuple(tgt["img"].shape) == (2, 3, 32, 64)
    assert all(name.isdigit() for name in src["name"])  # GTA frames are NNNNN
    assert all(name.count("_") == 2 for name in tgt["name"])  # Cityscapes <city>_<seq>_<frame>
    # The oracle's labelled stream is the *target* (Cityscapes) with its labels; no second stream.
    SEEN.clear()
    trainer.train(config_lib.compose(tiny_train_args("_rec_target", iters=1)), tmp_path / "b", progress=False)
    (src, tgt), = SEEN
    assert tgt is None and "label" in src and all(name.count("_") == 2 for name in src["name"])


def test_ranks_draw_disjoint_samples():
    batches = {r: list(trainer.DrawBatchSampler(0, 3, 2, r, 2)) for r in (0, 1)}
    assert batches[0] == [[0, 1], [4, 5], [8, 9]] and batches[1] == [[2, 3], [6, 7], [10, 11]]
    resumed = list(trainer.DrawBatchSampler(2, 3, 2, 1, 2))
    assert resumed == [[10, 11]]  # resuming at iteration 2 needs no sampler state
    assert trainer.rank_seed(0, 1) != trainer.rank_seed(1, 0)


def test_oracle_needs_a_target_and_uda_needs_target_data(tmp_path, tiny_train_args):
    cfg = config_lib.compose(tiny_train_args("oracle", iters=1))
    cfg.benchmark.target = None
    with pytest.raises(ConfigError, match="trains on the target's labels"):
        trainer.train(cfg, tmp_path / "r", progress=False)


def test_missing_dataset_root_names_the_path_and_the_check_command(tmp_path, tiny_train_args):
    cfg = config_lib.compose(tiny_train_args(iters=1, data_root=tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        trainer.train(cfg, tmp_path / "r", progress=False)
    assert str(tmp_path / "nowhere" / "gta") in str(err.value) and "udaseg data check gta5" in str(err.value)


@dataclass
class _NaNConfig(SourceOnlyConfig):
    name: str = "_nan_test"


@register_method("_nan_test")
class _NaNAtTwo(SourceOnly):
    Config = _NaNConfig

    def train_step(self, source, target, it):
        losses = super().train_step(source, target, it)
        return {**losses, "loss_bad": torch.tensor(float("nan") if it == 2 else 0.0)}


def test_non_finite_loss_stops_with_iteration_term_and_checkpoint(tmp_path, tiny_train_args):
    cfg = config_lib.compose(tiny_train_args("_nan_test", iters=6))
    with pytest.raises(UdasegError) as err:
        trainer.train(cfg, tmp_path / "r", progress=False)
    message = str(err.value)
    assert "iteration 2" in message and "loss_bad=nan" in message
    assert str(tmp_path / "r" / "checkpoints" / "last.pt") in message


def test_config_errors_name_key_and_file(tmp_path, tiny_train_args):
    with pytest.raises(ConfigError, match="command line: unknown key: 'schedule.learning_rate'"):
        config_lib.compose(tiny_train_args() + ["schedule.learning_rate=1"])
    with pytest.raises(ConfigError, match="'iters'"):
        config_lib.compose(tiny_train_args() + ["iters=many"])
    bad = tmp_path / "exp.yaml"
    bad.write_text("benchmark: minicity_gta2cs\nmodel: minicity_cnn\nmethod: {name: source_only, warp: 2}\n")
    with pytest.raises(ConfigError, match=f"{bad}: unknown key: 'method.warp'"):
        config_lib.compose([str(bad), "method=source_only", "schedule=minicity"])


def test_resume_refuses_a_different_config_unless_forced(tmp_path, tiny_train_args):
    run = tmp_path / "r"
    trainer.train(config_lib.compose(tiny_train_args(iters=2)), run, progress=False)
    with pytest.raises(UdasegError, match="already holds a run"):
        trainer.train(config_lib.compose(tiny_train_args(iters=2)), run, progress=False)
    args = tiny_train_args(iters=2) + ["schedule.lr=0.5"]
    with pytest.raises(ConfigError) as err:
        trainer.train(config_lib.compose(args), run, resume=True, cli_args=args, progress=False)
    assert "schedule.lr: 0.006 → 0.5" in str(err.value) and "--force" in str(err.value)
    trainer.train(config_lib.compose(args), run, resume=True, force=True, cli_args=args, progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["schedule"]["lr"] == 0.5


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "udaseg", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_sigkilled_run_resumes_to_the_same_result(tmp_path, tiny_train_args):
    # log_every=3 does not divide the checkpoint iterations: the running loss sums must survive the kill.
    args = tiny_train_args(iters=24, checkpoint_every=4, log_every=3) + ["--quiet"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _cli(["train", *args, "--out", str(straight)]).wait(timeout=300) == 0

    proc = _cli(["train", *args, "--out", str(killed)])
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["iter"] >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "eval.json").exists()
    stopped_at = load_checkpoint(ckpt)["iter"]
    assert 8 <= stopped_at < 24

    resumed = _cli(["train", "--resume", "--out", str(killed), "--quiet"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    a, b = (json.loads((d / "eval.json").read_text()) for d in (straight, killed))
    assert a["confusion"] == b["confusion"] and a["mIoU19"] == b["mIoU19"]
    wa, wb = (load_checkpoint(d / "checkpoints" / "last.pt")["method"]["modules"] for d in (straight, killed))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(_rows(straight)) == strip(_rows(killed))  # no duplicated or missing rows


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, tiny_train_args, precision):
    cfg = config_lib.compose(tiny_train_args(iters=2, precision=precision, **{"schedule.grad_clip": 1.0}))
    final = trainer.train(cfg, tmp_path / "r", progress=False)
    rows = [r for r in _rows(tmp_path / "r") if "eval" not in r]
    assert all(np.isfinite(r["loss_seg"]) for r in rows) and final["mIoU19"] is not None
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert state["method"]["scaler"] or precision == "bf16"  # fp16 keeps its loss-scale state


def _scripted_evaluations(monkeypatch, values):
    """evaluate_all returning the headline value ``values[iteration]`` (first val set)."""
    def fake(method, cfg, val_sets, device, it):
        return [{"name": "cityscapes_val", "iter": it, "metric": "mIoU19", "mIoU19": values[it],
                 "per_class_iou": {}, "confusion": [[1]]}]

    monkeypatch.setattr(trainer, "evaluate_all", fake)


def test_select_on_val_is_off_by_default_and_then_the_final_network_is_the_result(tmp_path, tiny_train_args,
                                                                                  monkeypatch):
    _scripted_evaluations(monkeypatch, {1: 0.2, 2: 0.5, 3: 0.3, 4: 0.4})
    final = trainer.train(config_lib.compose(tiny_train_args(eval_every=1)), tmp_path / "r", progress=False)
    assert final["mIoU19"] == 0.4 and "selection" not in final
    assert not (tmp_path / "r" / "checkpoints" / "best.pt").exists()


def test_select_on_val_keeps_the_best_periodic_network_and_says_so(tmp_path, tiny_train_args, monkeypatch):
    from udaseg.engine.checkpoint import locate_run
    from udaseg.report import load_run

    _scripted_evaluations(monkeypatch, {1: 0.2, 2: 0.5, 3: 0.3, 4: 0.4})
    run = tmp_path / "r"
    final = trainer.train(config_lib.compose(tiny_train_args(eval_every=1, select_on_val="true")), run, progress=False)
    assert final["mIoU19"] == 0.5 and final["iter"] == 2
    sel = final["selection"]
    assert (sel["iter"], sel["value"], sel["last_iter"], sel["last_value"]) == (2, 0.5, 4, 0.4)
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["iter"] == 2 and locate_run(run)[1].name == "best.pt"  # later stages and udaseg eval use it
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iter"] == 4  # the last network is kept
    assert json.loads((run / "eval.json").read_text())["selection"]["rule"] == "best_on_val"
    assert load_run(run).label.endswith("[best on target val]")
    finals = [r for r in _rows(run) if r.get("final")]
    assert [r["iter"] for r in finals] == [4]  # the curves end with the last network

    _scripted_evaluations(monkeypatch, {1: 0.2, 2: 0.3, 3: 0.35, 4: 0.4})  # the final network wins
    final = trainer.train(config_lib.compose(tiny_train_args(eval_every=1, select_on_val="true")), tmp_path / "w",
                          progress=False)
    assert final["selection"]["iter"] == 4 and final["mIoU19"] == 0.4
    assert load_checkpoint(tmp_path / "w" / "checkpoints" / "best.pt")["iter"] == 4
    with pytest.raises(ConfigError, match="eval_every"):
        trainer.train(config_lib.compose(tiny_train_args(select_on_val="true")), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
