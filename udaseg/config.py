"""Training configuration: schemas and composition (docs/contracts.md §2).

A training config has four groups — ``benchmark``, ``method``, ``model``, ``schedule`` — and a
few top-level keys (``seed``, ``iters``, ``data_root``, ``eval_every`` …). It is composed, in
this order, from:

1. the schema defaults (the dataclasses below; the method's schema comes from its class),
2. the group files selected by name, ``configs/<group>/<name>.yaml`` (e.g. ``method=daformer``),
3. experiment files given as ``CONFIG`` arguments (YAML with top-level keys; a group key may hold
   a name, which selects the group file, or a mapping, which overrides keys inside the group; a
   dotted key such as ``schedule.horizon: 250000`` edits a group the same file selects),
4. ``key=value`` overrides from the command line (``method.ema_alpha=0.99``, ``iters=2000``).

Every step is checked against the schema: an unknown key or a value of the wrong type is a
:class:`~udaseg.errors.ConfigError` naming the key and the file (or "command line") it came from.
Group files live inside the package (``udaseg/configs``) so that a pip-installed udaseg finds
them; a group value may also be a path to a YAML file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from udaseg.errors import ConfigError
from udaseg.registry import did_you_mean

CONFIG_DIR = Path(__file__).parent / "configs"
GROUPS = ("benchmark", "method", "model", "schedule")


# ---------------------------------------------------------------------------------------------
# Schemas
@dataclass
class RareClassSamplingConfig:
    """docs/methods.md D2. ``min_pixels`` counts pixels at the dataset's full resolution."""

    enabled: bool = False
    class_temp: float = 0.01
    min_pixels: int = 3000
    min_crop_ratio: float = 0.5


@dataclass
class TrainDataConfig:
    """One training stream: a dataset split plus its geometric pipeline (the fields of
    :class:`udaseg.data.transforms.TrainPipeline`; at most one resize mode)."""

    dataset: str = MISSING  # registry name: gta5, synthia, cityscapes, acdc, …
    root: str = MISSING  # relative to ``data_root`` unless absolute
    split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)  # loader options (conditions, beta, …)
    img_scale: list[int] | None = None  # mmseg keep-ratio resize (long, short)
    ratio_range: list[float] | None = None  # random factor on img_scale
    fit_size: list[int] | None = None  # keep-ratio fit inside (h, w), then pad
    resize_to: list[int] | None = None  # exact (h, w), aspect ratio not kept
    interpolation: str = "bilinear"
    crop_size: list[int] | None = None  # (h, w)
    cat_max_ratio: float = 1.0  # DAFormer's crop rule; 1.0 disables it
    crop_rule: str = "mmseg"  # mmseg (cat_max_ratio) | diga (≥ 2 non-ignore classes over 2 %, 5 draws)
    size_jitter: list[float] | None = None  # DiGA's random size: H and W × U(lo, hi) independently
    flip_prob: float = 0.5
    # HRDA/MIC "v2" pseudo-label crop: (top, bottom, left, right) pixels of the original image whose
    # pseudo-labels weigh 0, moved with the crop (a "valid_pseudo" map in the batch); None = off.
    pseudo_margins: list[int] | None = None
    rcs: RareClassSamplingConfig = field(default_factory=RareClassSamplingConfig)
    # More datasets joined into this stream (e.g. Rain Cityscapes beside Foggy as one target), each
    # {dataset, root, split, options} with this stream's transforms; mixed by ``union_mix``.
    union: list[dict[str, Any]] = field(default_factory=list)
    union_mix: str = "concat"  # concat (each image once per epoch) | balanced (parts drawn equally often)
    # Artefacts of an earlier pipeline stage (``stage://NAME/...`` paths, udaseg.engine.pipeline):
    subset: str | None = None  # a text file of sample names (one per line): train on these only
    labels_from: str | None = None  # a folder of <name>.png train-id maps that replace the labels
    pseudo_labels: str | None = None  # a folder of <name>.png train-id maps, as batch key pseudo_label


