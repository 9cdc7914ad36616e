"""Bad input and faults on the command line: a clear one-line error naming the key or file, no
traceback, nothing half-written (issue: reliability and first use)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch

from udaseg.cli import main
from udaseg.engine.checkpoint import load_checkpoint, save_atomic
from udaseg.errors import UdasegError


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("udaseg: error:") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("override, expected", [
    ("log_every=0", "'log_every' must be at least 1, got 0"),
    ("checkpoint_every=0", "'checkpoint_every' must be at least 1, got 0"),
    ("eval_every=-1", "'eval_every' must be ≥ 0 (0 = only at the end), got -1"),
    ("workers=-1", "'workers' must be ≥ 0"),
    ("seed=-1", "'seed' must be ≥ 0"),
    ("schedule.lr=nan", "'schedule.lr' must be a finite number > 0, got nan"),
    ("schedule.lr=-1", "'schedule.lr' must be a finite number > 0, got -1"),
    ("method=daformr", "unknown method 'daformr' (did you mean 'daformer'?)"),
    ("schedule.warmup_iter=3", "unknown key: 'schedule.warmup_iter' (did you mean 'warmup_iters'?)"),
    ("stages.foo.iters=3", "stages.foo.iters edits a pipeline stage, but this config has no stages"),
])
def test_bad_config_values_are_one_line_errors_and_leave_no_run(override, expected, tiny_train_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_train_args(iters=1), override, "--out", str(out), "--quiet"]) == 2
    assert expected in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(tiny_train_args, tmp_path, capsys):
    assert main(["train", *tiny_train_args(iters=1), "device=cuda", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "device=cuda: this machine has no usable CUDA GPU" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_a_failed_start_leaves_no_run_directory(tiny_train_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_train_args(iters=1), f"data_root={tmp_path / 'nowhere'}", "--out", str(out),
                 "--quiet"]) == 2
    assert "udaseg data check" in capsys.readouterr().err
    assert not out.exists()


def test_options_anywhere_and_resume_overrides(tiny_train_args, tmp_path, capsys):
    args = tiny_train_args(iters=2)
    run = tmp_path / "run"
    # An option between overrides: argparse alone stops at --quiet and rejects what follows.
    assert main(["train", *args[:3], "--quiet", *args[3:], "--out", str(run)]) == 0
    capsys.readouterr()
    # A resume takes key=value overrides of its own config (a change needs --force), not a new composition.
    assert main(["train", "--resume", "--out", str(run), "iters=3", "--quiet"]) == 2
    assert "iters: 2 → 3" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run), "iters=3", "--force", "--quiet"]) == 0
    assert json.loads((run / "eval.json").read_text())["iter"] == 3
    assert main(["train", "--resume", "--out", str(run), "method=daformer", "--quiet"]) == 2
    assert "--resume continues the run's own config.yaml" in _one_line_error(capsys)
    with pytest.raises(SystemExit):  # an unknown option is still argparse's usage error
        main(["train", *args, "--bogus", "--out", str(tmp_path / "x")])


def test_resume_cleans_orphans_and_says_when_there_is_no_checkpoint(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    orphan = run / "checkpoints" / ".last.pt.k1ll3d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    assert not orphan.exists()
    (run / "checkpoints" / "last.pt").unlink()
    rows_before = (run / "metrics.jsonl").read_text().splitlines()
    assert rows_before
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    assert "has no checkpoint yet; training starts at iteration 0" in capsys.readouterr().err
    iters = [json.loads(r)["iter"] for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(iters) == sorted(json.loads(r)["iter"] for r in rows_before)  # no duplicated rows


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_atomic({"x": torch.ones(1)}, tmp_path / "a.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


_FULL_DISK = """
import resource, sys, torch
from udaseg.engine.checkpoint import save_atomic
from udaseg.errors import UdasegError
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))   # writes past 1 MiB fail (EFBIG)
try:
    save_atomic({"w": torch.zeros(1 << 20)}, sys.argv[1])           # 4 MiB
except UdasegError as err:
    print(err)
    sys.exit(2)
"""


def test_a_failed_checkpoint_write_keeps_the_previous_file_and_says_why(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"w": torch.ones(3)}, path)
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stdout.strip()
    assert message.startswith(f"cannot write {path}:") and "the previous file is intact" in message
    assert len(message.splitlines()) == 1
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left


def test_an_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    import tempfile

    def refuse(*_, **__):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(UdasegError, match=r"cannot write .*last.pt: Read-only file system"):
        save_atomic({"w": torch.ones(1)}, tmp_path / "last.pt")


def test_eval_checks_its_out_file_before_evaluating(tiny_run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["eval", str(tiny_run), "--out", str(blocker / "e.json"), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "cannot write there" in err and "checkpoint:" not in capsys.readouterr().out


def test_predict_refuses_two_inputs_with_one_output_name(tiny_run, minicity_small, tmp_path, capsys):
    image = next((minicity_small / "cityscapes" / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(image, a / "x.png"), shutil.copy(image, b / "x.png"), shutil.copy(image, a / "x.jpg")
    shutil.copy(image, a / "y_leftImg8bit.png"), shutil.copy(image, a / "y.png")
    for inputs in ([a / "x.png", b / "x.png"], [a / "y_leftImg8bit.png", a / "y.png"], [a]):
        out = tmp_path / "pred"
        assert main(["predict", str(tiny_run), *map(str, inputs), "--out", str(out), "--quiet"]) == 2
        assert "would both be written as" in _one_line_error(capsys)
        assert not out.exists()


def test_a_read_only_run_folder_is_one_line(tiny_train_args, tmp_path, monkeypatch, capsys):
    from pathlib import Path

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(30, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["train", *tiny_train_args(iters=1), "--out", str(tmp_path / "ro" / "run"), "--quiet"]) == 2
    assert "Read-only file system" in _one_line_error(capsys)


def test_eval_on_another_root_does_not_blame_data_root(tiny_run, tmp_path, capsys):
    assert main(["eval", str(tiny_run), "--dataset", "acdc", "--root", str(tmp_path / "no_acdc"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "no_acdc") in err and "data_root" not in err


def test_progress_in_a_log_file_is_a_line_per_tenth(capsys):
    from udaseg.engine.trainer import progress_bar

    bar = progress_bar(100, 0, "run")  # pytest's captured stderr is not a terminal
    for _ in range(100):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("run: 100/100 (100%)")
