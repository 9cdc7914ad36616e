"""The training loop: one file, readable top to bottom.

    udaseg train benchmark=minicity_gta2cs method=source_only model=minicity_cnn --out runs/x
    torchrun --nproc_per_node 4 -m udaseg train ...          # same command, DDP on 4 processes

What happens, in order:

1. **Set-up.** Join the process group if torchrun launched us; pick the device; seed this rank
   (ranks are seeded apart); write ``config.yaml`` (rank 0).
2. **Data.** The labelled stream (the benchmark's source — or its target for the oracle) and, when
   the method uses it, the unlabelled target stream. Both are *stateless*: sample k of a stream is
   a pure function of (seed, stream, k), and iteration t on rank r with batch slot b reads sample
   k = (t·world + r)·B + b. Ranks therefore see different data, and resuming at iteration t needs
   no sampler state. Target labels are removed from the target batch before the method sees it.
3. **Method.** ``create_method`` builds the networks and optimizers; ``env.json`` (rank 0) then
   records the versions, the machine and the file the pretrained weights came from; trainable networks are
   wrapped in DDP (teachers and frozen models never are). On ``--resume`` everything is restored
   from ``checkpoints/last.pt``: networks, optimizers, grad scaler, method state, RNG states and
   the iteration.
4. **Loop.** For t in [start, iters): set the LR of t, ``losses = method.train_step(src, tgt, t)``,
   stop on a non-finite loss, log every ``log_every`` (``metrics.jsonl``, TensorBoard, progress
   bar), checkpoint every ``checkpoint_every`` (atomically), evaluate every ``eval_every`` on the
   benchmark's validation sets — for the curves only: the final checkpoint is the result; target
   labels never select a model unless ``select_on_val`` asks for the reference codes' protocol
   (each evaluation's first val set picks ``checkpoints/best.pt``; see :func:`select_result`).
5. **End.** Evaluate the method's ``eval_network()`` (the student) on every validation set, write
   ``eval.json`` and the run summary with pictures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import udaseg
from udaseg import config as config_lib
from udaseg import dist
from udaseg.data.artefacts import StageView
from udaseg.data.catalog import get_label_space
from udaseg.data.registry import create_dataset
from udaseg.data.sampling import RareClassSampling, TrainStream, UnionDataset
from udaseg.data.transforms import TrainPipeline
from udaseg.engine.checkpoint import load_checkpoint, load_input, remove_orphan_temporaries, save_atomic
from udaseg.engine.evaluator import evaluate
from udaseg.engine.summary import write_run_summary
from udaseg.errors import ConfigError, DataError, UdasegError
from udaseg.methods import MethodContext, create_method, get_method_class
from udaseg.models.inference import inference_settings
from udaseg.models.weights import checkpoint_trust

log = logging.getLogger(__name__)

SOURCE_STREAM, TARGET_STREAM = 0, 1


# ---------------------------------------------------------------------------------------------
# Set-up helpers
def pick_device(name: str) -> torch.device:
    """``auto`` (the local rank's GPU, else the CPU), ``cpu``, ``cuda`` (the local rank's GPU) or
    ``cuda:N`` (one process only: several processes on one GPU is a mistake)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"'device' must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: this machine has no usable CUDA GPU (torch.cuda.is_available() is "
                          "False); use device=cpu or device=auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank())
    elif device.type == "cuda" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError(f"device={name} under torchrun would put every process on GPU {device.index}; "
                          "use device=cuda (or auto): each process takes the GPU of its LOCAL_RANK, and "
                          "CUDA_VISIBLE_DEVICES chooses the GPUs")
    return device


