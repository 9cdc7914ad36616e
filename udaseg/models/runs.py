"""The networks saved in a udaseg run directory: where a run's config and result checkpoint are
(:func:`locate_run`), reading a checkpoint without running code from it (:func:`load_checkpoint`)
and one network's weights (:func:`network_weights`). Writing checkpoints and building a network
from its run's config are the engine's (udaseg/engine/checkpoint.py); these readers sit in the
models layer so that ``model.init_from`` (udaseg/models/factory.py) can use them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from udaseg.errors import UdasegError
from udaseg.models.weights import read_torch_file


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
    beside = run_config_of(source)
    if beside is not None:
        return beside, source
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


__all__ = ["load_checkpoint", "locate_run", "network_weights", "run_config_of"]
