"""Nothing udaseg reads runs code: a crafted pickle is refused by every entry point that reads a
file (eval, predict, train --resume, model.init_from, model.pretrained, inputs.NAME=RUN_DIR),
its payload never runs, and the full unpickler needs the explicit --trust-checkpoint opt-in."""

from __future__ import annotations

import builtins
import random
import shutil

import numpy as np
import pytest
import torch
import yaml

from udaseg.cli import main
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_checkpoint, locate_run
from udaseg.errors import UdasegError
from udaseg.models.weights import checkpoint_trust, read_torch_file


class _Payload:
    """Unpickling this calls ``exec`` — which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').close()",)


def _crafted(path, marker, wrap=lambda payload: {"iter": 2, "method": {"modules": payload}}):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(_Payload(marker)), path)
    return path


@pytest.fixture()
def crafted_run(tiny_run, tmp_path):
    """A copy of the tiny run whose last.pt runs code when unpickled, and the marker it would write."""
    run, marker = tmp_path / "shared_run", tmp_path / "MARKER"
    shutil.copytree(tiny_run, run)
    _crafted(run / "checkpoints" / "last.pt", marker)
    return run, marker


def _refused(capsys, marker):
    err = capsys.readouterr().err
    assert "refused to unpickle exec " in err and "--trust-checkpoint" in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert not marker.exists()


def test_the_payload_would_run_under_the_full_unpickler(tmp_path):
    """The fixture is a real attack: the full unpickler runs it (which udaseg never does unasked)."""
    marker = tmp_path / "M"
    path = _crafted(tmp_path / "x.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_eval_and_predict_refuse_a_crafted_checkpoint(crafted_run, minicity_small, tmp_path, capsys):
    run, marker = crafted_run
    assert main(["eval", str(run), "--quiet"]) == 2
    _refused(capsys, marker)
    image = next((minicity_small / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "pred"), "--quiet"]) == 2
    _refused(capsys, marker)


def test_resume_refuses_a_crafted_checkpoint(crafted_run, capsys):
    run, marker = crafted_run
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 2
    _refused(capsys, marker)


@pytest.mark.parametrize("entry", ["model.init_from", "model.pretrained", "inputs"])
def test_training_refuses_crafted_weights(entry, crafted_run, tiny_train_args, tmp_path, capsys):
    run, marker = crafted_run
    if entry == "model.pretrained":  # a weights file in a released layout
        source = _crafted(tmp_path / "backbone.pth", marker, wrap=lambda payload: {"state_dict": payload})
        override = f"model.pretrained={source}"
    elif entry == "inputs":
        override = f"inputs.translator={run}"
    else:
        override = f"model.init_from={run}"
    args = tiny_train_args(iters=1)
    assert main(["train", *args, override, "--out", str(tmp_path / "new"), "--quiet"]) == 2
    _refused(capsys, marker)


def test_run_checkpoints_hold_only_tensors_and_plain_containers(tiny_run):
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)  # no allow-list needed
    assert state["iter"] == 2 and isinstance(state["rng"][0]["numpy"]["keys"], torch.Tensor)


def test_rng_state_round_trip_and_the_old_tuple_format():
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    state = trainer.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    trainer.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    np.random.seed(4)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    first = np.random.rand()
    trainer.set_rng_state(old)  # checkpoints before 0.1.0 (read under --trust-checkpoint)
    assert np.random.rand() == first


class _Options:
    """A harmless class of the kind older training scripts pickled beside the weights."""

    def __init__(self):
        self.lr = 0.1


def test_old_udaseg_checkpoints_still_load(tiny_run, tmp_path):
    """Checkpoints before 0.1.0 kept numpy's RNG tuple: numpy data is allow-listed, so they load
    (and resume) without the opt-in."""
    ckpt = tmp_path / "last.pt"
    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    state["rng"] = [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}]
    torch.save(state, ckpt)
    trainer.set_rng_state(load_checkpoint(ckpt)["rng"][0])


def test_other_classes_need_the_opt_in_which_warns(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = run / "checkpoints" / "last.pt"
    torch.save({**load_checkpoint(ckpt), "options": _Options()}, ckpt)
    with pytest.raises(UdasegError, match="refused to unpickle .*_Options"):
        load_checkpoint(ckpt)
    assert main(["eval", str(run), "--quiet", "--trust-checkpoint"]) == 0
    captured = capsys.readouterr()
    assert f"WARNING: --trust-checkpoint: reading {ckpt}" in captured.err
    assert f"checkpoint: {ckpt} (student)" in captured.out  # eval says which checkpoint it read
    with checkpoint_trust(True):
        assert load_checkpoint(ckpt)["options"].lr == 0.1
    with pytest.raises(UdasegError):  # the opt-in ends with its block
        load_checkpoint(ckpt)


def test_numpy_data_in_released_metadata_is_read_without_the_opt_in(tmp_path):
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {"iter": np.int64(40000), "best": np.float64(0.5), "PALETTE": np.zeros((2, 3), np.uint8)},
                "state_dict": {"w": torch.ones(2)}}, path)
    state = read_torch_file(path)
    assert state["meta"]["iter"] == 40000 and state["meta"]["PALETTE"].shape == (2, 3)


def test_a_planted_best_checkpoint_is_not_preferred(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / "best.pt").write_bytes((run / "checkpoints" / "last.pt").read_bytes())
    assert locate_run(run)[1].name == "last.pt"  # the run did not select on val
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["select_on_val"] = True
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert locate_run(run)[1].name == "best.pt"
