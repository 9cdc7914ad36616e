"""DAF + IDA (docs/methods.md B.5, B.8) by hand: SYNTHIA inverse depth, BerHu, depth-aware
maps, the ranking score, the rare-class normaliser in 19- and 16-class spaces, the easy/hard split;
the DAF iteration (D inputs, labels and gradients); the depth_rank step's artefacts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from udaseg import config as config_lib
from udaseg.data.catalog import get_label_space
from udaseg.methods import MethodContext, adversarial, create_method, daf_ida
from udaseg.methods.daf_ida import (
    INTRADA_RARE_IDS_19,
    berhu_loss,
    depth_aware_map,
    inverse_depth_from_metres,
    ranking_score,
    rare_class_ids,
    rare_class_normaliser,
    split_easy_hard,
)

SYN16 = get_label_space("synthia16")
CS19 = get_label_space("cityscapes19")


# -- pure functions ------------------------------------------------------------------------------
def test_inverse_depth_from_synthia_metres():
    metres = torch.tensor([0.0, 0.01, 0.07, 1.0, 655.35])  # raw cm 0, 1, 7, 100, 65535
    expected = [65536.0, 32768.0, 8192.0, 65536 / 101, 1.0]
    assert inverse_depth_from_metres(metres).tolist() == pytest.approx(expected, rel=1e-6)


def test_berhu_both_branches_and_detached_threshold():
    pred = torch.zeros(1, 2, 2, requires_grad=True)
    target = torch.tensor([[[1.0, 2.0], [5.0, 10.0]]])
    loss = berhu_loss(pred, target)  # r = 1, 2, 5, 10; c = 0.2·10 = 2
    # 1 and 2 (≤ c) stay; 5 → (25 + 4)/4 = 7.25; 10 → (100 + 4)/4 = 26; mean over 4 pixels
    assert float(loss.detach()) == pytest.approx((1 + 2 + 7.25 + 26) / 4)
    loss.backward()
    # dℓ/dpred: −1 on the L1 branch, −r/c on the L2 branch (c a constant), / 4 pixels
    assert pred.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, -(5 / 2) / 4, -(10 / 2) / 4])


def test_berhu_mask_sets_max_and_mean():
    pred = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 2.0], [5.0, 10.0]]])
    keep = torch.tensor([[[True, True], [True, False]]])
    # kept r = 1, 2, 5 → c = 1: 1 → 1; 2 → (4 + 1)/2 = 2.5; 5 → (25 + 1)/2 = 13; mean over 3
    assert float(berhu_loss(pred, target, keep)) == pytest.approx((1 + 2.5 + 13) / 3)
    assert float(berhu_loss(pred, target, torch.zeros_like(keep))) == 0.0
    perfect = torch.ones(1, 3, 3, requires_grad=True)
    loss = berhu_loss(perfect, torch.ones(1, 3, 3))  # c = 0: no NaN
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(perfect.grad).all()


def test_depth_aware_map_powers():
    entropy = torch.full((1, 2, 1, 2), 0.5)
    depth = torch.tensor([2.0, 3.0]).view(1, 1, 1, 2)
    assert depth_aware_map(entropy, depth, 1)[0, :, 0].tolist() == [[1.0, 1.5], [1.0, 1.5]]
    assert depth_aware_map(entropy, depth, 2)[0, :, 0].tolist() == [[2.0, 4.5], [2.0, 4.5]]
    assert torch.equal(depth_aware_map(entropy, depth[:, 0], 2), depth_aware_map(entropy, depth, 2))  # [B,H,W]
    with pytest.raises(ValueError):
        depth_aware_map(entropy, depth, 3)


def test_rare_ids_faithful_and_by_name():
    assert rare_class_ids(SYN16, "faithful_19") == (3, 4, 5, 6, 7, 9, 12, 14, 15, 16, 17)
    # wall, fence, pole, light, sign, rider, bus, motorcycle (no terrain, truck, train in 16 classes)
    assert rare_class_ids(SYN16, "by_name") == (3, 4, 5, 6, 7, 11, 13, 14)
    assert rare_class_ids(CS19, "by_name") == INTRADA_RARE_IDS_19  # the list is right in 19 classes
    with pytest.raises(ValueError):
        rare_class_ids(SYN16, "all")


def test_rare_class_normaliser_by_hand():
    # A 16-class map with wall (3), sky (9) and car (12): the faithful list counts all three
    # (sky and car are 19-class terrain and rider), by name only wall.
    pred = torch.tensor([[3, 9], [12, 0]])
    assert float(rare_class_normaliser(pred, rare_class_ids(SYN16, "faithful_19"))) == pytest.approx(8 / 11 + 0.5)
    assert float(rare_class_normaliser(pred, rare_class_ids(SYN16, "by_name"))) == pytest.approx(10 / 11 + 0.5)
    assert float(rare_class_normaliser(torch.zeros(4, 4, dtype=torch.long), INTRADA_RARE_IDS_19)) == 1.5
    every_rare = torch.tensor(INTRADA_RARE_IDS_19 + (0,)).view(1, 3, 4)  # all 11 once, repeats don't count
    assert float(rare_class_normaliser(every_rare, INTRADA_RARE_IDS_19)) == pytest.approx(0.5)


def test_ranking_score_by_hand():
    prob = torch.stack([torch.full((1, 2), 0.5), torch.full((1, 2), 0.5)]).unsqueeze(0)  # [1, 2, 1, 2]
    depth = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    # E_c = −½·log₂½ / log₂2 = ½ everywhere; mean of E·Ẑ over (c, h, w) = ½·(1 + 3)/2 = 1 (no squaring)
    score, nu = ranking_score(prob, depth, normalize=False)
    assert float(score) == pytest.approx(1.0) and float(nu) == 1.0
    # argmax of a tie is class 0 (not rare) → ν = 1.5
    score, nu = ranking_score(prob, depth, normalize=True, rare_ids=INTRADA_RARE_IDS_19)
    assert float(score) == pytest.approx(1.5) and float(nu) == 1.5
    onehot = torch.zeros(2, 4, 3, 3)
    onehot[:, 1] = 1.0
    assert ranking_score(onehot, torch.full((2, 1, 3, 3), 7.0), normalize=False)[0].tolist() == [0.0, 0.0]


def test_easy_hard_split_sizes_and_order():
    names = [f"img{i}" for i in range(10)]
    scores = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]
    easy, hard = split_easy_hard(names, scores, 0.66)
    assert easy == ["img9", "img1", "img5", "img3", "img7", "img2"]  # ⌊6.6⌋ = 6 lowest, ascending
    assert hard == ["img8", "img4", "img6", "img0"]
    n = 2975  # Cityscapes train: the released split files
    easy, hard = split_easy_hard([str(i) for i in range(n)], [0.0] * n, 0.66)
    assert (len(easy), len(hard)) == (1963, 1012)
    assert easy[:3] == ["0", "1", "2"]  # ties keep the processing order (stable sort)


def test_discriminator_conventions_are_advents():
    """DAF trains its discriminator with ADVENT's pieces: source = 0, target = 1, the same update."""
    assert daf_ida.entropy_map is adversarial.entropy_map
    assert (adversarial.SOURCE_LABEL, adversarial.TARGET_LABEL) == (0.0, 1.0)
    assert issubclass(daf_ida.DafIda, daf_ida.Advent)
    assert daf_ida.DafIda.train_discriminators is daf_ida.Advent.train_discriminators