def rank_seed(seed: int, rank: int) -> int:
    """Seeds of different (seed, rank) pairs never collide (unlike seed + rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """The global RNG states as tensors and plain numbers (a checkpoint holds nothing else, so it is
    read with ``torch.load(weights_only=True)``)."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # ("MT19937", keys, pos, has_gauss, cached_gaussian)
    _, keys, pos, has_gauss, cached_gaussian = numpy_state
    state = {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s states (also the raw tuples of checkpoints before 0.1.0)."""
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):
        py = (py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"])
    if isinstance(npy, dict):
        npy = ("MT19937", npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
               npy["cached_gaussian"])
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _command_line() -> list[str]:
    """``sys.argv`` with the entry point shown as ``udaseg`` (console script or ``python -m``)."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    head = ["udaseg"] if program in ("udaseg", "__main__.py") else sys.argv[:1]
    return head + sys.argv[1:]


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``), or None where it cannot be read: results of the
    same seed differ in the last bits between CPU kinds (other vector kernels), so runs record it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(cfg: DictConfig, device: torch.device) -> dict:
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(udaseg.__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    return {
        "python": sys.version.split()[0], "torch": torch.__version__, "udaseg": udaseg.__version__,
        "git_commit": commit, "platform": platform.platform(), "hostname": platform.node(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": cpu_model(), "world_size": dist.world_size(), "cpu_threads": torch.get_num_threads(),
        "seed": cfg.seed, "command": _command_line(), "precision": cfg.precision,
    }


# ---------------------------------------------------------------------------------------------
# Data
def dataset_root(spec: Any, data_root: str) -> Path:
    root = Path(spec.root)
    return root if root.is_absolute() else Path(data_root) / root


def build_dataset(spec: Any, data_root: str, label_space: str, *, split: str | None = None):
    root = dataset_root(spec, data_root)
    try:
        dataset = create_dataset(spec.dataset, root, split or spec.split, label_space=label_space,
                                 **config_lib.to_dict(spec.options))
    except DataError as err:
        # data_root only matters for a relative root (an absolute one comes from e.g. eval --root).
        origin = "" if Path(spec.root).is_absolute() else f"; the root is relative to data_root={data_root!r}"
        raise DataError(f"{err}\n(check the dataset with: udaseg data check {spec.dataset} {root}{origin})") from None
    artefacts = {k: spec.get(k) for k in ("subset", "labels_from", "pseudo_labels") if spec.get(k)}
    if artefacts:
        dataset = StageView(dataset, **artefacts)
    return dataset


def build_stream(spec: Any, data_root: str, label_space: str, seed: int, stream: int):
    dataset = build_dataset(spec, data_root, label_space)
    if spec.rcs.enabled and (spec.subset or spec.labels_from or spec.pseudo_labels):
        raise ConfigError("rare class sampling needs the dataset's own labels; switch off rcs for a stream "
                          "with subset / labels_from / pseudo_labels")
    if spec.union:
        if spec.rcs.enabled:
            raise ConfigError("rare class sampling on a union of datasets is not supported; "
                              "switch off rcs or the union")
        parts = [dataset]
        for i, extra in enumerate(spec.union):
            extra = dict(extra)
            unknown = sorted(set(extra) - {"dataset", "root", "split", "options"})
            if unknown or "dataset" not in extra or "root" not in extra:
                raise ConfigError(f"union[{i}]: expected keys dataset, root (and split, options), got {sorted(extra)}")
            part = OmegaConf.create({"split": spec.split, "options": {}, **extra})
            parts.append(build_dataset(part, data_root, label_space))
        dataset = UnionDataset(parts, spec.union_mix)
    pipeline = TrainPipeline(
        img_scale=spec.img_scale, ratio_range=spec.ratio_range, fit_size=spec.fit_size, resize_to=spec.resize_to,
        interpolation=spec.interpolation, crop_size=spec.crop_size, cat_max_ratio=spec.cat_max_ratio,
        crop_rule=spec.crop_rule, size_jitter=spec.size_jitter, flip_prob=spec.flip_prob,
        pseudo_margins=spec.pseudo_margins)
    rcs = None
    if spec.rcs.enabled:
        rcs = RareClassSampling.from_dataset(dataset, class_temp=spec.rcs.class_temp,
                                             min_pixels=spec.rcs.min_pixels,
                                             min_crop_ratio=spec.rcs.min_crop_ratio)
    stream_seed = int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
    return TrainStream(dataset, pipeline, seed=stream_seed, rcs=rcs)


class DrawBatchSampler(torch.utils.data.Sampler):
    """Batches of sample numbers: iteration t, rank r, slot b → (t·world + r)·B + b."""

    def __init__(self, start_iter: int, iters: int, batch_size: int, rank: int, world: int):
        self.start_iter, self.iters, self.batch_size, self.rank, self.world = start_iter, iters, batch_size, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for t in range(self.start_iter, self.iters):
            first = (t * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(self.iters - self.start_iter, 0)


def make_loader(stream, start_iter: int, cfg: DictConfig, device: torch.device) -> Iterator[dict]:
    sampler = DrawBatchSampler(start_iter, cfg.iters, cfg.benchmark.batch_size, dist.rank(), dist.world_size())
    loader = torch.utils.data.DataLoader(
        stream, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=device.type == "cuda",
        persistent_workers=False,
        # A private generator: creating the iterator must not consume the global RNG, or a resumed
        # run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(0),
    )
    return iter(loader)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Logging
class RunLogger:
    """``metrics.jsonl`` + TensorBoard on rank 0; silent elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is a dependency, but logging must not kill a run
                self.tb = None

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("iter",):
                    prefix = f"eval/{row['eval']}/" if "eval" in row else "train/"
                    self.tb.add_scalar(prefix + key, value, row["iter"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------------
# Run directory
def default_run_dir(cfg: DictConfig) -> Path:
    return Path("runs") / cfg.benchmark.name / f"{cfg.method.name}_{cfg.model.name}_s{cfg.seed}"


def resumable_config(run_dir: Path | str) -> Path:
    """``run_dir/config.yaml`` of a run to ``--resume`` (training run or pipeline); an error when the
    folder holds none."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.exists():
        raise UdasegError(f"--resume: {run_dir} has no config.yaml (not a udaseg run directory)")
    return saved


def prepare_run_dir(cfg: DictConfig, run_dir: Path, resume: bool, force: bool, cli_args: list[str]) -> DictConfig:
    """Create the run directory (or check it for ``--resume``) and return the config to run."""
    saved = run_dir / "config.yaml"
    if resume:
        stored = config_lib.load_resolved(resumable_config(run_dir))
        if cli_args:
            changes = config_lib.diff(stored, cfg)
            if changes and not force:
                raise ConfigError("--resume: the config differs from the run's config.yaml "
                                  "(pass --force to resume anyway):\n  " + "\n  ".join(changes))
            return cfg if changes else stored
        return stored
    if saved.exists() or (run_dir / "checkpoints" / "last.pt").exists():
        raise UdasegError(f"{run_dir} already holds a run: use --resume to continue it, or --out for a new one")
    return cfg


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.pt"


def select_result(results: list[dict], best: dict | None) -> tuple[list[dict], dict | None]:
    """``select_on_val``: (the result rows, the selection record) — the final network's rows when
    they score at least the best periodic evaluation (first val set, headline metric), else the
    best one's rows, as stored with ``best.pt``."""
    if not results:
        return results, None
    metric = results[0]["metric"]
    last_value = results[0].get(metric)
    use_best = best is not None and last_value is not None and best["value"] > last_value
    chosen = best["results"] if best is not None and use_best else results
    record = {"rule": "best_on_val", "val_set": results[0]["name"], "metric": metric,
              "iter": chosen[0]["iter"], "value": chosen[0].get(metric), "last_iter": results[0]["iter"],
              "last_value": last_value,
              "note": "chosen with target validation labels (the reference's protocol): an optimistic estimate"}
    return chosen, record


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


# ---------------------------------------------------------------------------------------------
# Evaluation
def headline_metric(cfg: DictConfig) -> str:
    """The benchmark's headline mean (``benchmark.metric``; default: the label space's first)."""
    return cfg.benchmark.metric or next(iter(get_label_space(cfg.benchmark.label_space).eval_subsets))


def evaluate_all(method, cfg: DictConfig, val_sets: list, device: torch.device, it: int) -> list[dict]:
    """Every validation set of the benchmark on the method's ``eval_network()``; one ``eval.json``
    row each (plus its name, the iteration and the confusion matrix for the report)."""
    results: list[dict] = []
    network = method.eval_network()
    if network is None:  # a stage that trains no segmentation network (DiGA's translator)
        return results
    for spec, dataset in val_sets:
        result = evaluate(network, dataset, **inference_settings(spec), device=device,
                          network=method.eval_network_name, progress=False,
                          num_workers=min(cfg.workers, 2), dataset_name=spec.dataset)
        row = {"name": spec.name or f"{spec.dataset}_{spec.split}", "iter": it, "metric": headline_metric(cfg),
               **result.to_json(), "confusion": result.confusion.tolist()}
        results.append(row)
    return results


def _eval_log_row(row: dict, elapsed: float, final: bool = False) -> dict:
    out = {"iter": row["iter"], "eval": row["name"], "mIoU": row.get(row["metric"]), "time": round(elapsed, 3),
           **{k: v for k, v in row.items() if k.startswith("mIoU")}, "per_class_iou": row["per_class_iou"]}
    if final:
        out["final"] = True
    return out


def _truncate_metrics(path: Path, last_iter: int) -> None:
    """On resume, drop the rows a killed run logged after its last checkpoint (they are logged
    again), so that ``metrics.jsonl`` reads as if the run had never stopped."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by the kill
            continue
        if row.get("iter", 0) <= last_iter and not (row.get("iter") == last_iter and "eval" in row
                                                     and row.get("final")):
            keep.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(f"{line}\n" for line in keep))
    os.replace(tmp, path)


def _all_finite(values: dict[str, float], device: torch.device) -> bool:
    """Whether every rank's losses are finite (all ranks must stop together under DDP)."""
    ok = all(np.isfinite(v) for v in values.values())
    if dist.world_size() > 1:
        flag = torch.tensor([0.0 if ok else 1.0], device=device)
        dist.all_reduce_sum(flag)
        return float(flag) == 0.0
    return ok


class _LineProgress:
    """Progress for a log file (no terminal): one line per tenth of the run instead of tqdm's
    carriage-return updates, with the same ``update``/``set_postfix``/``close`` calls."""

    def __init__(self, total: int, initial: int, desc: str):
        self.total, self.n, self.desc, self.t0 = total, initial, desc, time.time()
        self.postfix: dict[str, Any] = {}
        self.every = max(1, total // 10)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n % self.every == 0 or self.n == self.total:
            extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n // self.total}%) "
                  f"{time.time() - self.t0:.0f}s {extra}".rstrip(), file=sys.stderr, flush=True)

    def set_postfix(self, values: dict) -> None:
        self.postfix = values

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, desc: str):
    """tqdm on a terminal; a line per tenth of the run when stderr is a file or a pipe."""
    if not sys.stderr.isatty():
        return _LineProgress(total, initial, desc)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------
def train(cfg: DictConfig, run_dir: Path, *, resume: bool = False, force: bool = False,
          cli_args: list[str] | None = None, progress: bool = True) -> dict:
    """Run (or resume) one training run; returns the final ``eval.json`` content. Files it reads
    (``--resume``'s checkpoint, ``model.init_from``, ``model.pretrained``, ``inputs``) never run
    code unless the config says ``trust_checkpoint: true``."""
    run_dir = Path(run_dir)
    fresh = not run_dir.exists()
    try:
        with checkpoint_trust(cfg.trust_checkpoint):
            return _train(cfg, run_dir, resume=resume, force=force, cli_args=cli_args, progress=progress)
    except BaseException:
        # A start that failed (wrong data_root, a bad weight file …) leaves no empty run directory
        # behind; one that trained (a log row or a checkpoint) is kept for --resume.
        started = (run_dir / "metrics.jsonl").exists() or last_checkpoint(run_dir).exists()
        if fresh and not started and dist.is_main():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


@dataclass
class _Resumed:
    """Where a run continues: the iteration, the wall time already spent, the best periodic
    evaluation (``select_on_val``) and the loss sums since the last log row."""

    start_iter: int = 0
    elapsed: float = 0.0
    best: dict | None = None
    log_sums: dict = field(default_factory=lambda: {"sums": {}, "count": 0})


def _train(cfg: DictConfig, run_dir: Path, *, resume: bool, force: bool, cli_args: list[str] | None,
           progress: bool) -> dict:
    # 1. Set-up, 2. data, 3. method (and its state when resuming).
    cfg, device, distributed = _set_up(cfg, run_dir, resume, force, cli_args or [])
    labelled, unlabelled, val_sets = _build_streams(cfg, run_dir)
    method = _build_method(cfg, run_dir, device)
    resumed = _restore(method, run_dir, resume, device)
    if distributed:
        method.setup_distributed([device.index] if device.type == "cuda" else None,
                                 find_unused_parameters=cfg.find_unused_parameters)

    # 4. Loop.
    start_iter, best = resumed.start_iter, resumed.best
    logger = RunLogger(run_dir, dist.is_main())
    src_iter = make_loader(labelled, start_iter, cfg, device)
    tgt_iter = make_loader(unlabelled, start_iter, cfg, device) if unlabelled is not None else None
    bar = None
    if progress and dist.is_main():
        bar = progress_bar(cfg.iters, start_iter, cfg.method.label or cfg.method.name)
    sums: dict[str, float] = dict(resumed.log_sums["sums"])
    count, t0 = int(resumed.log_sums["count"]), time.time() - resumed.elapsed
    for it in range(start_iter, cfg.iters):
        source = to_device(next(src_iter), device)
        target, target_label = None, None
        if tgt_iter is not None:
            target = to_device(next(tgt_iter), device)
            target_label = target.pop("label", None)  # never train on target labels
        method.train()
        method.set_iteration(it + cfg.schedule.offset)
        losses = method.train_step(source, target, it)
        if cfg.diagnostics and target_label is not None:
            method.observe_target_labels(target_label)  # for the logs only, after the step

        values = {k: float(v) for k, v in losses.items()}
        _check_finite(values, it, run_dir, device)
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        done = it + 1
        if bar is not None:
            bar.update(1)
            if done % 10 == 0 or done == cfg.iters:
                bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in values.items()})
        if done % cfg.log_every == 0 or done == cfg.iters:
            logger.log({"iter": done, "lr": method.lr, **{k: v / count for k, v in sums.items()},
                        **method.diagnostics_row(), "time": round(time.time() - t0, 3)})
            sums, count = {}, 0
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.iters:
            best = _evaluate_periodically(method, cfg, val_sets, device, done, best, logger, run_dir, t0)
        if done % cfg.checkpoint_every == 0 or done == cfg.iters:
            states = dist.all_gather_objects(rng_state())
            if dist.is_main():
                save_atomic({"iter": done, "elapsed": time.time() - t0, "method": method.checkpoint_state(),
                             "rng": states, "best": best, "log_sums": {"sums": sums, "count": count},
                             "udaseg": udaseg.__version__}, last_checkpoint(run_dir))
            dist.barrier()
    if bar is not None:
        bar.close()

    # 5. End: the final network is the result (or, with select_on_val, the best on the first val set).
    final = _finish(method, cfg, run_dir, val_sets, device, best, logger, t0)
    logger.close()
    dist.barrier()
    return final


