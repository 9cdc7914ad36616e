"""Atomic checkpoint files: written to a temporary name in the same folder, flushed to disk,
then renamed over the target, so a run killed at any moment leaves either the previous complete
checkpoint or the new one — never half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from udaseg.errors import UdasegError


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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UdasegError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a broken file
        raise UdasegError(f"cannot read checkpoint {path}: {err}") from None


def locate_run(source: str | os.PathLike) -> tuple[Path, Path]:
    """``(config.yaml, checkpoint)`` of a run directory or of a checkpoint file inside one
    (``RUN/checkpoints/last.pt``, or ``best.pt`` where the run selected on val with
    ``select_on_val``; a config.yaml beside the file is accepted too)."""
    source = Path(source)
    if source.is_dir():
        best = source / "checkpoints" / "best.pt"
        cfg, ckpt = source / "config.yaml", best if best.exists() else source / "checkpoints" / "last.pt"
        if not cfg.exists():
            raise UdasegError(f"{source} is not a udaseg run directory (no config.yaml)")
        if not ckpt.exists():
            raise UdasegError(f"{source} has no checkpoint yet ({ckpt} is missing); resume the run with "
                              f"udaseg train --resume --out {source}")
        return cfg, ckpt
    if not source.is_file():
        raise UdasegError(f"{source}: no such run directory or checkpoint file")
    for candidate in (source.parent / "config.yaml", source.parent.parent / "config.yaml"):
        if candidate.exists():
            return candidate, source
    raise UdasegError(f"{source}: no config.yaml beside it or in its run directory; the model is built "
                      "from the run's config (keep the checkpoint inside its run directory)")


def network_weights(source: str | os.PathLike, network: str = "student") -> tuple[dict, Path, Path]:
    """The state dict of the ``network`` (student, teacher …) saved in a udaseg run directory or
    checkpoint, with the run's config and checkpoint paths: ``(weights, config.yaml, checkpoint)``.
    A training-only auxiliary head (``aux_head.*``, TigDA's CMF head) is left out."""
    cfg_path, ckpt_path = locate_run(source)
    state = load_checkpoint(ckpt_path, map_location="cpu")
    modules = state.get("method", {}).get("modules") if isinstance(state, dict) else None
    if modules is None:
        raise UdasegError(f"{ckpt_path} is not a udaseg training checkpoint (no method state)")
    prefix = f"{network}."
    weights = {k[len(prefix):]: v for k, v in modules.items() if k.startswith(prefix)}
    if weights and all(k.startswith("model.") for k in weights):  # a wrapper such as EMATeacher
        weights = {k[len("model."):]: v for k, v in weights.items()}
    # Training-only auxiliary heads (TigDA's CMF head) are not part of the network.
    weights = {k: v for k, v in weights.items() if not k.startswith("aux_head.")}
    if not weights:
        present = sorted({k.split(".", 1)[0] for k in modules})
        raise UdasegError(f"{ckpt_path} holds no {network!r} network; it has: {', '.join(present)}")
    return weights, cfg_path, ckpt_path


def load_network(source: str | os.PathLike, network: str = "student", device: str | torch.device = "cpu"):
    """The ``network`` (student, teacher …) of a udaseg run or checkpoint, in eval mode on
    ``device``, with the run's resolved config: ``(model, cfg)``."""
    from omegaconf import OmegaConf

    from udaseg import config as config_lib
    from udaseg.data.catalog import get_label_space
    from udaseg.models import create_model, load_state_dict_strict

    weights, cfg_path, ckpt_path = network_weights(source, network)
    cfg = config_lib.load_resolved(cfg_path)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["pretrained"] = model_cfg["init_from"] = None  # the checkpoint holds every weight
    model = create_model(model_cfg, num_classes=get_label_space(cfg.benchmark.label_space).num_classes)
    load_state_dict_strict(model, weights, source=f"{ckpt_path} [{network}.*]")
    return model.to(device).eval(), cfg


def load_input(spec: str, key: str = "inputs") -> Any:
    """A method input (``inputs.NAME`` of the config): ``FILE.pt`` → its tensors (loaded with
    ``weights_only``), ``RUN_DIR`` or ``RUN_DIR:NETWORK`` → that network's state dict."""
    path, sep, network = str(spec).rpartition(":")
    if not sep or "/" in network or not Path(path).is_dir():
        path, network = str(spec), "student"
    if Path(path).is_dir() or Path(path).name == "last.pt":
        return network_weights(path, network)[0]
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UdasegError(f"{key}: {path} does not exist (written by an earlier stage?)") from None
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        raise UdasegError(f"{key}: cannot read {path} as a torch file of tensors: {err}") from None