@dataclass
class EvalDataConfig:
    """One evaluation set with its inference protocol."""

    name: str = ""  # label in reports; defaults to "<dataset>_<split>"
    dataset: str = MISSING
    root: str = MISSING
    split: str = "val"
    options: dict[str, Any] = field(default_factory=dict)
    test_scale: list[int] | None = None  # (long, short) keep-ratio resize before inference
    interpolation: str = "bilinear"  # of that resize: bilinear (mmcv) | bicubic (PIL, antialiased)
    mode: str = "whole"  # whole | slide
    window: list[int] | None = None  # slide window (h, w), in the resized image
    stride: list[int] | None = None
    flip: bool = False
    # Multi-scale max fusion of the logits (e.g. [1.0, 0.5], DiGA's protocol); None = one scale.
    scales: list[float] | None = None


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    description: str = ""
    label_space: str = "cityscapes19"
    source: TrainDataConfig = field(default_factory=TrainDataConfig)
    target: TrainDataConfig | None = None  # None: no target data (source-only, DG)
    val: list[EvalDataConfig] = field(default_factory=list)
    batch_size: int = 2  # per process, for each of source and target
    metric: str = ""  # headline metric (mIoU19, mIoU16, mIoU7 …); "" = the label space's first subset


@dataclass
class ScheduleConfig:
    """Optimizer and LR schedule (docs/methods.md D4 for the defaults)."""

    name: str = "poly10warm"
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 6e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.01
    head_lr_mult: float = 10.0
    no_decay_norm: bool = True
    power: float = 1.0  # poly power
    min_lr: float = 0.0
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    grad_clip: float | None = None  # max global grad norm; None = off
    # The poly decay runs over ``horizon`` iterations (None = the run's ``iters``), and training
    # iteration t takes the LR of schedule iteration ``offset`` + t: the references that stop
    # early (ISL 25k of 90k, IDA 120k of 250k) or continue one schedule over several rounds.
    horizon: int | None = None
    offset: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    backbone: str = MISSING
    head: str = MISSING
    backbone_options: dict[str, Any] = field(default_factory=dict)
    head_options: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None  # local file or hub id; None = random init (with a notice)
    normalization: str | None = None  # imagenet | caffe_bgr; None = the backbone family's
    align_corners: bool | None = None  # None = the backbone family's convention
    hrda: dict[str, Any] | None = None  # HRDA multi-resolution options (udaseg.models.hrda); None = off
    depth: dict[str, Any] | None = None  # DAF depth branch options (udaseg.models.depth; {} = defaults); None = off
    # Whole-network initialisation from a udaseg run directory or checkpoint (its student;
    # RUN:teacher for another network), after ``pretrained``; e.g. self-training from a source model.
    init_from: str | None = None


@dataclass
class TrainConfig:
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    method: Any = None  # the method's own schema (see udaseg.methods)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    seed: int = 0
    iters: int = 40000
    data_root: str = "data/minicity"
    eval_every: int = 4000  # 0 = only at the end
    # The reference codes' model selection (DiGA, EBDA, BAFFT, DAF keep the snapshot with the best
    # target-val mIoU): off, the final network is the result; on, every eval_every the first val
    # set's headline metric picks checkpoints/best.pt, which then is the run's network and result,
    # marked in eval.json ("selection") and in the report — an oracle choice, never a default.
    select_on_val: bool = False
    log_every: int = 50
    checkpoint_every: int = 1000
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    diagnostics: bool = True  # pseudo-label accuracy vs the target's labels, logged only (needs labels)
    workers: int = 2  # dataloader workers per process
    threads: int = 0  # torch CPU threads per process (0 = torch default)
    # DDP's find_unused_parameters: for a stage whose method leaves part of the model unused (ISL
    # or IDA on DAF's depth model: the depth regressor gets no gradient). Off: it costs a graph walk.
    find_unused_parameters: bool = False
    # A multi-stage pipeline (udaseg.engine.pipeline): stage name → config overrides of a training
    # stage, or {step: NAME, ...options} for an offline step; empty = one training run.
    stages: dict[str, Any] = field(default_factory=dict)
    # Files the method receives, loaded by the trainer (udaseg.engine.checkpoint.load_input): name →
    # a .pt file of tensors, or RUN_DIR[:NETWORK] for that network's weights (e.g. a translator).
    inputs: dict[str, str] = field(default_factory=dict)
    # The opt-in to read files that hold more than tensors (model.init_from, model.pretrained,
    # inputs, --resume) with the full unpickler, which can run code from the file; warns per file.
    trust_checkpoint: bool = False