def _set_up(cfg: DictConfig, run_dir: Path, resume: bool, force: bool, cli_args: list[str]):
    """Device, process group, threads, the run directory (checked or created) and the seeds:
    ``(cfg, device, distributed)`` — the config that runs (a resume's own, unless forced)."""
    if cfg.select_on_val and not cfg.eval_every:
        raise ConfigError("select_on_val picks the best of the periodic evaluations: it needs eval_every > 0")
    device = pick_device(cfg.device)
    distributed = dist.init_from_env(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if dist.is_main():
        cfg = prepare_run_dir(cfg, run_dir, resume, force, cli_args)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphan_temporaries(run_dir / "checkpoints"):  # a write a kill interrupted
            log.info("removed %s, left by an interrupted checkpoint write", orphan)
    cfg = dist.broadcast_object(cfg)
    seed_everything(rank_seed(cfg.seed, dist.rank()), cfg.deterministic)
    return cfg, device, distributed


def _build_streams(cfg: DictConfig, run_dir: Path):
    """``(labelled stream, unlabelled target stream or None, [(val spec, dataset)])``; then the
    run's config.yaml is written (the data exist)."""
    label_space = cfg.benchmark.label_space
    method_cls = get_method_class(cfg.method.name)
    labelled_spec = cfg.benchmark.source if method_cls.labelled_stream == "source" else cfg.benchmark.target
    if labelled_spec is None:
        raise ConfigError(f"method {cfg.method.name} trains on the target's labels, but benchmark "
                          f"{cfg.benchmark.name} has no target")
    labelled = build_stream(labelled_spec, cfg.data_root, label_space, cfg.seed, SOURCE_STREAM)
    unlabelled = None
    if method_cls.reads_target(cfg.method):
        if cfg.benchmark.target is None:
            raise ConfigError(f"method {cfg.method.name} needs target data; benchmark {cfg.benchmark.name} has none")
        unlabelled = build_stream(cfg.benchmark.target, cfg.data_root, label_space, cfg.seed, TARGET_STREAM)
    val_sets = [(spec, build_dataset(spec, cfg.data_root, label_space)) for spec in cfg.benchmark.val]
    if dist.is_main():
        (run_dir / "config.yaml").write_text(config_lib.to_yaml(cfg))
    return labelled, unlabelled, val_sets


def _build_method(cfg: DictConfig, run_dir: Path, device: torch.device):
    """The method on ``device`` (its networks, optimisers, the inputs it reads); env.json names
    the pretrained weights file."""
    ctx = MethodContext(model_cfg=cfg.model, schedule=cfg.schedule, iters=cfg.schedule.horizon or cfg.iters,
                        label_space=get_label_space(cfg.benchmark.label_space), device=device,
                        precision=cfg.precision,
                        inputs={name: load_input(spec, f"inputs.{name}") for name, spec in cfg.inputs.items()})
    method = create_method(cfg.method, ctx).to(device)
    if dist.is_main():
        env = environment(cfg, device)
        env["pretrained_weights"] = getattr(getattr(method, "student", None), "pretrained_weights", None)
        (run_dir / "env.json").write_text(json.dumps(env, indent=2))
    return method


def _restore(method, run_dir: Path, resume: bool, device: torch.device) -> _Resumed:
    """With ``resume`` and a ``last.pt``: the method's state, the RNG states and where to go on
    (metrics.jsonl cut back to it); without a checkpoint yet: iteration 0, said so."""
    # Rank 0 decides whether there is a checkpoint; every rank then reads it, so under several
    # nodes the run directory must be on a filesystem they share (a clear error otherwise).
    if not dist.broadcast_object(resume and last_checkpoint(run_dir).exists()):
        if resume and dist.is_main():
            print(f"--resume: {run_dir} has no checkpoint yet; training starts at iteration 0", file=sys.stderr)
            _truncate_metrics(run_dir / "metrics.jsonl", 0)
        return _Resumed()
    if not last_checkpoint(run_dir).exists():
        raise UdasegError(f"rank {dist.rank()} cannot see {last_checkpoint(run_dir)}: the run directory must be "
                          "on a filesystem shared by every node")
    state = load_checkpoint(last_checkpoint(run_dir), map_location=device)
    if "converted_from" in state:
        raise UdasegError(f"{run_dir} holds a converted checkpoint, not a training run to resume; fine-tune "
                          f"from it with model.init_from={run_dir}")
    method.load_checkpoint_state(state["method"])
    resumed = _Resumed(state["iter"], state.get("elapsed", 0.0), state.get("best"),
                       state.get("log_sums") or {"sums": {}, "count": 0})
    rng = state["rng"]
    if len(rng) != dist.world_size():
        raise UdasegError(f"{last_checkpoint(run_dir)} was written by a run of {len(rng)} process(es); "
                          f"resume it with the same number ({dist.world_size()} now)")
    set_rng_state(rng[dist.rank()])
    if dist.is_main():
        _truncate_metrics(run_dir / "metrics.jsonl", resumed.start_iter)
    return resumed


def _check_finite(values: dict[str, float], it: int, run_dir: Path, device: torch.device) -> None:
    if not _all_finite(values, device):
        ckpt = last_checkpoint(run_dir)
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not np.isfinite(v)) or "on another rank"
        raise UdasegError(f"non-finite loss at iteration {it}: {bad}; "
                          f"last checkpoint: {ckpt if ckpt.exists() else 'none yet'}")


