"""``udaseg convert``: an authors' checkpoint (here DAFormer's mmseg/DACS layout, random values,
the reference's key names) becomes a run directory that eval, predict and model.init_from read,
with the same logits as udaseg's own model holding those weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from udaseg.cli import main
from udaseg.engine.checkpoint import load_network
from udaseg.models import create_model

MODEL = {"backbone": "mit_b0", "head": "daformer", "pretrained": None}


def _random_model(seed: int):
    torch.manual_seed(seed)
    model = create_model(MODEL, num_classes=19)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05)
    return model.eval()


def _mmseg_names(state: dict, prefix: str) -> dict:
    """udaseg's names → DAFormer's (mmseg decode head: conv_seg is the classifier)."""
    return {prefix + k.replace("decode_head.classifier.", "decode_head.conv_seg."): v for k, v in state.items()}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    student, teacher = _random_model(0), _random_model(1)
    path = tmp_path_factory.mktemp("release") / "daformer_gta2cs.pth"
    torch.save({"meta": {"iter": np.int64(40000), "CLASSES": ("road",) * 19, "config": "..."},
                "state_dict": {**_mmseg_names(student.state_dict(), "model."),
                               **_mmseg_names(teacher.state_dict(), "ema_model."),
                               **{f"imnet_model.{k}": v for k, v in student.state_dict().items()
                                  if k.startswith("backbone.")}}}, path)
    return path, student, teacher


def test_convert_then_eval_predict_and_init_from(released, minicity_small, tmp_path, capsys):
    path, student, teacher = released
    run = tmp_path / "daformer_release"
    assert main(["convert", str(path), f"data_root={minicity_small}", "--model", "mitb0_daformer",
                 "--benchmark", "minicity_gta2cs", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "student, teacher" in out and f"udaseg eval {run}" in out
    record = json.loads((run / "env.json").read_text())["converted_from"]
    assert record["networks"] == ["student", "teacher"] and len(record["sha256"]) == 64

    x = torch.rand(1, 3, 64, 128)
    for network, reference in (("student", student), ("teacher", teacher)):
        model, cfg = load_network(run, network)
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))
    assert cfg.model.pretrained is None

    assert main(["eval", str(run), "--network", "teacher", "--quiet", "--out", str(tmp_path / "e.json")]) == 0
    assert "cityscapes_val" in capsys.readouterr().out
    image = next((minicity_small / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "pred"), "--quiet"]) == 0

    # Fine-tuning starts from the run directory or straight from the released file.
    for source in (f"{run}:teacher", f"{path}:teacher"):
        model = create_model({**MODEL, "init_from": source}, num_classes=19).eval()
        with torch.no_grad():
            assert torch.equal(model(x), teacher(x))


def test_convert_with_the_wrong_model_lists_what_does_not_fit(released, tmp_path, capsys):
    path, _, _ = released
    out = tmp_path / "wrong"
    assert main(["convert", str(path), "--model", "mitb5_daformer", "--benchmark", "minicity_gta2cs",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err or "missing" in err, err
    assert not out.exists() and not list(tmp_path.glob(".wrong.*"))  # nothing half-written


def test_pretrained_takes_the_backbone_of_a_released_checkpoint(released):
    path, student, _ = released
    model = create_model({**MODEL, "pretrained": str(path)}, num_classes=19)
    own = student.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items() if k.startswith("backbone."))