_CHOICES = {
    "precision": ("fp32", "bf16", "fp16"),
    "schedule.optimizer": ("adamw", "sgd"),
}


# ---------------------------------------------------------------------------------------------
# Composition
def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def available(group: str) -> list[str]:
    """Names of the group files shipped with udaseg (``configs/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def group_file(group: str, name: str) -> Path:
    """Resolve a group selection: a shipped name or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown {group} {name!r}{did_you_mean(name, available(group))}; "
                          f"available: {', '.join(available(group)) or 'none'}")
    return path


def _group_data(group: str, name: str) -> tuple[str, dict]:
    """(source, content) of a group selection. A registered method without a YAML file of its
    own is selected by name with its schema's defaults."""
    if group == "method" and not (CONFIG_DIR / group / f"{name}.yaml").exists() and "/" not in name \
            and not name.endswith((".yaml", ".yml")):
        from udaseg.methods import list_methods

        if name in list_methods():
            return f"method {name} (schema defaults)", {"name": name}
    path = group_file(group, name)
    return str(path), _read_yaml(path)


def _merge(base: DictConfig, update: dict, source: str, prefix: str = "") -> DictConfig:
    update = _upgrade_method_keys(base, update, source)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(update))
        assert isinstance(merged, DictConfig)
        return merged
    except OmegaConfBaseException as err:
        key = f"{prefix}{err.full_key}" if getattr(err, "full_key", None) else prefix.rstrip(".") or "?"
        reason = str(err).splitlines()[0]
        hint = ""
        if "not in" in reason:
            reason = "unknown key"
            hint = did_you_mean(key.rsplit(".", 1)[-1], _sibling_keys(base, str(getattr(err, "full_key", "") or "")))
        raise ConfigError(f"{source}: {reason}: '{key}'{hint}") from None


def _sibling_keys(cfg: DictConfig, full_key: str) -> list[str]:
    """The keys beside ``full_key`` in ``cfg`` (for suggestions)."""
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return [str(k) for k in node] if isinstance(node, DictConfig) else []


def _upgrade_method_keys(base: DictConfig, update: dict, source: str) -> dict:
    """``update`` with its ``method`` mapping passed through the method schema's ``upgrade_keys``
    (old key spellings read with a deprecation message, e.g. DAFormer's flat add-on keys)."""
    if not isinstance(update, dict) or not isinstance(update.get("method"), dict) or "method" not in base:
        return update
    upgrade = getattr(OmegaConf.get_type(base, "method"), "upgrade_keys", None)
    return {**update, "method": upgrade(update["method"], source)} if upgrade else update


def _method_schema(name: str) -> Any:
    from udaseg.methods import get_method_class

    try:
        return get_method_class(name).Config
    except KeyError as err:
        raise ConfigError(str(err.args[0])) from None


def _split_cli(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    files, overrides = [], []
    for arg in args:
        if "=" in arg:
            key, value = arg.split("=", 1)
            overrides.append((key.strip(), value))
        else:
            files.append(arg)
    return files, overrides


def experiment_file(name: str) -> Path:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    path = CONFIG_DIR / "experiment" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"config {name!r} is neither a YAML file nor a shipped experiment "
                          f"({', '.join(available('experiment')) or 'none'})")
    return path


