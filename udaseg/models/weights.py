"""Loading weights: pretrained backbones and whole-model checkpoints.

Two entry points with different strictness:

* :func:`load_pretrained` — initialise a (sub)module from someone else's weights (ImageNet MiT,
  the DeepLab ResNet-101 of AdaptSegNet/ADVENT, a SegFormer checkpoint). Keys are matched after
  stripping the prefix that matches best (``module.``, ``backbone.``, ``model.backbone.``,
  ``Scale.`` …). Keys the module lacks (an ImageNet classifier, a DeepLab ``layer5``) and keys the
  file lacks are *reported* in one log line each; a **shape mismatch is an error** listing the
  keys, and so is a file sharing no key with the module.
* :func:`load_state_dict_strict` / :func:`load_checkpoint` — restore our own model. Every key must
  match in name and shape; the error lists missing, unexpected and mismatched keys so that "a
  checkpoint of another model" is recognisable at a glance.

Sources accepted wherever a weight source is asked for: a local file (``.pt``/``.pth``/``.bin``
pickles of a state dict, possibly wrapped in ``state_dict``/``model``; or ``.safetensors``), an
``http(s)://`` URL (cached by ``torch.hub``), or ``hf-hub:<org>/<repo>[/<file>]`` (cached by
``huggingface_hub``; honours ``HF_HUB_OFFLINE``). Nothing here downloads unless the user names
a URL or hub id.

**Nothing read runs code.** A ``.pt``/``.pth`` file is a pickle, and unpickling may call any
function the file names. :func:`read_torch_file` — the one place udaseg reads a torch file — uses
``torch.load(weights_only=True)``: tensors, plain containers and numbers, plus numpy's data
constructors (scalars, dtypes, arrays — the only classes the ``meta`` of released mmcv/mmseg
checkpoints carries besides strings). Anything else is refused with a one-line error naming the
file and the offending global. The full unpickler runs only under the explicit opt-in
:func:`checkpoint_trust` (``--trust-checkpoint`` on the command line, ``trust_checkpoint=true``
in a training config), and then with a warning naming the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from udaseg.errors import UdasegError

log = logging.getLogger(__name__)

# Wrapper keys of common checkpoint layouts, unwrapped in this order (mmseg/DAFormer: state_dict;
# udaseg run checkpoints: modules; others: model / module).
_WRAPPER_KEYS = ("state_dict", "modules", "model", "module")
# Prefixes preferred when several match equally well (DAFormer checkpoints hold model.*,
# ema_model.* and imnet_model.*; the student, "model.", is the evaluated network).
_PREFERRED_PREFIXES = ("", "module.", "model.", "student.", "backbone.", "model.backbone.", "student.backbone.")
_MAX_LISTED = 12


class CheckpointMismatchError(UdasegError):
    """Weights that do not fit the model: missing, unexpected or wrongly shaped keys."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" … (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return shown + more


_TRUST = {"full_pickle": False}


@contextmanager
def checkpoint_trust(enabled: bool):
    """The opt-in, for the duration of a block (switched on when ``enabled`` or already on, then
    restored), that lets :func:`read_torch_file` fall back to the full unpickler (which can run
    code from the file) for files that hold objects beyond tensors, containers and numpy data
    (e.g. a training script's options object pickled beside the weights). Off by default; every
    such read warns, naming the file. (udaseg's own checkpoints never need it: even those before
    0.1.0, whose numpy RNG state is numpy data.)"""
    before = _TRUST["full_pickle"]
    _TRUST["full_pickle"] = before or bool(enabled)
    try:
        yield
    finally:
        _TRUST["full_pickle"] = before


def _numpy_data_globals() -> list:
    """numpy's data constructors, allowed by name under both module spellings (``numpy.core``
    before numpy 2, ``numpy._core`` since): they rebuild numbers and arrays, never call code."""
    import numpy as np

    core: Any = np._core if hasattr(np, "_core") else np.core
    scalar, reconstruct = core.multiarray.scalar, core.multiarray._reconstruct
    allowed: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(scalar, f"{module}.scalar"), (reconstruct, f"{module}._reconstruct")]
    allowed += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return allowed