# -- the DAF iteration ---------------------------------------------------------------------------
TINY_DAF_MODEL = ["model=minicity_deeplab_daf", "model.backbone_options.width=8",
                  "model.backbone_options.depths=[1,1,1,1]", "model.depth.up_channels=4",
                  "model.depth.fusion_channels=8", "model.depth.kernel_size=3"]


def _method(tiny_train_args, **extra):
    args = [a for a in tiny_train_args("daf_ida", benchmark="minicity_synthia2cs", **{"method.disc_width": 4, **extra})
            if not a.startswith("model")] + TINY_DAF_MODEL
    cfg = config_lib.compose(args)
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=10, label_space=SYN16,
                        device=torch.device("cpu"))
    method = create_method(cfg.method, ctx)
    method.train()
    return method


def _batches(seed=0, depth=True, size=(32, 32)):
    g = torch.Generator().manual_seed(seed)
    src = {"img": torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8, generator=g),
           "label": torch.randint(0, 16, (2, *size), generator=g)}
    if depth:
        src["depth"] = torch.randint(1, 65536, (2, *size), generator=g).float() / 100.0
        src["depth"][:, :2] = 0.0  # padding
    tgt = {"img": torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8, generator=g)}
    return src, tgt


def test_daf_defaults_are_the_release():
    cfg = daf_ida.DafIdaConfig()
    assert (cfg.seg_lambda, cfg.depth_lambda, cfg.adv_lambda, cfg.disc_lr) == (1.0, 0.001, 0.001, 1e-4)
    assert cfg.target_depth_power == 2 and cfg.disc_half is False and cfg.loss_norm == "valid"
    shipped = config_lib.compose(["method=daf_ida", "benchmark=minicity_synthia2cs", "model=minicity_deeplab_daf",
                                  "schedule=poly09_sgd"]).method
    assert shipped.target_depth_power == 2 and shipped.disc_half is False and shipped.depth_lambda == 0.001


