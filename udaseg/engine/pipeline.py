"""Multi-stage pipelines: several training runs and offline steps as one ``udaseg train``.

A config with a ``stages`` table is a pipeline (DAF → ISL → ranking → IDA, BAFFT step 1 →
pseudo-labels → step 2, DiGA's warm-up → pseudo-labels → self-training rounds)::

    stages:
      daf: {}                                        # a training stage: the base config as it is
      pseudo: {step: pseudo_labels, rule: threshold, threshold: 0.9}   # an offline step
      isl:                                           # a training stage: overrides of the base config
        method: source_only
        benchmark: {source: {dataset: cityscapes, root: cityscapes, labels_from: stage://pseudo/pseudo_labels}}

* **Training stages** are ordinary runs (``udaseg.engine.trainer.train``) whose config is the
  base config with the stage's overrides on top (:func:`udaseg.config.compose_stage`: a group
  given by name starts again from that group file). Each starts from the network of the previous
  training stage (``model.init_from``; ``init_from: null`` in the stage starts afresh, or name
  another stage) and is labelled in reports by the stages so far (``daf+isl``) unless it sets
  ``method.label``.
* **Offline steps** (``step: NAME`` plus the step's options, checked against its schema) run the
  previous training stage's network over data and write artefacts — pseudo-labels, splits,
  centroids — into their folder; :func:`udaseg.methods.steps.register_step` adds one.
* ``stage://NAME/PATH`` anywhere in a stage's overrides is the path of ``PATH`` inside stage
  ``NAME``'s folder (an earlier stage).

The run directory holds the pipeline's ``config.yaml`` and ``env.json``, one folder per stage
under ``stages/NN_NAME/`` (a full run directory for training stages), ``pipeline.json`` (the
stages, their folders and state), and, at the end, the last training stage's ``eval.json`` and a
``summary.md`` with every stage's result. ``udaseg train --resume`` continues at the stage and
iteration where the pipeline stopped: finished stages are skipped, an interrupted training stage
resumes from its ``last.pt``, an interrupted step is redone (steps write into a temporary folder
that is renamed when complete). Every stage config is composed and checked before the first stage
runs, so a typo in stage 4 fails in seconds, not hours. Under torchrun the training stages run on
every process; offline steps run on rank 0 while the others wait.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from udaseg import config as config_lib
from udaseg import dist
from udaseg.engine import steps as _builtin_steps  # noqa: F401  (registers the shared steps)
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_network
from udaseg.errors import ConfigError, UdasegError
from udaseg.methods import steps as steps_api
from udaseg.methods.steps import STEPS, register_step
from udaseg.models.segmentor import EncoderDecoder

STAGE_SCHEME = "stage://"


def get_step(name: str) -> tuple[type, Callable]:
    """``(options schema, fn)`` of step ``name`` (:data:`udaseg.methods.steps.STEPS`)."""
    step = STEPS.get(name)
    return step.config_cls, step.fn


def list_steps() -> list[str]:
    return STEPS.names()


# ---------------------------------------------------------------------------------------------
@dataclass
class Stage:
    index: int
    name: str
    data: dict  # training: config overrides; step: the step's options (with ``step``)

    @property
    def is_step(self) -> bool:
        return "step" in self.data

    @property
    def folder(self) -> str:
        return f"{self.index:02d}_{self.name}"


def parse_stages(cfg: DictConfig) -> list[Stage]:
    table = config_lib.to_dict(cfg.stages, resolve=False) if cfg.stages else {}
    stages = []
    for i, (name, data) in enumerate(table.items(), start=1):
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"stages.{name}: expected a mapping (config overrides, or step: NAME), got {data!r}")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"stages.{name}: a stage name may hold letters, digits, '_' and '-' only")
        stages.append(Stage(i, name, data))
    return stages


def resolve_refs(obj: Any, folders: dict[str, Path], stage: Stage) -> Any:
    """``stage://NAME/PATH`` → ``<run>/stages/NN_NAME/PATH`` for an earlier stage NAME."""
    if isinstance(obj, dict):
        return {k: resolve_refs(v, folders, stage) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve_refs(v, folders, stage) for v in obj]
    if isinstance(obj, str) and obj.startswith(STAGE_SCHEME):
        name, _, rest = obj[len(STAGE_SCHEME):].partition("/")
        name, colon, network = name.partition(":")  # stage://NAME:NETWORK — a network of a run (inputs)
        if name not in folders:
            raise ConfigError(f"stages.{stage.name}: {obj!r} names no earlier stage "
                              f"(earlier: {', '.join(folders) or 'none'})")
        path = str(folders[name] / rest) if rest else str(folders[name])
        return f"{path}:{network}" if colon else path
    return obj


