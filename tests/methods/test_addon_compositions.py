"""Every composition of DAFormer's add-ons runs (issue 21): each base (DAFormer, HRDA) × each subset
of {MIC, TigDA, EBDA}, with the ImageNet feature distance on, trains 2 iterations on batches of the
tiny MiniCity and its losses are finite. TigDA uses the reference's image-vector conv built for the
32×64 crop, which HRDA's 16×32 context and detail views do not fit (udaseg/models/heads/cmf.py
pools them onto its grid); the flat keys of earlier versions still load, with a deprecation message."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from udaseg import config as config_lib
from udaseg.errors import ConfigError

ADDONS = ("mic", "tigda", "ebda")
SUBSETS = [s for n in range(len(ADDONS) + 1) for s in itertools.combinations(ADDONS, n)]
HRDA = ["model.hrda={hr_crop_size: [16, 32], hr_slide_stride: [8, 16], test_window: [32, 64], "
        "test_stride: [16, 32], attention_embed_dim: 8}"]
OPTIONS = {"method.pseudo_ignore_top": 0, "method.pseudo_ignore_bottom": 4, "method.fd.classes": "null",
           "method.mic.block_size": 8, "method.tigda.embed_dim": 16, "method.tigda.n_ctx": 4,
           "method.tigda.fusion": "conv1x1", "method.tigda.image_vector": "conv", "method.tigda.image_size": "[32,64]",
           "benchmark.target.pseudo_margins": "[2,8,2,2]"}


_BATCHES: list = []
_TOWERS: dict = {}


@pytest.fixture
def shared_tower(monkeypatch):
    """One frozen text tower for every TigDA case (it is frozen and shared by design)."""
    from udaseg.models import text_towers

    build = text_towers.build_text_tower
    monkeypatch.setattr(text_towers, "build_text_tower",
                        lambda *args: _TOWERS[args] if args in _TOWERS else _TOWERS.setdefault(args, build(*args)))


@pytest.fixture
def batches(tiny_train_args):
    """Two source and two target batches of the tiny MiniCity, through the trainer's data pipeline
    (made once for the module)."""
    from udaseg.engine.trainer import build_stream, make_loader

    if not _BATCHES:
        cfg = config_lib.compose(tiny_train_args("daformer_minicity", iters=2, **OPTIONS))
        bench = cfg.benchmark
        loaders = [make_loader(build_stream(spec, cfg.data_root, bench.label_space, cfg.seed, i), 0, cfg,
                               torch.device("cpu")) for i, spec in enumerate((bench.source, bench.target))]
        _BATCHES.extend((next(loaders[0]), next(loaders[1])) for _ in range(2))
    return _BATCHES


def _method(args):
    from udaseg.data.catalog import get_label_space
    from udaseg.methods import MethodContext, create_method

    cfg = config_lib.compose(args)
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=cfg.iters,
                        label_space=get_label_space(cfg.benchmark.label_space), device=torch.device("cpu"))
    return create_method(cfg.method, ctx)


@pytest.mark.parametrize("addons", SUBSETS, ids=lambda s: "+".join(s) or "none")
@pytest.mark.parametrize("base", ["daformer", "hrda"])
def test_every_composition_trains(tiny_train_args, batches, shared_tower, base, addons):
    torch.manual_seed(0)
    switches = {f"method.{a}": "true" for a in addons}
    args = tiny_train_args("daformer_minicity", iters=2, **OPTIONS, **switches) + (HRDA if base == "hrda" else [])
    method = _method(args).train()
    assert [a.key for a in method.addons] == ["fd", *[a for a in ("tigda", "ebda", "mic") if a in addons]]
    addon_losses = {"mic": "loss_mic", "ebda": "loss_eb"}
    expected = {"loss_src", "loss_fd", "loss_mix"} | {addon_losses[a] for a in addons if a != "tigda"}
    for it, (source, target) in enumerate(batches):
        losses = method.train_step(source, target, it)
        assert set(losses) == expected
        assert all(math.isfinite(float(v)) for v in losses.values()), losses
    if "tigda" in addons:
        assert method.student.aux_head.image_vector.kernel_size == (1, 2)  # built for the 32×64 crop


def test_flat_keys_of_earlier_versions_load_with_a_deprecation_message(tiny_train_args, tmp_path):
    flat = tiny_train_args("daformer_minicity", **{"method.mic": "true", "method.mic_block_size": 8,
                                                    "method.mic_lambda": 0.5, "method.tigda_n_ctx": 4,
                                                    "method.ebda_mode": "reuse", "method.fd_lambda": 0})
    with pytest.warns(FutureWarning) as record:
        cfg = config_lib.compose(flat)
    messages = " ".join(str(w.message) for w in record)
    assert "method.mic_block_size → method.mic.block_size" in messages
    assert "method.mic_lambda → method.mic.weight" in messages
    assert cfg.method.mic == {"enabled": True, "mode": "separatetrgaug", "block_size": 8, "ratio": 0.7, "weight": 0.5}
    assert (cfg.method.tigda.n_ctx, cfg.method.ebda.mode, cfg.method.fd.weight) == (4, "reuse", 0)
    both = tmp_path / "both.yaml"
    both.write_text("method:\n  mic: {enabled: true, block_size: 8}\n  mic_block_size: 16\n")
    with pytest.raises(ConfigError, match="method.mic.block_size given twice"):
        config_lib.compose([str(both), *tiny_train_args("daformer_minicity")])


def test_old_run_config_loads(tmp_path, tiny_train_args):
    """A run directory's config.yaml written with the flat keys (the records under docs/results/runs_v1)."""
    import yaml

    cfg = config_lib.compose(tiny_train_args("daformer_minicity"))
    data = yaml.safe_load(config_lib.to_yaml(cfg))
    method = data["method"]
    for key in ("fd", "mic", "tigda", "ebda"):
        for name, value in method.pop(key).items():
            method[key if name == "enabled" else f"{key}_{'lambda' if name == 'weight' else name}"] = value
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.warns(FutureWarning, match="flat add-on keys are deprecated"):
        loaded = config_lib.load_resolved(tmp_path / "config.yaml")
    assert loaded == cfg
