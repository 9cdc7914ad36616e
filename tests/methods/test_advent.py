"""ADVENT's pieces by hand (entropy map, MinEnt, discriminator shape, domain BCE) and the method:
update order, a frozen discriminator during the generator step, DDP across two gloo ranks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from udaseg import config as config_lib
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_checkpoint
from udaseg.methods.adversarial import FCDiscriminator, domain_bce, entropy_map, minent_loss


def test_entropy_map_and_minent_by_hand():
    prob = torch.tensor([0.5, 0.25, 0.25]).view(1, 3, 1, 1)
    e = entropy_map(prob).flatten()
    # −p log2 p / log2 3: 0.5·1, 0.25·2, 0.25·2 → each / 1.58496
    assert e.tolist() == pytest.approx([0.5 / math.log2(3), 0.5 / math.log2(3), 0.5 / math.log2(3)], abs=1e-6)
    assert float(minent_loss(prob)) == pytest.approx(1.5 / math.log2(3), abs=1e-6)
    uniform = torch.full((2, 4, 3, 3), 0.25)
    assert float(minent_loss(uniform)) == pytest.approx(1.0, abs=1e-6)  # normalised: 1 at the maximum
    onehot = torch.zeros(1, 4, 2, 2)
    onehot[:, 2] = 1.0
    assert float(minent_loss(onehot)) == pytest.approx(0.0, abs=1e-6)


def test_discriminator_shape_and_domain_bce():
    d = FCDiscriminator(19, width=8)
    assert d(torch.rand(2, 19, 64, 128)).shape == (2, 1, 2, 4)  # five stride-2 convs: /32
    logits = torch.tensor([0.0, 2.0])
    # BCE(σ(0), 1) = ln 2; BCE(σ(2), 1) = ln(1 + e^-2)
    assert float(domain_bce(logits, 1.0)) == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2, abs=1e-6)


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' not in line]


def test_advent_trains_student_and_discriminator(tmp_path, tiny_train_args):
    run = tmp_path / "r"
    trainer.train(config_lib.compose(tiny_train_args("advent", iters=2, **{"method.disc_width": 8,
                                                                          "method.ent_lambda": 0.001})),
                  run, progress=False)
    rows = _rows(run)
    assert {"loss_seg", "loss_adv", "loss_ent", "loss_disc"} <= set(rows[0])
    assert rows[0]["loss_disc"] == pytest.approx(math.log(2), abs=0.05)  # ½(BCE + BCE) of an untrained D
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert any(k.startswith("discriminator.") for k in state["method"]["modules"])
    assert set(state["method"]["optimizers"]) == {"main", "discriminator"}


def test_generator_step_does_not_train_the_discriminator(tiny_train_args):
    from udaseg.data.catalog import get_label_space
    from udaseg.methods import MethodContext, create_method

    cfg = config_lib.compose(tiny_train_args("advent", **{"method.disc_width": 8, "method.disc_lr": 0.0}))
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=10,
                        label_space=get_label_space("cityscapes19"), device=torch.device("cpu"))
    method = create_method(cfg.method, ctx)
    seen = []
    for p in method.discriminator.parameters():
        p.register_hook(lambda g: seen.append(float(g.abs().sum())))
    g = torch.Generator().manual_seed(0)
    batch = lambda: {"img": torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8, generator=g),  # noqa: E731
                     "label": torch.randint(0, 19, (2, 32, 64), generator=g)}
    method.train()
    method.train_step(batch(), batch(), 0)
    n_params = len(list(method.discriminator.parameters()))
    assert len(seen) == 2 * n_params  # only the two discriminator passes of step 3, not the generator's


def test_minent_alone_and_the_nothing_adapts_error(tmp_path, tiny_train_args):
    trainer.train(config_lib.compose(tiny_train_args("advent", iters=1, **{"method.adversarial": "false",
                                                                          "method.ent_lambda": 0.001})),
                  tmp_path / "r", progress=False)
    assert "loss_adv" not in _rows(tmp_path / "r")[0]
    with pytest.raises(ValueError, match="ent_lambda"):
        trainer.train(config_lib.compose(tiny_train_args("advent", iters=1, **{"method.adversarial": "false"})),
                      tmp_path / "x", progress=False)


def test_student_and_discriminator_stay_identical_across_ddp_ranks(tmp_path, tiny_train_args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("ddp_teacher_worker.py")
    args = tiny_train_args("advent", iters=2, **{"method.disc_width": 8})
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), str(tmp_path), json.dumps(args)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m0, m1 = (torch.load(tmp_path / f"method{r}.pt") for r in (0, 1))
    params = [k for k in m0 if "running" not in k and "num_batches" not in k]
    assert any(k.startswith("discriminator.") for k in params)
    for k in params:
        assert torch.equal(m0[k], m1[k]), k


def _deeplab(args: list[str]) -> list[str]:
    """The tiny setup with the DeepLab-v2 stand-in (small CNN at output stride 8, ASPP head)."""
    return [a for a in args if not a.startswith("model")] + [
        "model=minicity_deeplab", "model.backbone_options.width=8", "model.backbone_options.depths=[1,1,1,1]"]


def test_multi_level_adds_an_auxiliary_classifier_and_discriminator(tmp_path, tiny_train_args):
    """ADVENT's multi-level variant: an ASPP classifier on the penultimate stage with its own D;
    evaluation and export use the main output only."""
    from udaseg.engine.checkpoint import load_network
    from udaseg.models.heads.deeplabv2 import DeepLabV2ASPPHead

    run = tmp_path / "r"
    args = tiny_train_args("advent", iters=2, **{"method.disc_width": 8, "method.multi_level": "true",
                                                 "method.ent_lambda": 0.001})
    trainer.train(config_lib.compose(_deeplab(args)), run, progress=False)
    rows = _rows(run)
    # Two discriminators, each ½(BCE + BCE) ≈ ln 2 untrained.
    assert rows[0]["loss_disc"] == pytest.approx(2 * math.log(2), abs=0.1)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert set(state["method"]["optimizers"]) == {"main", "discriminator", "discriminator_aux"}
    modules = state["method"]["modules"]
    assert any(k.startswith("student.aux_head.") for k in modules)
    model, _ = load_network(run)  # the exported network: no auxiliary classifier
    assert model.aux_head is None and isinstance(model.decode_head, DeepLabV2ASPPHead)


def test_multi_level_loss_weights_by_hand(tiny_train_args):
    """loss_seg = CE_main + 0.1·CE_aux; loss_adv = 0.001·BCE(D(E_main)) + 0.0002·BCE(D_aux(E_aux))."""
    from udaseg.data.catalog import get_label_space
    from udaseg.methods import MethodContext, create_method
    from udaseg.methods.losses import seg_cross_entropy

    cfg = config_lib.compose(_deeplab(tiny_train_args("advent", **{"method.disc_width": 8, "method.multi_level": "true",
                                                                    "method.disc_lr": 0.0})))
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=10,
                        label_space=get_label_space("cityscapes19"), device=torch.device("cpu"))
    method = create_method(cfg.method, ctx)
    method.set_iteration(0)
    g = torch.Generator().manual_seed(0)
    src = {"img": torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8, generator=g),
           "label": torch.randint(0, 19, (2, 32, 64), generator=g)}
    tgt = {"img": torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8, generator=g)}
    method.train()
    with torch.no_grad():
        main, aux = method.levels(method.student.normalize(src["img"]), (32, 64))
        tmain, taux = method.levels(method.student.normalize(tgt["img"]), (32, 64))
        seg = seg_cross_entropy(main, src["label"]) + 0.1 * seg_cross_entropy(aux, src["label"])
        adv = 0.001 * domain_bce(method.discriminator(entropy_map(tmain.softmax(1))), 0.0) + \
            0.0002 * domain_bce(method.discriminator_aux(entropy_map(taux.softmax(1))), 0.0)
    losses = method.train_step(src, tgt, 0)
    assert float(losses["loss_seg"]) == pytest.approx(float(seg), rel=1e-5)
    assert float(losses["loss_adv"]) == pytest.approx(float(adv), rel=1e-5)


def test_source_ce_is_the_mean_over_labelled_pixels(tiny_train_args):
    """ADVENT's cross_entropy_2d averages over the non-ignored pixels (``loss_norm: valid``): with
    zero logits every labelled pixel costs ln 19, so loss_seg = ln 19 ≈ 2.944 although half the
    pixels are 255 (the mean over all pixels would give ½·ln 19 ≈ 1.472)."""
    from udaseg.data.catalog import get_label_space
    from udaseg.methods import MethodContext, create_method
    from udaseg.methods.advent import AdventConfig

    assert AdventConfig().loss_norm == "valid"
    cfg = config_lib.compose(_deeplab(tiny_train_args("advent", **{"method.disc_width": 8})))
    assert cfg.method.loss_norm == "valid"  # the shipped method/advent.yaml
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=10,
                        label_space=get_label_space("cityscapes19"), device=torch.device("cpu"))
    method = create_method(cfg.method, ctx)
    method.set_iteration(0)
    with torch.no_grad():
        for conv in method.student.decode_head.conv2d_list:
            conv.weight.zero_()
            conv.bias.zero_()
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 19, (2, 32, 64), generator=g)
    label[:, :16] = 255
    src = {"img": torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8, generator=g), "label": label}
    tgt = {"img": torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8, generator=g)}
    method.train()
    losses = method.train_step(src, tgt, 0)
    assert float(losses["loss_seg"]) == pytest.approx(math.log(19), rel=1e-6)


def test_advent_paper_is_the_released_multi_level_setting():
    """experiment/advent_paper = ADVENT's advent.yml over its config.py defaults: MULTI_LEVEL True
    (aux CE 0.1, aux adversarial 0.0002), λ_adv 0.001, D lr 1e-4, poly over 250k stopped at 120k,
    GTA 1280×720 / Cityscapes 1024×512 whole frames, batch 1 + 1, seed 1234."""
    cfg = config_lib.compose(["advent_paper", "benchmark=gta2cs"])
    m = cfg.method
    assert m.multi_level is True and m.loss_norm == "valid" and m.disc_half is True
    assert (m.seg_lambda_aux, m.adv_lambda, m.adv_lambda_aux, m.ent_lambda, m.disc_lr) == \
        (0.1, 0.001, 0.0002, 0.0, 1e-4)
    assert (cfg.iters, cfg.schedule.horizon, cfg.schedule.lr, cfg.seed) == (120000, 250000, 2.5e-4, 1234)
    assert cfg.benchmark.batch_size == 1
    assert list(cfg.benchmark.source.resize_to) == [720, 1280] and list(cfg.benchmark.target.resize_to) == [512, 1024]