def test_daf_ida_paper_seeds_every_stage_with_1234(tmp_path):
    """B.6 / B.9: the release seeds torch, numpy and random with 1234 (DAF, ISL and IDA)."""
    from udaseg.engine import pipeline

    planned = pipeline.plan(config_lib.compose(["daf_ida_paper", "benchmark=synthia2cs"]), tmp_path)
    seeds = {stage.name: cfg.seed for stage, cfg in planned if not stage.is_step}
    assert seeds == {"daf": 1234, "isl1": 1234, "isl2": 1234, "isl3": 1234, "ida": 1234}


def test_one_daf_step_trains_student_and_discriminator_apart(tiny_train_args):
    torch.manual_seed(0)
    method = _method(tiny_train_args)
    disc_grads, depth_grads = [], []
    for p in method.discriminator.parameters():
        p.register_hook(lambda g: disc_grads.append(float(g.abs().sum())))
    for p in method.student.depth_head.regressor.parameters():
        p.register_hook(lambda g: depth_grads.append(g))
    before = {k: v.clone() for k, v in method.discriminator.state_dict().items()}
    losses = method.train_step(*_batches(), 0)
    assert set(losses) == {"loss_seg", "loss_depth", "loss_adv", "loss_disc"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in losses.values())
    assert float(losses["loss_depth"]) > 0
    n_params = len(list(method.discriminator.parameters()))
    assert len(disc_grads) == 2 * n_params  # the two D passes of step 3 only, not the generator's
    assert depth_grads and all(torch.isfinite(g).all() for g in depth_grads)  # depth loss reaches the regressor
    assert any(not torch.equal(before[k], v) for k, v in method.discriminator.state_dict().items())


