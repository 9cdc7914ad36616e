"""BAFFT's pieces by hand (memory banks, correct-pixel class means, 8-connected instances, the
L1-to-nearest aggregation, the (1+cos)/2 separation, AIM weights, class-wise median thresholds)
and the method: one step of each objective on a tiny DeepLab-style model, checkpoint round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from udaseg.config import ScheduleConfig
from udaseg.data.catalog import get_label_space
from udaseg.errors import ConfigError
from udaseg.methods import MethodContext, create_method
from udaseg.methods.bafft import BafftConfig
from udaseg.methods.feature_banks import (
    FeatureBank,
    aim_weights,
    category_loss,
    connected_instances,
    image_regions,
    instance_loss,
    masked_average,
    nearest_l1_distance,
    resolve_class_split,
    separation_loss,
)
from udaseg.methods.pseudo_labels import classwise_thresholds, confidence_histogram

CS = get_label_space("cityscapes19")
ROAD, SIDEWALK, SKY, PERSON, CAR = 0, 1, 10, 11, 13
TINY_MODEL = {"name": "tiny_deeplab", "backbone": "tiny_cnn", "head": "deeplabv2_aspp",
              "backbone_options": {"width": 8, "depths": [1, 1, 1, 1], "output_stride": 8}}


# -- pure pieces ----------------------------------------------------------------------------
def test_class_split_by_name_in_any_label_space():
    stuff, thing = resolve_class_split(CS.classes, BafftConfig().stuff_classes, BafftConfig().thing_classes)
    assert stuff == (0, 1, 2, 3, 4, 8, 9, 10) and thing == (5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18)  # A.3
    syn = get_label_space("synthia16")
    stuff16, thing16 = resolve_class_split(syn.classes, BafftConfig().stuff_classes, BafftConfig().thing_classes)
    assert [syn.classes[i] for i in stuff16] == ["road", "sidewalk", "building", "wall", "fence", "vegetation", "sky"]
    assert len(thing16) == 9  # no truck, no train
    with pytest.raises(ValueError, match="both"):
        resolve_class_split(CS.classes, ["road", "car"], ["car"])


def test_bank_fifo_order_gate_and_round_trip():
    bank = FeatureBank([ROAD, CAR], capacity=3, dim=1)
    bank.push(CAR, torch.tensor([[1.0], [2.0]]))
    assert bank.bank(CAR).flatten().tolist() == [1, 2, 0] and bank.bank(ROAD).abs().sum() == 0
    assert bank.ready() == {ROAD: False, CAR: False}
    bank.push(CAR, torch.tensor([[3.0], [4.0]]))  # writes 3, 4 → slots 2, 0
    assert bank.bank(CAR).flatten().tolist() == [4, 2, 3] and int(bank.writes[1]) == 4
    assert bank.ready()[CAR]  # 4 writes > capacity 3: more than one full buffer
    bank.push(ROAD, torch.arange(10.0, 17.0)[:, None])  # 7 at once: only the last 3 survive, in their slots
    # writes 0..6 go to slots 0,1,2,0,1,2,0 → slot 0 holds 16, slot 1 14, slot 2 15
    assert bank.bank(ROAD).flatten().tolist() == [16, 14, 15] and int(bank.writes[0]) == 7
    bank.push(ROAD, torch.tensor([17.0]))  # the 8th write → slot 1
    assert bank.bank(ROAD).flatten().tolist() == [16, 17, 15]

    restored = FeatureBank([ROAD, CAR], capacity=3, dim=1)
    restored.load_state_dict(bank.state_dict())
    assert torch.equal(restored.entries, bank.entries) and torch.equal(restored.writes, bank.writes)
    restored.push(CAR, torch.tensor([5.0]))  # the pointer continues where it stopped: write 5 → slot 1
    assert restored.bank(CAR).flatten().tolist() == [4, 5, 3]


def test_instances_are_8_connected_and_capped_largest_first():
    mask = np.array([[1, 0, 0, 0, 1, 1],
                     [0, 1, 0, 0, 1, 1],
                     [0, 0, 0, 0, 0, 0],
                     [1, 1, 1, 0, 0, 0]], dtype=bool)
    inst = connected_instances(mask)
    assert inst.shape == (3, 4, 6)
    assert inst.sum(axis=(1, 2)).tolist() == [4, 3, 2]  # the diagonal pair (0,0)-(1,1) is one instance
    assert inst[2, 0, 0] and inst[2, 1, 1] and inst[0, 0, 4] and inst[1, 3, 0]
    assert not inst.any(axis=0)[~mask].any() and inst.sum(axis=0).max() == 1

    grid = np.zeros((7, 9), dtype=bool)
    grid[::2, ::2] = True  # 4×5 = 20 isolated pixels (no 8-neighbour)
    grid[6, 7] = True  # joins (6,6) and (6,8): one instance of 3
    inst = connected_instances(torch.from_numpy(grid), max_instances=10)
    assert inst.shape[0] == 10 and inst[0].sum() == 3 and inst[0, 6, 7]
    assert [tuple(np.argwhere(m)[0]) for m in inst[1:4]] == [(0, 0), (0, 2), (0, 4)]  # ties: raster order
    assert connected_instances(np.zeros((3, 3), dtype=bool)).shape == (0, 3, 3)


def test_regions_masked_average_and_correct_pixels_only():
    label = torch.tensor([[ROAD, ROAD, 255],
                          [CAR, 255, CAR],
                          [SKY, SKY, SKY]])
    regions = image_regions(label, stuff_ids=(ROAD, SIDEWALK, SKY), thing_ids=(CAR,))
    assert regions.classes.tolist() == [ROAD, SKY, CAR, CAR]  # stuff first; two separate car pixels
    assert regions.is_thing.tolist() == [False, False, True, True]
    feat = torch.arange(9.0).view(1, 3, 3).repeat(2, 1, 1)
    feat[1] *= -1
    pooled = masked_average(feat, regions.masks)
    assert pooled[:, 0].tolist() == [0.5, 7.0, 3.0, 5.0] and pooled[:, 1].tolist() == [-0.5, -7.0, -3.0, -5.0]
    empty = masked_average(feat, torch.zeros(1, 3, 3))  # eps: an empty mask pools to zero, not NaN
    assert empty.tolist() == [[0.0, 0.0]]


def test_nearest_l1_distance_and_aggregation_losses():
    bank = torch.tensor([[0.0, 0.0], [1.0, 1.0], [4.0, 0.0]])
    v = torch.tensor([[1.0, 2.0], [4.0, 1.0]], requires_grad=True)
    d = nearest_l1_distance(v, bank)
    # v0: (1+2)/2, (0+1)/2, (3+2)/2 → 0.5 (entry 1); v1: (4+1)/2, (3+0)/2, (0+1)/2 → 0.5 (entry 2)
    assert d.tolist() == pytest.approx([0.5, 0.5])
    d.sum().backward()
    assert v.grad.tolist() == [[0.0, 0.5], [0.0, 0.5]]  # sign(v − nearest) / D; bank is a constant
    dist = torch.tensor([1.0, 3.0, 2.0])
    assert float(category_loss(dist)) == 6.0
    assert float(instance_loss(dist, torch.tensor([CAR, CAR, PERSON]))) == pytest.approx((1 + 3) / 2 + 2)
    assert float(instance_loss(dist, torch.tensor([CAR, CAR, PERSON]), torch.tensor([2.0, 1.0, 0.5]))) == 3.5
    assert float(instance_loss(torch.zeros(0), torch.zeros(0, dtype=torch.long))) == 0.0


def test_separation_loss_by_hand():
    f = torch.tensor([[1.0, 0.0],  # stuff (road)
                      [1.0, 0.0],  # car instance 1: cos +1 → 1
                      [0.0, 1.0],  # car instance 2: cos 0 → 0.5
                      [-2.0, 0.0]])  # person: cos −1 → 0
    classes = torch.tensor([ROAD, CAR, CAR, PERSON])
    is_thing = torch.tensor([False, True, True, True])
    # (1/2)·1 + (1/2)·0.5 + 1·0 = 0.75, times κ
    assert float(separation_loss(f, classes, is_thing, kappa=2.0)) == pytest.approx(1.5)
    # all pairs of different classes add car1–person (1/2·0) and car2–person (1/2·0.5); car–car is one class
    assert float(separation_loss(f, classes, is_thing, kappa=2.0, pairs="all")) == pytest.approx(2.0)
    assert float(separation_loss(f[:1], classes[:1], is_thing[:1])) == 0.0
    with pytest.raises(ValueError):
        separation_loss(f, classes, is_thing, pairs="stuff_stuff")


def test_aim_weights_by_hand():
    classes = torch.tensor([ROAD, SKY])
    table = torch.ones(19)
    table[SKY] = 10.0
    for mode, loss_value, grad in [("self", 0.25 + 4.0, [1.0, 4.0]),  # w = d: d², gradient 2d
                                   ("self_detached", 4.25, [0.5, 2.0]),  # gradient d
                                   ("class_table", 0.5 + 20.0, [1.0, 10.0]),
                                   ("none", 2.5, [1.0, 1.0])]:
        d = torch.tensor([0.5, 2.0], requires_grad=True)
        loss = category_loss(d, aim_weights(d, classes, mode, table))
        loss.backward()
        assert float(loss.detach()) == pytest.approx(loss_value) and d.grad.tolist() == pytest.approx(grad), mode
    d = torch.tensor([0.5, 2.0])
    assert aim_weights(d, classes, "self", clamp=True).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError):
        aim_weights(d, classes, "static")


def test_classwise_thresholds_from_histograms():
    bins = 100
    conf = torch.tensor([0.15, 0.55, 0.35, 0.75,  # class 0: N 4 → index round(2) = 2 of sorted → 0.55
                         0.95, 0.97, 0.99,  # class 1: median 0.97 → capped at 0.9
                         0.2, 0.3, 0.4, 0.6, 0.7,  # class 3: N 5 → index round(2.5) = 2 (half to even) → 0.4
                         0.2, 0.3, 0.8,  # class 4: N 3 → index round(1.5) = 2 → 0.8
                         1.0, 0.5])  # ignored prediction (255) and a class-5 pixel at p = 1 (last bin)
    pred = torch.tensor([0] * 4 + [1] * 3 + [3] * 5 + [4] * 3 + [255, 5])
    hist = confidence_histogram(conf.view(1, -1), pred.view(1, -1), num_classes=6, bins=bins)
    assert hist.shape == (6, bins) and hist.dtype == torch.float64 and hist.sum() == 16
    assert hist[5, bins - 1] == 0 and hist[5].sum() == 1 and hist[5, 50] == 1
    # split over two images: the histograms add up
    half = confidence_histogram(conf[:8], pred[:8], 6, bins) + confidence_histogram(conf[8:], pred[8:], 6, bins)
    assert torch.equal(half, hist)
    tau = classwise_thresholds(hist, cap=0.9)
    assert tau.tolist() == pytest.approx([0.55, 0.9, 0.0, 0.4, 0.8, 0.5])  # class 2 never predicted → 0
    one = confidence_histogram(torch.tensor([1.0]), torch.tensor([0]), 1, bins)
    assert one[0, bins - 1] == 1 and float(classwise_thresholds(one, cap=1.0)[0]) == pytest.approx(0.99)


def test_classwise_thresholds_match_the_exact_rule_within_one_bin():
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(5000, generator=g) ** 0.3
    pred = torch.randint(0, 4, (5000,), generator=g)
    bins = 1000
    tau = classwise_thresholds(confidence_histogram(conf, pred, 4, bins), cap=1.0)
    for c in range(4):
        x = conf[pred == c].sort().values.numpy()
        exact = x[int(np.round(0.5 * len(x)))]
        assert exact - 1 / bins - 1e-6 < tau[c] <= exact + 1e-6


# -- the method ----------------------------------------------------------------------------
def _method(step: int = 1, **overrides):
    cfg = OmegaConf.merge(OmegaConf.structured(BafftConfig),
                          {"step": step, "disc_width": 8, "stuff_bank_size": 2, "thing_bank_size": 3, **overrides})
    schedule = OmegaConf.structured(ScheduleConfig(optimizer="sgd", lr=1e-3, warmup_iters=0, power=0.9))
    ctx = MethodContext(model_cfg=TINY_MODEL, schedule=schedule, iters=10, label_space=CS, device=torch.device("cpu"))
    torch.manual_seed(0)
    method = create_method(cfg, ctx)
    method.train()
    return method


def _batch(g, pseudo: bool = False):
    batch = {"img": torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8, generator=g),
             "label": torch.randint(0, 19, (2, 32, 64), generator=g)}
    if pseudo:
        label = torch.randint(0, 19, (2, 32, 64), generator=g)
        batch["pseudo_label"] = torch.where(torch.rand(label.shape, generator=g) < 0.3, 255, label)
    return batch


def _fill_every_bank(method, g):
    for bank in (method.stuff_bank, method.thing_bank):
        for k in bank.class_ids:
            bank.push(k, torch.rand(bank.capacity + 1, bank.entries.shape[-1], generator=g))


def test_bank_filling_uses_correct_pixels_and_the_classifier_check(monkeypatch):
    method = _method()
    dim = method.stuff_bank.entries.shape[-1]
    features = torch.zeros(1, dim, 2, 4)
    features[0, 0] = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    label = torch.tensor([[[ROAD, ROAD, ROAD, CAR], [SKY, CAR, 255, SIDEWALK]]])
    pred = torch.tensor([[[ROAD, ROAD, SKY, CAR], [SKY, CAR, ROAD, ROAD]]])
    logits = torch.nn.functional.one_hot(pred, 19).permute(0, 3, 1, 2).float()
    verdicts = {}
    monkeypatch.setattr(method, "classifier_check",
                        lambda v, c: torch.tensor([verdicts.get(int(k), True) for k in c], dtype=torch.bool))
    verdicts[SKY] = False
    method.fill_banks(features, logits, label)
    stuff, thing = method.stuff_bank, method.thing_bank
    # road is correct at (0,0) and (0,1) only ((0,2) is predicted sky): mean of 1 and 2
    assert stuff.bank(ROAD)[0, 0] == 1.5 and int(stuff.writes[stuff.row[ROAD]]) == 1
    assert stuff.bank(ROAD)[0, 1:].abs().sum() == 0
    assert int(stuff.writes[stuff.row[SIDEWALK]]) == 0  # predicted road: not a correct pixel
    assert int(stuff.writes[stuff.row[SKY]]) == 0  # correct, but rejected by the classifier check
    # car at (0,3) and (1,1): not 8-neighbours, so two instances (values 4 and 6)
    assert int(thing.writes[thing.row[CAR]]) == 2 and sorted(thing.bank(CAR)[:2, 0].tolist()) == [4.0, 6.0]

    # a label map at 4× the feature size comes down by nearest resizing to the same class means
    method2 = _method()
    monkeypatch.setattr(method2, "classifier_check", lambda v, c: torch.ones(len(c), dtype=torch.bool))
    method2.fill_banks(features, logits, label.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2))
    assert torch.equal(method2.stuff_bank.bank(ROAD), stuff.bank(ROAD))
    assert torch.equal(method2.thing_bank.bank(CAR), thing.bank(CAR))
    assert method2.stuff_bank.bank(SKY)[0, 0] == 5.0  # accepted this time


def test_classifier_check_is_the_centre_tap_linear_classifier():
    method = _method()
    head = method.student.decode_head
    v = torch.randn(5, head.in_channels[-1])
    expected = sum(conv.weight[:, :, 1, 1] @ v.t() + conv.bias[:, None]
                   for conv in head.conv2d_list[:head.active_branches]).t()
    logits = head.classify(v[:, :, None, None]).flatten(1)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(method.classifier_check(v, expected.argmax(1)), torch.ones(5, dtype=torch.bool))


def test_target_terms_need_warm_banks_and_reach_the_features(monkeypatch):
    g = torch.Generator().manual_seed(1)
    method = _method(step=2)
    monkeypatch.setattr(method, "classifier_check", lambda v, c: torch.ones(len(c), dtype=torch.bool))
    features = torch.rand(1, method.stuff_bank.entries.shape[-1], 4, 4, generator=g, requires_grad=True)
    pred = torch.tensor([[ROAD] * 4, [ROAD, CAR, ROAD, PERSON], [ROAD] * 4, [CAR, ROAD, ROAD, ROAD]])
    logits = torch.nn.functional.one_hot(pred, 19).permute(2, 0, 1)[None].float()
    cold = method.target_terms(features, logits)
    assert all(float(v.detach()) == 0.0 for v in cold.values()) and set(cold) == {"cls", "ins", "sep"}
    _fill_every_bank(method, g)
    assert float(sum(method.target_terms(features, logits, active=False).values()).detach()) == 0.0
    terms = method.target_terms(features, logits)
    # road (stuff) against two car instances and one person: all three terms are on
    assert all(float(v.detach()) > 0 for v in terms.values())
    # by hand (AIM w = d): cls = d_road², ins = mean of d² over the 2 car instances + person's d²
    def d(mask, bank, k):
        return float(nearest_l1_distance(masked_average(features[0].detach(), mask.float()[None]), bank.bank(k))[0])
    car1, car2 = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    car1[1, 1], car2[3, 0] = True, True
    assert float(terms["cls"].detach()) == pytest.approx(d(pred == ROAD, method.stuff_bank, ROAD) ** 2, rel=1e-5)
    expected_ins = (d(car1, method.thing_bank, CAR) ** 2 + d(car2, method.thing_bank, CAR) ** 2) / 2 \
        + d(pred == PERSON, method.thing_bank, PERSON) ** 2
    assert float(terms["ins"].detach()) == pytest.approx(expected_ins, rel=1e-5)
    sum(terms.values()).backward()
    assert features.grad.abs().sum() > 0


def _check_losses(losses, names):
    assert set(losses) == names
    for k, v in losses.items():
        assert v.ndim == 0 and torch.isfinite(v) and not v.requires_grad, k


def test_train_step_step1_and_resume_keeps_the_banks(monkeypatch):
    g = torch.Generator().manual_seed(0)
    method = _method(step=1)
    for it in range(3):
        losses = method.train_step(_batch(g), _batch(g), it)
        _check_losses(losses, {"loss_seg", "loss_adv", "loss_cls", "loss_ins", "loss_disc"})
    _fill_every_bank(method, g)
    monkeypatch.setattr(method, "classifier_check", lambda v, c: torch.ones(len(c), dtype=torch.bool))
    losses = method.train_step(_batch(g), _batch(g), 3)
    assert float(losses["loss_cls"] + losses["loss_ins"]) > 0  # every bank warm, every region accepted
    state = method.checkpoint_state()
    assert "stuff_bank.entries" in state["modules"] and "thing_bank.writes" in state["modules"]
    restored = _method(step=1)
    restored.load_checkpoint_state(state)
    assert torch.equal(restored.thing_bank.entries, method.thing_bank.entries)
    assert torch.equal(restored.stuff_bank.writes, method.stuff_bank.writes)


def test_train_step_step2_needs_pseudo_labels(monkeypatch):
    g = torch.Generator().manual_seed(0)
    method = _method(step=2)
    with pytest.raises(ConfigError, match="benchmark.target.pseudo_labels"):
        method.train_step(_batch(g), _batch(g), 0)
    names = {"loss_seg", "loss_adv", "loss_cls", "loss_ins", "loss_sep", "loss_pseudo", "loss_disc"}
    _check_losses(method.train_step(_batch(g), _batch(g, pseudo=True), 0), names)
    _fill_every_bank(method, g)
    monkeypatch.setattr(method, "classifier_check", lambda v, c: torch.ones(len(c), dtype=torch.bool))
    losses = method.train_step(_batch(g), _batch(g, pseudo=True), 1)
    _check_losses(losses, names)
    assert float(losses["loss_cls"] + losses["loss_ins"]) > 0 and float(losses["loss_pseudo"]) > 0
    assert method.aim_table[SKY] == 10.0 and method.cls_lambda == 0.001  # step 2's weight when null


def test_config_errors():
    with pytest.raises(ConfigError, match="step"):
        _method(step=3)
    with pytest.raises(ConfigError, match="aim_weight"):
        _method(aim_weight="static")
    with pytest.raises(ConfigError, match="deeplabv2_aspp"):
        cfg = OmegaConf.merge(OmegaConf.structured(BafftConfig), {"disc_width": 8})
        model = {**TINY_MODEL, "head": "segformer", "head_options": {"embed_dim": 16}}
        ctx = MethodContext(model_cfg=model, schedule=OmegaConf.structured(ScheduleConfig), iters=10,
                            label_space=CS, device=torch.device("cpu"))
        create_method(cfg, ctx)


def test_trains_through_the_trainer(tmp_path, minicity_small):
    from udaseg import config as config_lib
    from udaseg.engine import trainer

    model = tmp_path / "tiny_deeplab.yaml"
    model.write_text(json.dumps(TINY_MODEL))
    args = ["benchmark=minicity_gta2cs", "method=bafft", f"model={model}", "schedule=minicity",
            f"data_root={minicity_small}", "iters=2", "benchmark.batch_size=1", "benchmark.source.crop_size=[32,64]",
            "benchmark.target.crop_size=[32,64]", "log_every=1", "checkpoint_every=2", "eval_every=0", "workers=0",
            "threads=1", "method.disc_width=8"]
    run = tmp_path / "run"
    trainer.train(config_lib.compose(args), run, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' not in line]
    assert {"loss_seg", "loss_adv", "loss_cls", "loss_ins", "loss_disc", "bafft_ready_stuff"} <= set(rows[0])
    assert config_lib.compose(["benchmark=minicity_gta2cs", "method=bafft_step2", f"model={model}",
                               "schedule=minicity"]).method.step == 2


def test_minicity_experiment_plans_the_three_stages(tmp_path):
    from udaseg import config as config_lib
    from udaseg.engine import pipeline

    cfg = config_lib.compose(["minicity_cpu", "minicity_bafft", "benchmark=minicity_gta2cs"])
    (s1, c1), (s2, c2), (s3, c3) = pipeline.plan(cfg, tmp_path)
    assert (c1.method.name, c1.method.step, c1.model.name) == ("bafft", 1, "minicity_lite0_deeplab")
    assert s2.is_step and c2.rule == "classwise_median" and c2.cap == 0.9
    assert c3.method.step == 2 and c3.method.cls_lambda == 0.001 and c3.method.thing_bank_size == 100
    assert c3.benchmark.target.pseudo_labels == str(tmp_path / "stages" / s2.folder / "pseudo_labels")
    assert c3.model.init_from == str(tmp_path / "stages" / s1.folder)


def test_minicity_pipeline_runs_step1_pseudo_labels_step2(tmp_path, minicity_small):
    """minicity_bafft end to end on a tiny MiniCity: step 2 reads the class-wise-median pseudo-labels
    step 1's network wrote, and the thresholds obey the cap."""
    from PIL import Image

    from udaseg import config as config_lib
    from udaseg.engine.pipeline import run_pipeline

    model = tmp_path / "tiny_deeplab.yaml"
    model.write_text(json.dumps(TINY_MODEL))
    args = ["minicity_cpu", "minicity_bafft", "benchmark=minicity_gta2cs", f"model={model}",
            f"data_root={minicity_small}", "iters=2", "benchmark.batch_size=1", "benchmark.source.crop_size=[32,64]",
            "benchmark.target.crop_size=[32,64]", "log_every=1", "checkpoint_every=2", "workers=0", "threads=1",
            "method.disc_width=8"]
    run = tmp_path / "run"
    run_pipeline(config_lib.compose(args), run, progress=False)
    summary = json.loads((run / "stages" / "02_pseudo" / "summary.json").read_text())
    assert summary["rule"] == "classwise_median" and all(0.0 <= t <= 0.9 for t in summary["thresholds"].values())
    labels = sorted((run / "stages" / "02_pseudo" / "pseudo_labels").glob("*.png"))
    assert len(labels) == summary["images"]
    assert np.asarray(Image.open(labels[0])).max() <= 255
    rows = [json.loads(line) for line in (run / "stages" / "03_step2" / "metrics.jsonl").read_text().splitlines()
            if '"eval"' not in line]
    assert {"loss_pseudo", "loss_sep"} <= set(rows[0]) and np.isfinite(rows[0]["loss_pseudo"])
    assert json.loads((run / "eval.json").read_text())["stage"] == "step2"


@pytest.mark.slow
def test_banks_stay_identical_across_ddp_ranks(tmp_path, minicity_small):
    """Under DDP every rank pushes every rank's vectors (sync_banks): the banks, like the weights,
    are the same on both gloo ranks (~30 s: slow)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    model = tmp_path / "tiny_deeplab.yaml"
    model.write_text(json.dumps(TINY_MODEL))
    args = ["benchmark=minicity_gta2cs", "method=bafft", f"model={model}", "schedule=minicity",
            f"data_root={minicity_small}", "iters=6", "benchmark.batch_size=1", "benchmark.source.crop_size=[64,128]",
            "benchmark.target.crop_size=[64,128]", "log_every=1", "checkpoint_every=6", "eval_every=0", "workers=0",
            "threads=1", "method.disc_width=8", "method.stuff_bank_size=2", "method.thing_bank_size=2"]
    worker = Path(__file__).with_name("ddp_teacher_worker.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), str(tmp_path), json.dumps(args)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m0, m1 = (torch.load(tmp_path / f"method{r}.pt") for r in (0, 1))
    assert int(m0["stuff_bank.writes"].sum()) > 0
    for k in m0:
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(m0[k], m1[k]), k