def _unpickler_complaint(err: Exception) -> tuple[str | None, str]:
    """(the global a weights-only read refused, e.g. ``os.system``, or None; torch's complaint in
    one line) from torch's long message."""
    text = str(err)
    marker = "Unsupported global: GLOBAL "
    if marker in text:
        refused = text.split(marker, 1)[1].split()[0]
        return refused, f"it names {refused}"
    detail = " ".join(text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation")[0].split())
    return None, detail or type(err).__name__


def read_torch_file(path: str | os.PathLike, *, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load`` that never runs code from the file (see the module docstring): a file that
    needs more than tensors, containers and numpy data is refused with a one-line
    :class:`~udaseg.errors.UdasegError` — unless :func:`checkpoint_trust` is on."""
    path = Path(path)
    if not path.is_file():
        raise UdasegError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused, complaint = _unpickler_complaint(err)
        if not _TRUST["full_pickle"]:
            if refused is None:  # not a pickle of plain data at all (truncated, another format)
                raise UdasegError(f"cannot read {what} {path}: not a torch file of tensors ({complaint})") from None
            raise UdasegError(
                f"{what} {path}: refused to unpickle {refused} — reading it could run code from the file; "
                "udaseg reads tensors and plain containers only. If you trust the file, pass --trust-checkpoint "
                "(in a training config: trust_checkpoint=true)") from None
        message = (f"--trust-checkpoint: reading {path} with the full unpickler ({complaint}); "
                   "this runs whatever code the file names")
        log.warning(message)
        print(f"WARNING: {message}", file=sys.stderr)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err2:  # noqa: BLE001 - a broken file under the opt-in
            raise UdasegError(f"cannot read {what} {path}: {_first_line(err2)}") from None
    except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file …
        raise UdasegError(f"cannot read {what} {path}: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_state_dict(source: str | os.PathLike | Mapping) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a file, URL, ``hf-hub:`` id or an in-memory mapping."""
    if isinstance(source, Mapping):
        state = source
    else:
        text = str(source)
        if text.startswith("hf-hub:"):
            state = _read_hf_hub(text[len("hf-hub:"):])
        elif text.startswith(("http://", "https://")):
            state = _read_url(text)
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise UdasegError(f"weights file not found: {path}")
            state = _read_file(path)
    for key in _WRAPPER_KEYS:  # unwrap {"state_dict": {...}} and friends
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _read_file(path: Path) -> Mapping:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return read_torch_file(path, what="weights file")


def _read_url(url: str) -> Mapping:
    """A URL's file, downloaded into torch.hub's cache, then read like a local file."""
    from urllib.parse import urlparse

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / os.path.basename(urlparse(url).path)
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    return _read_file(path)


def _read_hf_hub(spec: str) -> Mapping:
    from huggingface_hub import hf_hub_download

    parts = spec.split("/")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or "model.safetensors"
    path = hf_hub_download(repo_id, filename=filename)
    return _read_file(Path(path))


def _best_prefix(ckpt_keys: list[str], model_keys: set[str]) -> tuple[str, int]:
    """The key prefix (up to two dotted components, or none) whose removal matches the most
    model keys. Ties go to the earlier entry of ``_PREFERRED_PREFIXES``, then the shorter one."""
    candidates = {""}
    for key in ckpt_keys:
        parts = key.split(".")
        for depth in (1, 2):
            if len(parts) > depth:
                candidates.add(".".join(parts[:depth]) + ".")

    def score(prefix: str) -> tuple[int, int, int]:
        hits = sum(1 for k in ckpt_keys if k.startswith(prefix) and k[len(prefix):] in model_keys)
        rank = _PREFERRED_PREFIXES.index(prefix) if prefix in _PREFERRED_PREFIXES else len(_PREFERRED_PREFIXES)
        return hits, -rank, -len(prefix)

    best = max(sorted(candidates), key=score)
    return best, score(best)[0]


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _shape_mismatches(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    own = module.state_dict()
    return [f"{k} (file {tuple(v.shape)} vs model {tuple(own[k].shape)})"
            for k, v in state.items() if k in own and own[k].shape != v.shape]


def load_pretrained(module: nn.Module, source: str | os.PathLike | Mapping, *, what: str = "model") -> dict:
    """Initialise ``module`` from pretrained weights, tolerating extra and missing keys.

    Returns ``{"prefix", "loaded", "missing", "unexpected"}``. Raises
    :class:`CheckpointMismatchError` when no key fits or when shapes differ.
    """
    full = read_state_dict(source)
    model_keys = set(module.state_dict())
    prefix, hits = _best_prefix(list(full), model_keys)
    if hits == 0:
        raise CheckpointMismatchError(
            f"{what}: no parameter of {source} matches the model — weights of another model? "
            f"file keys: {_listing(sorted(full))}; model keys: {_listing(sorted(model_keys))}")
    state = _strip(full, prefix)
    bad = _shape_mismatches(module, state)
    if bad:
        raise CheckpointMismatchError(f"{what}: shape mismatch loading {source}: {_listing(bad)}")
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = sorted(set(full) - {prefix + k for k in model_keys})
    log.info("%s: loaded %d tensors from %s%s", what, len(state) - len(result.unexpected_keys), source,
             f" (prefix {prefix!r} stripped)" if prefix else "")
    if missing:
        log.warning("%s: %d keys not in %s, left at their initialisation: %s", what, len(missing), source,
                    _listing(missing))
    if unexpected:
        log.info("%s: %d keys of %s not used: %s", what, len(unexpected), source, _listing(unexpected))
    return {"prefix": prefix, "loaded": len(state) - len(result.unexpected_keys), "missing": missing,
            "unexpected": unexpected}


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """``module.load_state_dict(state)`` with every key required, and an error that lists what
    differs (missing, unexpected, shape) instead of PyTorch's wall of text. A uniform DDP
    ``module.`` prefix is removed first."""
    if state and all(k.startswith("module.") for k in state):
        state = _strip(state, "module.")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = _shape_mismatches(module, state)
    if missing or unexpected or bad:
        raise mismatch_error(f"{source} does not fit this model (a checkpoint of another model or config?)",
                             {"missing": missing, "unexpected": unexpected, "shape mismatch": bad})
    module.load_state_dict(state, strict=True)


def mismatch_error(headline: str, kinds: Mapping[str, list[str]]) -> CheckpointMismatchError:
    """The error for weights that do not fit: the headline, then one line per non-empty kind of
    problem (``missing``, ``unexpected`` …) with its count and the first keys."""
    lines = [headline] + [f"  {kind} ({len(keys)}): {_listing(keys)}" for kind, keys in kinds.items() if keys]
    return CheckpointMismatchError("\n".join(lines))


def load_checkpoint(module: nn.Module, source: str | os.PathLike | Mapping, *, prefix: str | None = None) -> str:
    """Load a whole-model checkpoint strictly. The file may hold the model under a prefix
    (``model.``, ``student.``, ``module.``): give ``prefix`` or let the best-matching one be
    found (ties prefer the student / ``model.``). Keys outside the prefix (a teacher, an ImageNet
    model, optimizer state) are ignored; every key of the model must be present. Returns the
    prefix used."""
    full = read_state_dict(source)
    if prefix is None:
        prefix, hits = _best_prefix(list(full), set(module.state_dict()))
        if hits == 0:
            raise CheckpointMismatchError(
                f"no parameter of {source} matches the model — a checkpoint of another model? "
                f"file keys: {_listing(sorted(full))}")
    load_state_dict_strict(module, _strip(full, prefix), source=f"{source}" + (f" [{prefix}*]" if prefix else ""))
    return prefix
