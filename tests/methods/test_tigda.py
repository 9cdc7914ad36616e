"""TigDA as an option of the self-training methods: the teacher's CMF head makes the
pseudo-labels, the text tower is frozen and outside the EMA/optimizer/checkpoint, the CMF head
is dropped at inference; composes with HRDA, MIC and EBDA."""

from __future__ import annotations

import json

import torch

from udaseg import config as config_lib
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_checkpoint, load_network

TIGDA = {"method.tigda.embed_dim": 16, "method.tigda.n_ctx": 4, "method.tigda.image_vector": "pool",
         "method.fd.weight": 0, "method.pseudo_ignore_top": 0, "method.pseudo_ignore_bottom": 0}
HRDA = ["model.hrda={hr_crop_size: [16, 32], hr_slide_stride: [8, 16], test_window: [32, 64], "
        "test_stride: [16, 32], attention_embed_dim: 8}"]


def _method(tiny_train_args, **extra):
    from udaseg.data.catalog import get_label_space
    from udaseg.methods import MethodContext, create_method

    cfg = config_lib.compose(tiny_train_args("tigda", **{**TIGDA, **extra}))
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=cfg.iters,
                        label_space=get_label_space(cfg.benchmark.label_space), device=torch.device("cpu"))
    return create_method(cfg.method, ctx)


def _batch(b=2, h=32, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    return {"img": img, "label": torch.randint(0, 19, (b, h, w), generator=g)}


def test_text_tower_is_frozen_shared_and_outside_ema_optimizer_and_state(tiny_train_args):
    method = _method(tiny_train_args)
    head, teacher_head = method.student.aux_head, method.teacher.model.aux_head
    tower = head.tower.module
    assert teacher_head.tower.module is tower  # shared, not copied
    assert not any(k.startswith(("student.aux_head.tower", "teacher.model.aux_head.tower")) or ".bert." in k
                   for k in method.state_dict())
    optimised = {id(p) for group in method.optimizers["main"].optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in tower.parameters())
    assert id(head.ctx) in optimised and id(head.text_projection) in optimised
    frozen = {k: v.clone() for k, v in tower.state_dict().items()}
    reached = []
    head.ctx.register_hook(lambda g: reached.append(float(g.abs().sum())))
    method.train()
    losses = method.train_step(_batch(), _batch(seed=1), 0)
    method.train_step(_batch(seed=2), _batch(seed=3), 1)
    assert all(p.grad is None for p in tower.parameters())
    assert all(torch.equal(frozen[k], v) for k, v in tower.state_dict().items())
    assert reached and all(g > 0 for g in reached)  # gradients reach the prompts through the frozen tower
    assert {"loss_src", "loss_mix"} <= set(losses)


def test_pseudo_labels_come_from_the_teachers_cmf_head(tiny_train_args, monkeypatch):
    method = _method(tiny_train_args, **{"method.pseudo_threshold": "null"})
    teacher = method.teacher.model

    def cmf_says_class_5(x):
        logits = torch.zeros(x.shape[0], 19, x.shape[2] // 4, x.shape[3] // 4)
        logits[:, 5] = 10.0
        return logits

    monkeypatch.setattr(teacher, "auxiliary_logits", cmf_says_class_5)
    method.train()
    method.train_step(_batch(), _batch(seed=1), 0)
    assert bool((method._last_pseudo[0] == 5).all())  # not the teacher's DAFormer head
    ablation = _method(tiny_train_args, **{"method.pseudo_threshold": "null", "method.tigda.pseudo_labels": "decoder"})
    monkeypatch.setattr(ablation.teacher.model, "auxiliary_logits", cmf_says_class_5)
    ablation.train()
    ablation.train_step(_batch(), _batch(seed=1), 0)
    assert not bool((ablation._last_pseudo[0] == 5).all())


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' not in line]


def test_tigda_trains_and_the_cmf_head_is_dropped_at_inference(tmp_path, tiny_train_args):
    run = tmp_path / "r"
    final = trainer.train(config_lib.compose(tiny_train_args("tigda", iters=2, **TIGDA)), run, progress=False)
    assert final["mIoU19"] is not None
    state = load_checkpoint(run / "checkpoints" / "last.pt")["method"]["modules"]
    assert any(k.startswith("student.aux_head.ctx") for k in state)
    assert any(k.startswith("teacher.model.aux_head.") for k in state)
    model, _ = load_network(run)  # the deployed network: no CMF head, no text tower
    assert model.aux_head is None and not any(k.startswith("aux_head") for k in model.state_dict())


def test_hrda_mic_tigda_ebda_compose(tmp_path, tiny_train_args):
    extra = {**TIGDA, "method.mic": "true", "method.mic.block_size": 8, "method.ebda": "true"}
    run = tmp_path / "r"
    trainer.train(config_lib.compose(tiny_train_args("tigda", iters=2, **extra) + HRDA), run, progress=False)
    rows = _rows(run)
    assert {"loss_src", "loss_mix", "loss_mic", "loss_eb"} <= set(rows[0])
    assert all(torch.isfinite(torch.tensor(r["loss_mix"])) for r in rows)


def test_faithful_image_vector_trains_on_crops_of_another_size(tmp_path, tiny_train_args):
    """The conv built for 64×64 crops meets 32×64 ones (its stage pooled onto its grid)."""
    args = tiny_train_args("tigda", iters=1, **{**TIGDA, "method.tigda.image_vector": "conv",
                                                "method.tigda.image_size": "[64,64]"})
    trainer.train(config_lib.compose(args), tmp_path / "r", progress=False)