def step_config(stage: Stage) -> Any:
    config_cls, _ = get_step(stage.data["step"])
    schema = OmegaConf.structured(config_cls)
    options = {k: v for k, v in stage.data.items() if k != "step"}
    return config_lib._merge(schema, options, f"stages.{stage.name} (step {stage.data['step']})")


def _training_overrides(stage: Stage, folders: dict[str, Path]) -> tuple[dict, Any]:
    data = resolve_refs(dict(stage.data), folders, stage)
    return {k: v for k, v in data.items() if k != "init_from"}, data.get("init_from", "previous")


def _sets(overrides: dict, group: str, key: str) -> bool:
    value = overrides.get(group)
    return (isinstance(value, dict) and value.get(key) is not None) or overrides.get(f"{group}.{key}") is not None


def plan(cfg: DictConfig, run_dir: Path) -> list[tuple[Stage, Any]]:
    """Every stage with its composed config (training) or checked options (step), in order."""
    stages = parse_stages(cfg)
    if not stages:
        raise ConfigError("not a pipeline: the config has no stages")
    folders: dict[str, Path] = {}
    planned = []
    trained: list[str] = []
    previous_train: str | None = None
    for stage in stages:
        if stage.is_step:
            get_step(stage.data["step"])
            if previous_train is None and STEPS.get(stage.data["step"]).needs_network:
                raise ConfigError(f"stages.{stage.name}: step {stage.data['step']!r} needs a training stage before it")
            planned.append((stage, step_config(stage)))
        else:
            overrides, init = _training_overrides(stage, folders)
            stage_cfg = config_lib.compose_stage(cfg, overrides, f"stages.{stage.name}")
            trained.append(stage.name)
            chosen = overrides.get("method")  # a group file chosen by name may carry its own label
            if not _sets(overrides, "method", "label") and not (
                    isinstance(chosen, str) and config_lib._group_data("method", chosen)[1].get("label")):
                stage_cfg.method.label = "+".join(trained)
            if init == "previous":
                init = previous_train
            if init is not None and not _sets(overrides, "model", "init_from"):
                if init not in trained[:-1]:
                    raise ConfigError(f"stages.{stage.name}: init_from {init!r} is not an earlier training stage")
                stage_cfg.model.init_from = str(folders[init])
            previous_train = stage.name
            planned.append((stage, stage_cfg))
        folders[stage.name] = run_dir / "stages" / stage.folder
    if previous_train is None:
        raise ConfigError("a pipeline needs at least one training stage")
    return planned


# ---------------------------------------------------------------------------------------------
class StepContext(steps_api.StepContext):
    """What an offline step sees (:class:`udaseg.methods.steps.StepContext`), with the previous
    training stage's network and the base config's datasets loaded by the engine."""

    def network(self, name: str | None = None) -> EncoderDecoder:
        """The previous training stage's evaluated network (or ``name``), in eval mode on the device."""
        if self.source is None:
            raise UdasegError("this step comes before any training stage: it has no network to run")
        if name is None:
            evaluation = json.loads((self.source / "eval.json").read_text())
            name = evaluation.get("network", "student")
        model, _ = load_network(self.source, name, self.device)
        return model

    def dataset(self, stream: str = "target"):
        """The base config's ``source`` or ``target`` training split, untransformed (full resolution)."""
        spec = self.cfg.benchmark.target if stream == "target" else self.cfg.benchmark.source
        if spec is None:
            raise ConfigError(f"benchmark {self.cfg.benchmark.name} has no {stream} stream")
        return trainer.build_dataset(spec, self.cfg.data_root, self.cfg.benchmark.label_space)


