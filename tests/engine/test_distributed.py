"""The same `udaseg train` command under torchrun: two gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from udaseg.engine.checkpoint import load_checkpoint


def test_two_process_gloo_run(tmp_path, tiny_train_args):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "udaseg",
           "train", *tiny_train_args(iters=4), "device=cpu", "--out", str(run), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # rank 0 reports; rank 1 stays silent

    env_json = json.loads((run / "env.json").read_text())
    assert env_json["world_size"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "eval" not in r] == [1, 2, 3, 4]  # logged once, by rank 0
    result = json.loads((run / "eval.json").read_text())
    assert result["num_images"] == 4  # the 4 val images, each scored once across both ranks
    assert np.array(result["confusion"]).sum() == 4 * 64 * 128 - _ignored_pixels(tiny_train_args)

    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert len(state["rng"]) == 2  # one RNG state per rank, restored per rank on --resume
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # ranks seeded apart
    # Only the student is saved, without DDP's "module." prefix.
    assert all(k.startswith("student.") and ".module." not in k for k in state["method"]["modules"])


def _ignored_pixels(tiny_train_args) -> int:
    from udaseg import config as config_lib
    from udaseg.engine.trainer import build_dataset

    cfg = config_lib.compose(tiny_train_args())
    dataset = build_dataset(cfg.benchmark.val[0], cfg.data_root, cfg.benchmark.label_space)
    return sum(int((dataset[i]["label"] == 255).sum()) for i in range(len(dataset)))


def test_grad_sync_false_accumulates_locally_and_the_last_pass_all_reduces(tmp_path):
    worker = Path(__file__).with_name("ddp_sync_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    g = [torch.load(tmp_path / f"grads{r}.pt") for r in (0, 1)]
    # d(sum(Wx))/dW = column sums of x: 4·(r+1) per entry after the first pass, on each rank alone.
    for r in (0, 1):
        assert torch.allclose(g[r]["local"], torch.full((2, 3), 4.0 * (r + 1)))
    # The second pass (x doubled) all-reduces the accumulated gradients: the mean over ranks of
    # 4(r+1) + 8(r+1) = 12(r+1), i.e. 18, on both ranks.
    for r in (0, 1):
        assert torch.allclose(g[r]["synced"], torch.full((2, 3), 18.0))


def test_two_process_pipeline(tmp_path, tiny_train_args):
    """A pipeline under torchrun: training stages on both ranks, the offline step on rank 0 while
    rank 1 waits, one set of artefacts and records."""
    run = tmp_path / "ddp_pipeline"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stages = {"so": {}, "pseudo": {"step": "pseudo_labels", "rule": "argmax"},
              "isl": {"method": "source_only", "benchmark": {"source": {
                  "dataset": "cityscapes", "root": "cityscapes", "crop_size": [32, 64],
                  "labels_from": "stage://pseudo/pseudo_labels"}}}}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "udaseg",
           "train", *tiny_train_args(iters=2), "device=cpu", f"stages={json.dumps(stages)}", "--out", str(run),
           "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((run / "pipeline.json").read_text())
    assert state["complete"] and [s["stage"] for s in state["stages"]] == ["so", "pseudo", "isl"]
    n_images = state["stages"][1]["summary"]["images"]
    assert len(list((run / "stages" / "02_pseudo" / "pseudo_labels").glob("*.png"))) == n_images
    assert json.loads((run / "stages" / "03_isl" / "env.json").read_text())["world_size"] == 2
    assert json.loads((run / "eval.json").read_text())["stage"] == "isl"
