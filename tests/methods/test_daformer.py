"""DAFormer end to end on a tiny MiniCity, and the order of one iteration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from udaseg import config as config_lib
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_checkpoint, load_network


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_daformer_trains_logs_diagnostics_and_saves_the_teacher(tmp_path, tiny_train_args):
    run = tmp_path / "r"
    args = tiny_train_args("daformer_minicity", iters=3, **{"method.pseudo_ignore_bottom": 4})
    final = trainer.train(config_lib.compose(args), run, progress=False)
    assert final["network"] == "student"
    rows = [r for r in _rows(run) if "eval" not in r]
    assert {"loss_src", "loss_mix", "pseudo_weight", "pl_acc", "pl_precision"} <= set(rows[0])
    assert 0.0 <= rows[0]["pseudo_weight"] <= 1.0 and 0.0 <= rows[0]["pl_acc"] <= 1.0
    assert set(rows[0]["pl_precision"]) == set(final["per_class_iou"])
    state = load_checkpoint(run / "checkpoints" / "last.pt")["method"]["modules"]
    # The MiniCity setting keeps the paper's ImageNet feature distance: its frozen backbone is saved too.
    assert any(k.startswith("teacher.model.") for k in state) and any(k.startswith("imnet_backbone.") for k in state)
    assert list((run / "summary_files").glob("*_pseudo_labels.png"))  # the report plots the diagnostics
    teacher, _ = load_network(run, "teacher")  # udaseg eval --network teacher works
    student, _ = load_network(run, "student")
    assert not all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), student.state_dict().values()))


def test_diagnostics_off(tmp_path, tiny_train_args):
    run = tmp_path / "r"
    args = tiny_train_args("daformer_minicity", iters=2, diagnostics=False, **{"method.pseudo_ignore_bottom": 4})
    trainer.train(config_lib.compose(args), run, progress=False)
    assert "pl_acc" not in _rows(run)[0] and "pseudo_weight" in _rows(run)[0]


def test_feature_distance_runs_against_the_initial_backbone(tmp_path, tiny_train_args):
    run = tmp_path / "r"
    args = tiny_train_args("daformer", iters=2, **{"method.pseudo_ignore_top": 0, "method.pseudo_ignore_bottom": 0,
                                                   "method.fd.classes": "null"})
    trainer.train(config_lib.compose(args), run, progress=False)
    rows = [r for r in _rows(run) if "eval" not in r]
    # λ·mean distance (BatchNorm in train mode vs the frozen copy's eval mode already differ at t = 0).
    assert all(0.0 < r["loss_fd"] < 1.0 for r in rows)
    state = load_checkpoint(run / "checkpoints" / "last.pt")["method"]["modules"]
    assert any(k.startswith("imnet_backbone.") for k in state)


LITE0_TINY = ["model=minicity_lite0", "model.head_options={embed_dim: 16}", "schedule=minicity_finetune"]


def _lite0(args: list[str]) -> list[str]:
    """The tiny training arguments with the pretrained Lite0 preset (small head) for the CNN."""
    return [a for a in args if not a.startswith("model")] + LITE0_TINY


def test_feature_distance_model_holds_the_imagenet_weights_when_the_student_starts_from_a_run(tmp_path,
                                                                                              tiny_train_args):
    """With model.init_from (the demo's DAFormer starts from its source-only run) the frozen model
    is rebuilt from model.pretrained: the reference's ImageNet model, not the run's backbone."""
    from omegaconf import OmegaConf

    from udaseg.methods.daformer import imagenet_backbone
    from udaseg.models import create_model

    source = tmp_path / "so"
    trainer.train(config_lib.compose(_lite0(tiny_train_args("source_only", iters=2)) + ["schedule.lr=1e-2"]),
                  source, progress=False)
    cfg = config_lib.compose(_lite0(tiny_train_args("daformer_minicity", iters=2)) + [f"model.init_from={source}"])
    student = create_model(cfg.model, num_classes=19)
    imnet = imagenet_backbone(cfg.model, student, 19).state_dict()
    pretrained = create_model({**OmegaConf.to_container(cfg.model), "init_from": None},
                              num_classes=19).backbone.state_dict()
    key = "body.conv_stem.weight"
    assert torch.equal(imnet[key], pretrained[key])
    assert not torch.equal(imnet[key], student.backbone.state_dict()[key])  # the run trained it away
    no_init = config_lib.compose(_lite0(tiny_train_args("daformer_minicity", iters=2)))
    assert torch.equal(imagenet_backbone(no_init.model, student, 19).state_dict()[key],
                       student.backbone.state_dict()[key])


TIGDA_EBDA = {"method.tigda": "true", "method.tigda.embed_dim": 16, "method.tigda.n_ctx": 4,
              "method.tigda.image_vector": "pool", "method.ebda": "true"}


@pytest.mark.parametrize("extra", [{}, TIGDA_EBDA], ids=["daformer", "tigda+ebda"])
def test_teacher_stays_identical_across_ddp_ranks(tmp_path, tiny_train_args, extra):
    """(With TigDA + EBDA the synchronising pass is EBDA's, which does not use the CMF head.)"""
    worker = Path(__file__).with_name("ddp_teacher_worker.py")
    args = tiny_train_args("daformer_minicity", iters=3, **{"method.pseudo_ignore_bottom": 4, **extra})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), str(tmp_path), json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t0, t1 = (torch.load(tmp_path / f"teacher{r}.pt") for r in (0, 1))
    assert t0.keys() == t1.keys()
    for k in t0:
        if "running" not in k and "num_batches" not in k:  # BN statistics are per rank (target batches)
            assert torch.equal(t0[k], t1[k]), k
    s0 = torch.load(tmp_path / "student0.pt")
    assert not all(torch.equal(t0[k], s0[k]) for k in t0)


@pytest.mark.parametrize("mode", ["per_image"])
def test_per_image_classmix_switch(tmp_path, tiny_train_args, mode):
    args = tiny_train_args("daformer_minicity", iters=1, **{"method.mix_classes": mode, "method.pseudo_ignore_top": 0,
                                                            "method.pseudo_ignore_bottom": 4})
    trainer.train(config_lib.compose(args), tmp_path / "r", progress=False)


def test_pseudo_label_crop_larger_than_the_crop_is_an_error(tmp_path, tiny_train_args):
    with pytest.raises(ValueError, match="pseudo_ignore_top/bottom"):
        trainer.train(config_lib.compose(tiny_train_args("daformer_minicity", iters=1)), tmp_path / "r",
                      progress=False)


@pytest.mark.parametrize("mode", ["separatetrgaug", "separate"])
def test_mic_option(tmp_path, tiny_train_args, mode):
    args = tiny_train_args("daformer_minicity", iters=2, **{
        "method.mic": "true", "method.mic.mode": mode, "method.mic.block_size": 8, "method.pseudo_threshold": "null",
        "method.pseudo_ignore_top": 0, "method.pseudo_ignore_bottom": 4})
    trainer.train(config_lib.compose(args), tmp_path / "r", progress=False)
    rows = [r for r in _rows(tmp_path / "r") if "eval" not in r]
    assert all(r["loss_mic"] > 0 for r in rows)


def test_hrda_and_hrda_mic_train(tmp_path, tiny_train_args):
    hrda = ["model.hrda={hr_crop_size: [16, 32], hr_slide_stride: [8, 16], test_window: [32, 64], "
            "test_stride: [16, 32], attention_embed_dim: 8}"]
    args = tiny_train_args("daformer_minicity", iters=2, **{"method.pseudo_ignore_top": 0,
                                                            "method.pseudo_ignore_bottom": 4, "method.mic": "true",
                                                            "method.mic.block_size": 8}) + hrda
    final = trainer.train(config_lib.compose(args), tmp_path / "r", progress=False)
    rows = [r for r in _rows(tmp_path / "r") if "eval" not in r]
    assert {"loss_src", "loss_mix", "loss_mic"} <= set(rows[0]) and final["mIoU19"] is not None
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["method"]["modules"]
    assert any(k.startswith("student.attention_head.") for k in state)


def test_v2_pseudo_margins_reach_the_method(tmp_path, tiny_train_args):
    args = tiny_train_args("daformer_minicity", iters=1, **{
        "method.pseudo_ignore_top": 0, "method.pseudo_ignore_bottom": 0, "method.pseudo_threshold": "null",
        "benchmark.target.pseudo_margins": "[64,64,0,0]"})
    # Margins that cover the whole (64-row) target image: every pseudo-label weighs 0.
    trainer.train(config_lib.compose(args), tmp_path / "r", progress=False)
    rows = [r for r in _rows(tmp_path / "r") if "eval" not in r]
    assert rows[0]["pseudo_weight"] == 0.0
