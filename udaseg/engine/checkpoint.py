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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A udaseg checkpoint, read without running code from it (tensors and plain containers only;
    :func:`udaseg.models.weights.read_torch_file`)."""
    state = read_torch_file(path, map_location=map_location, what="checkpoint")
    if not isinstance(state, dict):
        raise UdasegError(f"{path} is not a udaseg checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def _selects_on_val(cfg_path: Path) -> bool:
    import yaml

    try:
        return bool((yaml.safe_load(cfg_path.read_text()) or {}).get("select_on_val", False))
    except (OSError, yaml.YAMLError) as err:
        raise UdasegError(f"cannot read {cfg_path}: {err}") from None


def locate_run(source: str | os.PathLike) -> tuple[Path, Path]:
    """``(config.yaml, checkpoint)`` of a run directory or of a checkpoint file inside one: the
    run's result network — ``checkpoints/last.pt``, or ``best.pt`` only where the run's own
    config selected on val (``select_on_val``), so a ``best.pt`` dropped into a shared run
    directory is never preferred. A config.yaml beside the file is accepted too."""
    source = Path(source)
    if source.is_dir():
        cfg = source / "config.yaml"
        if not cfg.exists():
            raise UdasegError(f"{source} is not a udaseg run directory (no config.yaml)")
        best = source / "checkpoints" / "best.pt"
        ckpt = best if best.exists() and _selects_on_val(cfg) else source / "checkpoints" / "last.pt"
        if not ckpt.exists():
            raise UdasegError(f"{source} has no checkpoint yet ({ckpt} is missing); resume the run with "
                              f"udaseg train --resume --out {source}")
        return cfg, ckpt
    if not source.is_file():
        raise UdasegError(f"{source}: no such run directory or checkpoint file")
    cfg = run_config_of(source)
    if cfg is not None:
        return cfg, source
    raise UdasegError(f"{source}: no config.yaml beside it or in its run directory; the model is built "
                      "from the run's config (keep the checkpoint inside its run directory). A checkpoint "
                      "released with a paper: udaseg convert FILE --model PRESET --benchmark NAME --out RUN")


def run_config_of(checkpoint: Path) -> Path | None:
    """The config.yaml of the run directory a checkpoint file belongs to (beside it or one level
    up), or None for a file outside any run (e.g. a checkpoint released with a paper)."""
    for candidate in (checkpoint.parent / "config.yaml", checkpoint.parent.parent / "config.yaml"):
        if candidate.exists():
            return candidate
    return None


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
    ``device``, with the run's resolved config: ``(model, cfg)``. ``model.checkpoint_path`` names
    the file the weights came from (commands print it)."""
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