def test_discriminator_inputs_labels_and_depth_power(tiny_train_args, monkeypatch):
    method = _method(tiny_train_args)
    src, tgt = _batches()
    leaf = torch.zeros((), requires_grad=True)
    c = 16

    def fake_forward(img, size):  # uniform logits (E_c = 1/C), inverse depth 2 on source, 3 on target
        value = 2.0 if img.shape[0] == 2 and fake_forward.calls == 0 else 3.0
        fake_forward.calls += 1
        return (torch.zeros(img.shape[0], c, *size) + 0 * leaf, torch.full((img.shape[0], 1, *size), value) + 0 * leaf)

    fake_forward.calls = 0
    monkeypatch.setattr(method, "forward_with_depth", fake_forward)
    seen, outputs = [], []
    method.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    method.discriminator.register_forward_hook(lambda m, args, out: outputs.append(out.detach()))
    from udaseg.methods import advent

    labels = []
    real_bce = advent.domain_bce
    monkeypatch.setattr(advent, "domain_bce", lambda logits, domain: labels.append(domain) or real_bce(logits, domain))
    losses = method.train_step(src, tgt, 0)
    assert labels == [0.0, 0.0, 1.0]  # generator: target → source label; D: source 0, target 1
    gen, d_src, d_tgt = seen
    assert torch.allclose(gen, torch.full_like(gen, 9.0 / c))  # E·Ẑ² on the target: (1/C)·3²
    assert torch.allclose(d_src, torch.full_like(d_src, 2.0 / c))  # E·Ẑ on the source
    assert torch.equal(d_tgt, gen) and not d_tgt.requires_grad and not d_src.requires_grad
    # Not halved: loss_disc is the sum of the two BCEs
    expected = real_bce(outputs[1], 0.0) + real_bce(outputs[2], 1.0)
    assert float(losses["loss_disc"]) == pytest.approx(float(expected), rel=1e-6)

    symmetric = _method(tiny_train_args, **{"method.target_depth_power": 1})
    fake_forward.calls, seen[:] = 0, []
    monkeypatch.setattr(symmetric, "forward_with_depth", fake_forward)
    symmetric.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    symmetric.train_step(src, tgt, 0)
    assert torch.allclose(seen[0], torch.full_like(seen[0], 3.0 / c))  # DADA's E·Ẑ


def test_daf_needs_depth_and_a_depth_model(tiny_train_args):
    from udaseg.errors import ConfigError

    method = _method(tiny_train_args)
    with pytest.raises(ValueError, match="options.depth"):
        method.train_step(*_batches(depth=False), 0)
    cfg = config_lib.compose(tiny_train_args("daf_ida", benchmark="minicity_synthia2cs"))  # a plain model
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=10, label_space=SYN16,
                        device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="depth branch"):
        create_method(cfg.method, ctx)


# -- the ranking step ----------------------------------------------------------------------------
class FakeDepthNet(torch.nn.Module):
    """Uniform logits (E_c = 1/C) over 16 classes, class 0 winning ties; inverse depth = the image's
    grey value. So S = ν·(1/16)·value with ν = 1.5 (class 0 is not rare): the ranking is by value."""

    align_corners = True

    def normalize(self, x, value_range=None):
        return x / 255.0

    def forward_with_depth(self, x):
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        logits = torch.zeros(x.shape[0], 16, h, w)
        return logits, x[:, :1, ::4, ::4] * 255.0


