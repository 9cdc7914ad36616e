"""Atomic checkpoint files: written to a temporary name in the same folder, flushed to disk,
then renamed over the target, so a run killed at any moment leaves either the previous complete
checkpoint or the new one — never half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from udaseg import config as config_lib
from udaseg.data.catalog import get_label_space
from udaseg.errors import UdasegError
from udaseg.models import create_model, load_state_dict_strict
from udaseg.models.runs import load_checkpoint, locate_run, network_weights, run_config_of  # noqa: F401
from udaseg.models.weights import read_torch_file


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_network(source: str | os.PathLike, network: str = "student", device: str | torch.device = "cpu"):
    """The ``network`` (student, teacher …) of a udaseg run or checkpoint, in eval mode on
    ``device``, with the run's resolved config: ``(model, cfg)``. ``model.checkpoint_path`` names
    the file the weights came from (commands print it)."""
    weights, cfg_path, ckpt_path = network_weights(source, network)
    cfg = config_lib.load_resolved(cfg_path)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["pretrained"] = model_cfg["init_from"] = None  # the checkpoint holds every weight
    model = create_model(model_cfg, num_classes=get_label_space(cfg.benchmark.label_space).num_classes)
    load_state_dict_strict(model, weights, source=f"{ckpt_path} [{network}.*]")
    model.checkpoint_path = ckpt_path
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