def compose(args: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose a training config from ``CONFIG`` files and ``key=value`` overrides."""
    files, overrides = _split_cli(list(args))
    experiments = [(str(p), _read_yaml(p)) for p in map(experiment_file, files)]

    # 1. Which group file does each group start from? Later sources win.
    selection: dict[str, str] = {}
    for _, data in experiments:
        for group in GROUPS:
            if isinstance(data.get(group), str):
                selection[group] = data[group]
    for key, value in overrides:
        if key in GROUPS:
            selection[key] = value
    for group in GROUPS:
        if group not in selection:
            raise ConfigError(f"no {group} chosen: pass {group}=NAME (available: {', '.join(available(group))})")
    group_data = {g: _group_data(g, n) for g, n in selection.items()}

    # 2. The method's schema depends on its name.
    method_name = group_data["method"][1].get("name")
    for _, data in experiments:
        if isinstance(data.get("method"), dict) and "name" in data["method"]:
            method_name = data["method"]["name"]
    for key, value in overrides:
        if key == "method.name":
            method_name = value
    if not method_name:
        raise ConfigError(f"{group_data['method'][0]}: a method file must set 'name'")
    schema = OmegaConf.structured(TrainConfig)
    schema.method = OmegaConf.structured(_method_schema(method_name))

    cfg = schema
    for group in GROUPS:
        source, data = group_data[group]
        cfg = _merge(cfg, {group: data}, source)
    for source, data in experiments:
        data = {k: v for k, v in data.items() if not (k in GROUPS and isinstance(v, str))}
        dotted = {k: data.pop(k) for k in [k for k in data if "." in k]}
        cfg = _merge(cfg, data, source)
        cfg = _merge_dotted(cfg, dotted, source)  # `schedule.horizon: 250000`: edits a group the file chooses
    dotlist = [f"{k}={v}" for k, v in overrides if k not in GROUPS]
    # `stages.NAME.key=…` edits a stage of a pipeline; on a config without stages it would silently
    # make a one-stage pipeline of a plain run (a whole `stages={…}` table defines one on purpose).
    staged = [k for k, _ in overrides if k.startswith("stages.")]
    if staged and not cfg.stages and "stages" not in {k for k, _ in overrides}:
        raise ConfigError(f"command line: {staged[0]} edits a pipeline stage, but this config has no stages "
                          "(a plain training run); pipelines come from an experiment file with a 'stages' table "
                          "(docs/pipelines.md)")
    for item in dotlist:
        try:
            update = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as err:
            raise ConfigError(f"command line: cannot parse {item!r}: {err}") from None
        cfg = _merge(cfg, to_dict(update, resolve=False), "command line")

    validate(cfg)
    return cfg


def apply_overrides(cfg: DictConfig, args: list[str]) -> DictConfig:
    """``key=value`` overrides on top of a resolved config (``udaseg train --resume … iters=N``);
    a group name or experiment file is an error: a resumed run keeps its own composition."""
    files, overrides = _split_cli(list(args))
    groups = [k for k, _ in overrides if k in GROUPS]
    if files or groups:
        raise ConfigError(f"--resume continues the run's own config.yaml: it takes key=value overrides of single "
                          f"keys (e.g. iters=…), not {(files or groups)[0]!r}")
    for key, value in overrides:
        try:
            update = OmegaConf.from_dotlist([f"{key}={value}"])
        except OmegaConfBaseException as err:
            raise ConfigError(f"command line: cannot parse {key}={value!r}: {err}") from None
        cfg = _merge(cfg, to_dict(update, resolve=False), "command line")
    validate(cfg)
    return cfg


def _merge_dotted(cfg: DictConfig, dotted: dict, source: str) -> DictConfig:
    for key, value in dotted.items():
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        cfg = _merge(cfg, nested, source)
    return cfg


def compose_stage(base: DictConfig, overrides: dict, source: str) -> DictConfig:
    """The config of one pipeline stage: ``base`` (a resolved config, without its ``stages``) with
    the stage's ``overrides`` on top. A group given by name (``method: source_only``) starts again
    from that group file — for ``method`` with the chosen method's schema — and a mapping edits
    the group, except that a mapping naming another method, or another dataset for a training
    stream (``benchmark.source.dataset``), starts that part from its defaults; a dotted key
    (``method.label: x``) edits after that; other keys replace the base's."""
    data = to_dict(base)
    data.pop("stages", None)
    overrides = dict(overrides)
    dotted = {k: overrides.pop(k) for k in [k for k in overrides if "." in k]}  # `method.label: x`
    for group in GROUPS:
        if isinstance(overrides.get(group), str):
            data[group] = _group_data(group, overrides.pop(group))[1]
    method = data.get("method") or {}
    name = (overrides.get("method") or {}).get("name") if isinstance(overrides.get("method"), dict) else None
    name = name or method.get("name")
    if not name:
        raise ConfigError(f"{source}: the stage's method has no name")
    if name != method.get("name"):  # a mapping that renames the method starts from its defaults
        data["method"] = {"name": name}
    for stream in ("source", "target"):  # a stream mapping that changes the dataset starts afresh
        edit = (overrides.get("benchmark") or {}).get(stream) if isinstance(overrides.get("benchmark"), dict) else None
        base_stream = (data.get("benchmark") or {}).get(stream)
        if isinstance(edit, dict) and base_stream and edit.get("dataset") not in (None, base_stream.get("dataset")):
            data["benchmark"][stream] = {}
    schema = OmegaConf.structured(TrainConfig)
    schema.method = OmegaConf.structured(_method_schema(name))
    cfg = _merge(schema, data, f"{source} (base config)")
    cfg = _merge(cfg, overrides, source)
    cfg = _merge_dotted(cfg, dotted, source)
    cfg.stages = {}
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks that the schema's types cannot express."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required config keys: {', '.join(missing)}")
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {', '.join(choices)}, got {value!r}")
    for i, val in enumerate(cfg.benchmark.val):
        if val.mode not in ("whole", "slide"):
            raise ConfigError(f"'benchmark.val[{i}].mode' must be whole or slide, got {val.mode!r}")
        if val.mode == "slide" and (val.window is None or val.stride is None):
            raise ConfigError(f"'benchmark.val[{i}]': slide inference needs window and stride")
        if val.scales and (val.mode != "whole" or any(s <= 0 for s in val.scales)):
            raise ConfigError(f"'benchmark.val[{i}].scales': positive factors, with whole-image inference only")
        if val.interpolation not in ("bilinear", "bicubic"):
            raise ConfigError(f"'benchmark.val[{i}].interpolation' must be bilinear or bicubic, "
                              f"got {val.interpolation!r}")
    for key in ("iters", "benchmark.batch_size", "log_every", "checkpoint_every"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"'{key}' must be at least 1, got {OmegaConf.select(cfg, key)}")
    for key, meaning in (("eval_every", "0 = only at the end"), ("workers", "0 = load in the main process"),
                         ("threads", "0 = torch's default"), ("seed", "any non-negative integer"),
                         ("schedule.warmup_iters", "0 = no warm-up")):
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"'{key}' must be ≥ 0 ({meaning}), got {OmegaConf.select(cfg, key)}")
    import math

    for key in ("schedule.lr", "schedule.weight_decay", "schedule.min_lr"):
        value = OmegaConf.select(cfg, key)
        if not math.isfinite(value) or value < 0 or (key == "schedule.lr" and value == 0):
            raise ConfigError(f"'{key}' must be a finite number {'> 0' if key == 'schedule.lr' else '≥ 0'}, "
                              f"got {value}")
    horizon, offset = cfg.schedule.horizon, cfg.schedule.offset
    if offset < 0 or (horizon is not None and horizon < offset + cfg.iters):
        raise ConfigError(f"'schedule.horizon' ({horizon}) must cover schedule.offset + iters "
                          f"({offset} + {cfg.iters}), and the offset be ≥ 0")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def load_resolved(path: Path) -> DictConfig:
    """Re-load a run directory's ``config.yaml`` against the schema (for --resume and eval)."""
    data = _read_yaml(path)
    schema = OmegaConf.structured(TrainConfig)
    name = (data.get("method") or {}).get("name")
    if not name:
        raise ConfigError(f"{path}: no method.name")
    schema.method = OmegaConf.structured(_method_schema(name))
    cfg = _merge(schema, data, str(path))
    validate(cfg)
    return cfg


def diff(a: DictConfig, b: DictConfig) -> list[str]:
    """Keys whose values differ between two resolved configs, as 'key: a → b' lines."""
    flat_a, flat_b = _flatten(OmegaConf.to_container(a)), _flatten(OmegaConf.to_container(b))
    lines = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(key, "<absent>") != flat_b.get(key, "<absent>"):
            lines.append(f"{key}: {flat_a.get(key, '<absent>')!r} → {flat_b.get(key, '<absent>')!r}")
    return lines


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix.rstrip('.')}[{i}]."))
        return out
    return {prefix.rstrip("."): obj}


def to_dict(node: Any, resolve: bool = True) -> dict[str, Any]:
    """A mapping node of a config as a plain dict (``OmegaConf.to_container``, typed as the mapping
    it is); a node that is not a mapping is a ConfigError."""
    data = OmegaConf.to_container(node, resolve=resolve) if OmegaConf.is_config(node) else node
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {data!r}")
    return cast(dict[str, Any], data)


def as_dataclass_dict(obj: Any) -> dict:
    """Plain dict of a dataclass instance (for method configs built in code and tests)."""
    return dataclasses.asdict(obj)