def test_depth_rank_step_writes_splits_and_easy_pseudo_labels(tmp_path):
    from omegaconf import OmegaConf

    from udaseg.engine.pipeline import Stage, StepContext, get_step, step_config

    config_cls, step = get_step("depth_rank")
    assert config_cls is daf_ida.DepthRankConfig
    # A real boolean (B.8.5): the string "False" means False here, unlike the reference's argparse.
    assert step_config(Stage(1, "rank", {"step": "depth_rank", "normalize": "False"})).normalize is False
    assert step_config(Stage(1, "rank", {"step": "depth_rank"})).normalize is True
    values = [9, 1, 5, 3, 7, 2, 8, 4, 6, 0]
    ctx = StepContext(OmegaConf.create({"benchmark": {"label_space": "synthia16"}}), tmp_path, tmp_path,
                      torch.device("cpu"))
    ctx.network = lambda name=None: FakeDepthNet()
    # Labels for the diagnostics: class 0 (what the fake predicts) where the value is below 5.
    ctx.batches = lambda stream="target", labels=False: iter(
        {"img": torch.full((1, 3, 8, 12), v, dtype=torch.uint8), "name": [f"img{i}"],
         "label": torch.full((1, 8, 12), 0 if v < 5 else 1)} for i, v in enumerate(values))
    summary = step(ctx, daf_ida.DepthRankConfig())
    assert summary["easy"] == 6 and summary["hard"] == 4 and summary["images"] == 10
    # Easy = values 0–5: five right, one wrong; hard = values 6–9: all wrong.
    assert summary["easy_pixel_accuracy"] == pytest.approx(5 / 6) and summary["hard_pixel_accuracy"] == 0.0
    easy = (tmp_path / "easy.txt").read_text().split()
    hard = (tmp_path / "hard.txt").read_text().split()
    assert easy == ["img9", "img1", "img5", "img3", "img7", "img2"] and hard == ["img8", "img4", "img6", "img0"]
    assert sorted(p.stem for p in (tmp_path / "pseudo_labels").glob("*.png")) == sorted(easy)
    label = np.array(Image.open(tmp_path / "pseudo_labels" / "img9.png"))
    assert label.shape == (8, 12) and (label == 0).all()  # plain argmax at the image size, every pixel labelled
    rows = (tmp_path / "ranking.tsv").read_text().splitlines()[1:]
    name, score, nu = rows[1].split("\t")
    assert name == "img1" and float(score) == pytest.approx(1.5 * 1 / 16) and float(nu) == 1.5


def test_daf_then_depth_rank_as_a_pipeline(tmp_path, tiny_train_args):
    """Stage 0 on MiniCity SYNTHIA with depth, then the ranking with the trained network."""
    from udaseg.engine.pipeline import run_pipeline

    args = [a for a in tiny_train_args("daf_ida", benchmark="minicity_synthia2cs", iters=1,
                                       **{"method.disc_width": 4, "benchmark.label_space": "synthia16",
                                          "benchmark.source.options": "{depth: true}",
                                          "stages": "{daf: {}, rank: {step: depth_rank, rare_ids: by_name}}"})
            if not a.startswith("model")] + TINY_DAF_MODEL
    run_pipeline(config_lib.compose(args), tmp_path / "p", progress=False)
    daf = next((tmp_path / "p" / "stages").glob("*_daf"))
    rows = [json.loads(line) for line in (daf / "metrics.jsonl").read_text().splitlines() if '"eval"' not in line]
    assert {"loss_seg", "loss_depth", "loss_adv", "loss_disc"} <= set(rows[0])  # SYNTHIA depth reached BerHu
    assert math.isfinite(rows[0]["loss_depth"]) and rows[0]["loss_depth"] > 0
    rank = next((tmp_path / "p" / "stages").glob("*_rank"))
    easy, hard = ((rank / f).read_text().split() for f in ("easy.txt", "hard.txt"))
    summary = json.loads((rank / "summary.json").read_text())
    assert len(easy) == int(0.66 * (len(easy) + len(hard))) == summary["easy"] and hard
    assert sorted(p.stem for p in (rank / "pseudo_labels").glob("*.png")) == sorted(easy)


def test_source_depth_error_is_logged_as_abs_rel():
    """depth_abs_rel = mean |Ẑ − Z| / Z over known pixels, averaged over the logged steps, then reset."""
    method = daf_ida.DafIda.__new__(daf_ida.DafIda)
    target = torch.tensor([[[10.0, 20.0], [40.0, 1.0]]])
    pred = torch.tensor([[[12.0, 18.0], [40.0, 99.0]]])
    known = torch.tensor([[[True, True], [True, False]]])  # the last pixel is padding
    method.observe_depth(pred, target, known)  # (0.2 + 0.1 + 0) / 3 = 0.1
    method.observe_depth(target * 1.5, target, None)  # 0.5 everywhere
    assert method.diagnostics_row() == {"depth_abs_rel": pytest.approx((0.1 + 0.5) / 2)}
    assert method.diagnostics_row() == {}