# ---------------------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def run_pipeline(cfg: DictConfig, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) every stage of ``cfg.stages``; returns the last training stage's eval.json."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if resume:
        cfg = config_lib.load_resolved(trainer.resumable_config(run_dir))
    elif saved.exists():
        raise UdasegError(f"{run_dir} already holds a run: use --resume to continue it, or --out for a new one")
    planned = plan(cfg, run_dir)  # every stage checked before anything runs
    device = trainer.pick_device(cfg.device)
    dist.init_from_env(device.type)
    if dist.is_main():
        (run_dir / "stages").mkdir(parents=True, exist_ok=True)
        if not saved.exists():
            saved.write_text(config_lib.to_yaml(cfg))
            (run_dir / "env.json").write_text(json.dumps(trainer.environment(cfg, device), indent=2))
    dist.barrier()

    records, final, previous_train, last_trained = [], {}, None, None
    for stage, stage_cfg in planned:
        folder = run_dir / "stages" / stage.folder
        done = folder / "stage_done.json"
        record: dict[str, Any] = {"stage": stage.name, "folder": str(folder.relative_to(run_dir)),
                  "kind": f"step {stage.data['step']}" if stage.is_step else f"train {stage_cfg.method.name}"}
        if done.exists():
            record.update(json.loads(done.read_text()))
        elif stage.is_step:
            summary: dict[str, Any] = {}
            if dist.is_main():
                tmp = folder.with_name(folder.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                _, fn = get_step(stage.data["step"])
                options = OmegaConf.to_object(stage_cfg)
                summary = fn(StepContext(cfg, tmp, previous_train, device), options) or {}
                _write_json(tmp / "summary.json", summary)
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
                _write_json(done, {"summary": summary})
            dist.barrier()
            record["summary"] = summary
        else:
            has_checkpoint = trainer.last_checkpoint(folder).exists()
            if dist.is_main() and not has_checkpoint and folder.exists():
                shutil.rmtree(folder)  # killed before its first checkpoint: nothing to resume
            dist.barrier()
            final = trainer.train(stage_cfg, folder, resume=has_checkpoint, progress=progress)
            if dist.is_main():
                _write_json(done, {"result": {k: final.get(k) for k in ("name", "metric", final.get("metric"))
                                              if k in final}})
            record.update(json.loads(done.read_text()) if done.exists() else {})
        if not stage.is_step:
            previous_train, last_trained = folder, stage.name
            final = json.loads((folder / "eval.json").read_text())
        records.append(record)
        if dist.is_main():
            _write_json(run_dir / "pipeline.json", {"stages": records, "complete": False})
    if dist.is_main():
        _write_json(run_dir / "eval.json", {**final, "stage": last_trained})
        _write_json(run_dir / "pipeline.json", {"stages": records, "complete": True})
        (run_dir / "summary.md").write_text(_summary(records, final))
    dist.barrier()
    return final


def _summary(records: list[dict], final: dict) -> str:
    lines = ["# Pipeline", "", "| stage | kind | folder | result |", "|---|---|---|---|"]
    for r in records:
        if "result" in r:
            metric = r["result"].get("metric")
            value = r["result"].get(metric)
            result = f"{r['result'].get('name', '')} {metric} {100 * value:.2f}" if value is not None else "n/a"
        else:
            result = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in (r.get("summary") or {}).items() if isinstance(v, (int, float, str)))
        lines.append(f"| {r['stage']} | {r['kind']} | [{r['folder']}]({r['folder']}/) | {result} |")
    return "\n".join(lines) + "\n"


__all__ = ["STAGE_SCHEME", "Stage", "StepContext", "get_step", "list_steps", "parse_stages", "plan", "register_step",
           "run_pipeline"]