def _evaluate_periodically(method, cfg: DictConfig, val_sets, device, done: int, best: dict | None, logger,
                           run_dir: Path, t0: float) -> dict | None:
    """An evaluation every ``eval_every`` iterations: curves only, unless ``select_on_val``
    keeps the best network in best.pt. Returns the best evaluation so far."""
    rows = evaluate_all(method, cfg, val_sets, device, done)
    for row in rows:
        logger.log(_eval_log_row(row, time.time() - t0))
    value = rows[0].get(rows[0]["metric"]) if rows else None
    if cfg.select_on_val and value is not None and (best is None or value > best["value"]):
        best = {"iter": done, "value": value, "results": rows}
        if dist.is_main():
            save_atomic({"iter": done, "method": method.checkpoint_state(), "selected": best,
                         "udaseg": udaseg.__version__}, best_checkpoint(run_dir))
        dist.barrier()
    return best


def _finish(method, cfg: DictConfig, run_dir: Path, val_sets, device, best: dict | None, logger,
            t0: float) -> dict:
    """The final evaluation, eval.json and the summary: the final network is the result (or, with
    ``select_on_val``, the best on the first val set, evaluated and summarised instead)."""
    last_rows = results = evaluate_all(method, cfg, val_sets, device, cfg.iters)
    selection = None
    if cfg.select_on_val:
        results, selection = select_result(last_rows, best)
        if selection is not None and selection["iter"] == cfg.iters and dist.is_main():  # the final one won
            save_atomic({"iter": cfg.iters, "method": method.checkpoint_state(), "selected": selection,
                         "udaseg": udaseg.__version__}, best_checkpoint(run_dir))
        if selection is not None and selection["iter"] != cfg.iters:  # evaluate and summarise that network
            method.load_checkpoint_state(load_checkpoint(best_checkpoint(run_dir), map_location=device)["method"])
        dist.barrier()
    final = {**results[0], "all": results} if results else {}
    if selection is not None:
        final["selection"] = selection
    if method.eval_network() is None:
        final = {"network": None, "note": f"method {cfg.method.name} trains no segmentation network"}
    if dist.is_main():
        for row in last_rows:  # the curves end with the last network, whichever is the result
            logger.log(_eval_log_row(row, time.time() - t0, final=True))
        (run_dir / "eval.json").write_text(json.dumps(final, indent=2))
        if method.eval_network() is not None and results:
            write_run_summary(run_dir, method.eval_network(), val_sets, device)
    return final
