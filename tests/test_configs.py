"""Every shipped config group file composes against the schemas, and the MiniCity ones build."""

from __future__ import annotations

import pytest

from udaseg import config as config_lib
from udaseg.data.catalog import get_label_space
from udaseg.models import create_model

BASE = {"benchmark": "minicity_gta2cs", "method": "source_only", "model": "minicity_cnn", "schedule": "minicity"}


@pytest.mark.parametrize("group,name", [(g, n) for g in config_lib.GROUPS for n in config_lib.available(g)])
def test_every_group_file_composes(group, name):
    cfg = config_lib.compose([f"{g}={n}" for g, n in {**BASE, group: name}.items()])
    assert cfg.get(group) is not None
    if group == "benchmark":
        assert cfg.benchmark.name == name and cfg.benchmark.val
        get_label_space(cfg.benchmark.label_space)
        assert cfg.benchmark.metric in get_label_space(cfg.benchmark.label_space).eval_subsets


@pytest.mark.parametrize("name", config_lib.available("experiment"))
def test_every_experiment_composes(name):
    """On the CPU preset, with the experiment's own method and benchmark where it chooses them; the
    add-on experiments (MIC, TigDA, EBDA …) layer on the self-training method."""
    import yaml

    data = yaml.safe_load(config_lib.experiment_file(name).read_text())
    args = ["minicity_cpu", name]
    if not isinstance(data.get("benchmark"), str):
        args.append("benchmark=minicity_gta2cs")
    if not isinstance(data.get("method"), str):
        args.append("method=daformer_minicity")
    cfg = config_lib.compose(args)
    assert cfg.iters >= 1
    if isinstance(data.get("method"), str):
        assert cfg.method.name == config_lib._group_data("method", data["method"])[1]["name"]


def test_minicity_rcs_switches_rare_class_sampling_on():
    cfg = config_lib.compose(["minicity_cpu", "minicity_rcs", "benchmark=minicity_cs2acdc", "method=daformer_minicity"])
    assert cfg.benchmark.source.rcs.enabled and cfg.benchmark.source.rcs.min_pixels == 200
    assert cfg.benchmark.source.dataset == "cityscapes"  # merged into the chosen benchmark


@pytest.mark.parametrize("name", ["minicity_cnn", "minicity_cnn_hrda"])
def test_minicity_models_build(name):
    cfg = config_lib.compose([f"model={name}", "benchmark=minicity_gta2cs", "method=source_only", "schedule=minicity"])
    model = create_model(cfg.model, num_classes=19)
    assert model.num_classes == 19


def test_paper_protocols_of_the_deeplab_line_resize_val_images_as_pil_bicubic():
    from udaseg.errors import ConfigError

    for args in (["advent_paper", "benchmark=gta2cs"], ["daf_ida_paper", "benchmark=synthia2cs"],
                 ["daf_ida_paper", "daf_ida_mapillary", "benchmark=synthia2mapillary"]):
        val = config_lib.compose(args).benchmark.val
        assert [v.interpolation for v in val] == ["bicubic"] and val[0].test_scale
    assert config_lib.compose(["daformer_paper", "benchmark=gta2cs"]).benchmark.val[0].interpolation == "bilinear"
    with pytest.raises(ConfigError, match=r"benchmark.val\[0\].interpolation"):
        config_lib.compose(["benchmark=gta2cs", "method=source_only", "model=minicity_cnn", "schedule=minicity",
                            "benchmark.val=[{dataset: cityscapes, root: cityscapes, interpolation: area}]"])
