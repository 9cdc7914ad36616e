"""Atomic checkpoint files: written to a temporary name in the same folder, flushed to disk,
then renamed over the target, so a run killed at any moment leaves either the previous complete
checkpoint or the new one — never half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from udaseg import config as config_lib
from udaseg.data.catalog import get_label_space
from udaseg.errors import UdasegError
from udaseg.models import create_model, load_state_dict_strict
from udaseg.models.runs import load_checkpoint, locate_run, network_weights, run_config_of  # noqa: F401
from udaseg.models.weights import read_torch_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flushed, then renamed over it, with the
    permissions of an ordinary new file (the umask's). A failed write (disk full, read-only
    filesystem, file-size limit) removes the temporary file, leaves the previous ``path`` intact
    and raises a one-line :class:`UdasegError` saying why."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UdasegError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a failed write as RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise UdasegError(f"cannot write {path}: {_write_failure(err, path.parent)}"
                          + ("; the previous file is intact" if path.exists() else "")) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_failure(err: BaseException, folder: Path) -> str:
    """Why a write failed, in words: the OS error, or (torch's zip writer hides it) the free space."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < (64 << 20):
        return f"the disk is full ({free >> 20} MiB free)"
    return "the write failed (disk full, a file-size limit or a quota?)"


def remove_orphan_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed run left in ``folder``
    (``.last.pt.*.tmp``); returns them. Safe only while no other process writes there."""
    orphans = sorted(Path(folder).glob(".*.pt.*.tmp")) if Path(folder).is_dir() else []
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans


def load_network(source: str | os.PathLike, network: str = "student", device: str | torch.device = "cpu"):
    """The ``network`` (student, teacher …) of a udaseg run or checkpoint, in eval mode on
    ``device``, with the run's resolved config: ``(model, cfg)``. ``model.checkpoint_path`` names
    the file the weights came from (commands print it)."""
    weights, cfg_path, ckpt_path = network_weights(source, network)
    cfg = config_lib.load_resolved(cfg_path)
    model_cfg = config_lib.to_dict(cfg.model)
    model_cfg["pretrained"] = model_cfg["init_from"] = None  # the checkpoint holds every weight
    model = create_model(model_cfg, num_classes=get_label_space(cfg.benchmark.label_space).num_classes)
    load_state_dict_strict(model, weights, source=f"{ckpt_path} [{network}.*]")
    model.checkpoint_path = ckpt_path  # type: ignore[assignment]  # a plain attribute, not a submodule
    return model.to(device).eval(), cfg


def load_input(spec: str, key: str = "inputs") -> Any:
    """A method input (``inputs.NAME`` of the config): ``FILE.pt`` → its tensors (loaded with
    ``weights_only``), ``RUN_DIR`` or ``RUN_DIR:NETWORK`` → that network's state dict."""
    path, sep, network = str(spec).rpartition(":")
    if not sep or "/" in network or not Path(path).is_dir():
        path, network = str(spec), "student"
    if Path(path).is_dir() or Path(path).name == "last.pt":
        return network_weights(path, network)[0]
    if not Path(path).exists():
        raise UdasegError(f"{key}: {path} does not exist (written by an earlier stage?)")
    return read_torch_file(path, what=key)
