"""``udaseg convert``: a checkpoint released with a paper → a udaseg run directory.

The authors of DAFormer, HRDA, MIC, TigDA, EBDA and DiGA released their trained networks in their
own layouts (mmseg's ``state_dict`` with ``model.*`` / ``ema_model.*``, HRDA's
``decode_head.head.*``, ProDA's ``ResNet101``, …; :mod:`udaseg.models.layouts`). Converting builds
udaseg's model from a preset (``--model``) for a benchmark (``--benchmark``), maps every tensor of
the file onto it strictly, and writes a run directory that every command reads like a trained run::

    udaseg convert mic_gta2cs.pth --model mitb5_hrda --benchmark gta2cs_hr --out runs/mic_release
    udaseg eval runs/mic_release                # the student; --network teacher for the EMA model
    udaseg predict runs/mic_release img.png --out pred
    udaseg train ... model.init_from=runs/mic_release      # fine-tune from it

The directory holds ``config.yaml`` (the preset and benchmark; nothing was trained here), ``env.json`` (with
``converted_from``: file, sha256, layout, networks) and ``checkpoints/last.pt`` (the networks as
udaseg names them). It is written under a temporary name and renamed at the end, so a failed
conversion leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from udaseg import config as config_lib
from udaseg.engine.checkpoint import save_atomic
from udaseg.errors import UdasegError
from udaseg.models.weights import CheckpointMismatchError, load_state_dict_strict, read_torch_file

NETWORKS = ("student", "teacher")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_checkpoint(source: str | Path, out: str | Path, config_args: list[str], *, layout: str = "auto",
                       networks: tuple[str, ...] = NETWORKS, force: bool = False) -> dict:
    """Write the run directory ``out`` from the released checkpoint ``source``; returns what
    ``env.json`` records under ``converted_from``. ``config_args`` compose the config as for
    ``udaseg train`` (``model=…``, ``benchmark=…``, other ``key=value``). The student must
    convert; other ``networks`` are converted where the file holds them."""
    from udaseg.data.catalog import get_label_space
    from udaseg.engine.trainer import environment
    from udaseg.models import create_model
    from udaseg.models.layouts import convert_reference

    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise UdasegError(f"--out {out} exists and is not empty (pass --force to replace it)")
    cfg = config_lib.compose(["method=source_only", "schedule=poly10warm", "eval_every=0", *config_args,
                              "model.pretrained=null", "model.init_from=null"])
    cfg.method.label = f"{source.stem} (converted)"
    checkpoint = read_torch_file(source, what="checkpoint")
    if not isinstance(checkpoint, dict):
        raise UdasegError(f"{source}: expected a checkpoint dict, found a {type(checkpoint).__name__}")

    num_classes = get_label_space(cfg.benchmark.label_space).num_classes
    modules, found, used_layout, skipped = {}, [], None, {}
    for network in networks:
        model = create_model(cfg.model, num_classes=num_classes)  # the factory resolves the config itself
        try:
            weights, used_layout = convert_reference(checkpoint, model, network=network, layout=layout,
                                                     source=str(source))
        except (CheckpointMismatchError, UdasegError) as err:
            if network == "student":
                raise
            skipped[network] = str(err).splitlines()[0]
            continue
        load_state_dict_strict(model, weights, source=f"{source} [{network}]")  # proves the fit
        modules.update({f"{network}.{k}": v for k, v in model.state_dict().items()})
        found.append(network)

    record = {"file": str(source.resolve()), "sha256": _sha256(source), "layout": used_layout,
              "networks": found, "not_converted": skipped}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (staging / "config.yaml").write_text(config_lib.to_yaml(cfg))
        env = {**environment(cfg, torch.device("cpu")), "converted_from": record}
        (staging / "env.json").write_text(json.dumps(env, indent=2))
        save_atomic({"iter": 0, "method": {"modules": modules}, "converted_from": record},
                    staging / "checkpoints" / "last.pt")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record
