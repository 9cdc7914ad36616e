"""The ``udaseg`` command line (docs/contracts.md §1). Heavy modules are imported inside each command so
that ``udaseg --help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from udaseg.errors import UdasegError

DATASET_NAMES = ("gta5", "synthia", "cityscapes", "cityscapes_foggy", "cityscapes_rain", "acdc",
                 "darkzurich", "mapillary", "custom")


def _pair(text: str, minimum: int = 1, example: str = "512x512") -> tuple[int, int]:
    """AxB of integers ≥ ``minimum`` (windows, strides, test scales; image sizes)."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AxB such as {example}, got {text!r}") from None
    if a < minimum or b < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is too small (minimum {minimum}x{minimum})")
    return a, b


def _size(text: str) -> tuple[int, int]:
    """An image size HxW for MiniCity (at least 32x32)."""
    return _pair(text, minimum=32, example="256x512")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# ---------------------------------------------------------------------------------------------
def cmd_data_minicity(args: argparse.Namespace) -> int:
    from udaseg.data.minicity import generate

    summary = generate(Path(args.out), size=args.size, seed=args.seed, scale=args.scale,
                       progress=not args.quiet)
    print(summary.describe())
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from udaseg.data.prepare import prepare

    report = prepare(args.dataset, Path(args.root), force=args.force, label_space=args.label_space,
                     progress=not args.quiet)
    print(report.describe())
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from udaseg.data.check import check

    report = check(args.dataset, Path(args.root), splits=args.split, class_map=args.class_map)
    print(report.describe())
    return 0 if report.ok else 1


def cmd_train(args: argparse.Namespace) -> int:
    from udaseg import config as config_lib
    from udaseg import dist
    from udaseg.engine import trainer

    # --resume with a whole composition (an experiment file or every group) is compared with the
    # run's config as before; with single key=value overrides it edits the run's own config.
    composed = any("=" not in a for a in args.config) or \
        {a.split("=", 1)[0] for a in args.config} >= set(config_lib.GROUPS)
    if args.resume and args.out and not composed:
        # key=value overrides (e.g. iters=… to train longer) edit the run's own config; a change
        # needs --force (prepare_run_dir lists what differs).
        cfg = config_lib.apply_overrides(config_lib.load_resolved(trainer.resumable_config(args.out)), args.config)
    else:
        cfg = config_lib.compose(args.config)
    run_dir = Path(args.out) if args.out else trainer.default_run_dir(cfg)
    try:
        if cfg.stages:  # a multi-stage pipeline
            from udaseg.engine.pipeline import run_pipeline

            if args.resume and args.config:
                raise UdasegError("--resume of a pipeline takes no CONFIG or key=value: it continues the run's "
                                  "own config.yaml (udaseg train --resume --out RUN)")
            final = run_pipeline(cfg, run_dir, resume=args.resume, progress=not args.quiet)
        else:
            final = trainer.train(cfg, run_dir, resume=args.resume, force=args.force, cli_args=args.config,
                                  progress=not args.quiet)
        if dist.is_main():
            for row in final.get("all", []):
                value = row[row["metric"]]
                print(f"{row['name']}: {row['metric']} {'n/a' if value is None else f'{100 * value:.2f}'} "
                      f"({row['network']}, {row['mode']}{', flip' if row['flip'] else ''})")
            print(f"run directory: {run_dir}")
    finally:
        dist.destroy()
    return 0


def _dataset_options(items: list[str]) -> dict:
    import yaml

    options = {}
    for item in items:
        if "=" not in item:
            raise UdasegError(f"--option expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    return options


def _check_writable(out: str | None) -> None:
    """Fail before a long evaluation, not after it, when ``--out`` cannot be written."""
    if not out:
        return
    import tempfile

    folder = Path(out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UdasegError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def _write_eval(rows: list[dict], out: str | None) -> None:
    import json

    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({**rows[0], "all": rows} if len(rows) > 1 else rows[0], indent=2))
        print(f"written: {out}")


def cmd_eval(args: argparse.Namespace) -> int:
    from udaseg.data.registry import create_dataset
    from udaseg.engine.evaluator import evaluate, evaluate_predictions

    options = _dataset_options(args.option)
    _check_writable(args.out)
    if args.predictions:
        if args.source:
            raise UdasegError("give either RUN_DIR|CKPT or --predictions DIR, not both")
        if not (args.dataset and args.root):
            raise UdasegError("--predictions needs --dataset and --root (the ground truth)")
        dataset = create_dataset(args.dataset, args.root, args.split, label_space=args.label_space or "cityscapes19",
                                 **options)
        result = evaluate_predictions(args.predictions, dataset, pred_format=args.pred_format,
                                      progress=not args.quiet, dataset_name=args.dataset)
        print(result.table())
        _write_eval([result.to_json()], args.out)
        return 0
    if not args.source:
        raise UdasegError("give a run directory or checkpoint to evaluate, or --predictions DIR")

    from omegaconf import OmegaConf

    from udaseg.engine.checkpoint import load_network
    from udaseg.engine.trainer import build_dataset, pick_device
    from udaseg.models.inference import inference_settings

    device = pick_device(args.device)
    model, cfg = load_network(args.source, args.network, device)
    print(f"checkpoint: {model.checkpoint_path} ({args.network})")
    if args.label_space and args.label_space != cfg.benchmark.label_space:
        raise UdasegError(f"the model predicts {cfg.benchmark.label_space}; --label-space {args.label_space} differs")
    if args.dataset:
        if not args.root:
            raise UdasegError("--dataset needs --root")
        # no inference keys: inference_settings reads their absence as whole-image inference at the
        # dataset's size, which the command-line flags override
        specs = [OmegaConf.create({"name": f"{args.dataset}_{args.split}", "dataset": args.dataset,
                                   "root": str(Path(args.root).resolve()), "split": args.split, "options": options})]
    else:
        specs = list(cfg.benchmark.val)
        if not specs:
            raise UdasegError("the run's benchmark has no validation set; pass --dataset and --root")
    rows = []
    for spec in specs:
        dataset = build_dataset(spec, cfg.data_root, cfg.benchmark.label_space)
        settings = inference_settings(spec, mode=args.mode, window=args.window, stride=args.stride,
                                      test_scale=args.test_scale, flip=args.flip, scales=args.scales)
        result = evaluate(model, dataset, **settings, device=device, network=args.network,
                          progress=not args.quiet, dataset_name=spec.dataset)
        name = spec.name or f"{spec.dataset}_{spec.split}"
        print(f"== {name} ({args.network}, {result.protocol['mode']}{', flip' if result.protocol['flip'] else ''})")
        print(result.table())
        rows.append({"name": name, **result.to_json()})
    _write_eval(rows, args.out)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from udaseg.engine.convert import convert_checkpoint

    config_args = [f"model={args.model}", f"benchmark={args.benchmark}", *args.config]
    networks = ("student", "teacher") if args.network == "both" else (args.network,)
    record = convert_checkpoint(args.checkpoint, args.out, config_args, layout=args.layout, networks=networks,
                                force=args.force)
    print(f"converted {args.checkpoint} ({record['layout']} layout): {', '.join(record['networks'])}")
    for network, why in record["not_converted"].items():
        print(f"  no {network}: {why}")
    print(f"run directory: {args.out}\n  evaluate: udaseg eval {args.out}"
          + (" [--network teacher]" if "teacher" in record["networks"] else ""))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from udaseg.engine.predict import run_predict

    return run_predict(args)


def cmd_report(args: argparse.Namespace) -> int:
    from udaseg.report import expand_run_dirs, load_diagnoses, write_report

    notes = Path(args.notes).read_text() if args.notes else ""
    diagnoses = load_diagnoses(Path(args.diagnoses)) if args.diagnoses else None
    out = write_report(expand_run_dirs(args.run_dirs), Path(args.out), title=args.title, notes=notes,
                       claims=args.claims or diagnoses is not None, diagnoses=diagnoses)
    print(f"report written to {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from udaseg.bench import run_bench

    return run_bench(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from udaseg.demo import run_demo

    return run_demo(Path(args.out), Path(args.data), oracle=args.oracle)


# ---------------------------------------------------------------------------------------------
def _add_trust_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="read checkpoints that hold objects beyond tensors and plain data with the full unpickler "
                        "(it can run code from the file: only for files you trust); warns per file")


def _add_inference_flags(p: argparse.ArgumentParser, protocol: str) -> None:
    """The inference flags of eval and predict; each defaults to ``protocol`` (the run's settings)."""
    p.add_argument("--mode", choices=("whole", "slide"), default=None, help=f"inference mode (default: {protocol})")
    p.add_argument("--window", type=_pair, default=None, help="slide window HxW")
    p.add_argument("--stride", type=_pair, default=None, help="slide stride HxW")
    p.add_argument("--test-scale", type=_pair, default=None, metavar="LONGxSHORT",
                   help=f"keep-ratio resize before inference, e.g. 1024x512 (default: {protocol})")
    p.add_argument("--scales", type=float, nargs="+", metavar="S",
                   help="max-fuse the logits of the image resized by each factor (e.g. 1 0.5: DiGA's two-scale "
                        f"test; 1 switches it off; default: {protocol})")
    p.add_argument("--flip", action="store_true",
                   help=f"average with the horizontally flipped image (on anyway where {protocol} protocol flips)")
    p.add_argument("--network", choices=("student", "teacher"), default="student",
                   help="which network of the checkpoint (default: student)")
    p.add_argument("--device", default="auto")


def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded MiniCity benchmark (CPU, minutes)",
                       formatter_class=_formatter,
                       epilog="MiniCity, then source-only, DAFormer self-training from it and the equal-budget\n"
                              "control (≤ 10 min on 2 CPU cores)\nexamples:\n  udaseg demo --out runs/demo\n"
                              "  udaseg demo --oracle")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--data", default="data/minicity",
                   help="MiniCity folder, generated there if missing (default: data/minicity)")
    p.add_argument("--oracle", action="store_true",
                   help="also train the oracle (the target's labels: the upper bound), ~2.5 min more")
    p.set_defaults(func=cmd_demo)


def _add_train_command(sub) -> None:
    p = sub.add_parser(
        "train", help="train one run, or a multi-stage pipeline (the same command under torchrun runs DDP)",
        formatter_class=_formatter,
        epilog="examples:\n"
               "  udaseg train benchmark=minicity_gta2cs method=source_only model=minicity_cnn schedule=minicity \\\n"
               "      iters=2000 seed=1 --out runs/so_s1\n"
               "  udaseg train minicity_cpu benchmark=minicity_cs2acdc method=oracle   # an experiment file + overrides\n"  # noqa: E501
               "  udaseg train --resume --out runs/so_s1                                # continue a killed run\n"
               "  udaseg train minicity_cpu minicity_daf_ida benchmark=minicity_synthia2cs stages.isl.iters=100 \\\n"
               "      --out runs/daf_ida      # a pipeline (a config with stages: docs/pipelines.md)\n"
               "  torchrun --nproc_per_node 4 -m udaseg train benchmark=gta2cs method=source_only \\\n"
               "      model=mitb5_daformer schedule=poly10warm --out runs/gta2cs_so")
    p.add_argument("config", nargs="*", metavar="CONFIG|key=value",
                   help="experiment YAML files (or shipped experiment names) and key=value overrides; "
                        "groups: benchmark, method, model, schedule")
    p.add_argument("--out", default=None, help="run directory (default: runs/<benchmark>/<method>_<model>_s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    p.add_argument("--force", action="store_true", help="with --resume: accept a config that differs from the run's")
    _add_trust_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_convert_command(sub) -> None:
    p = sub.add_parser(
        "convert", help="a checkpoint released with a paper (DAFormer, HRDA, MIC, TigDA, EBDA, DiGA) → a run directory",
        formatter_class=_formatter,
        description="Map every tensor of an authors' checkpoint onto udaseg's model of the given preset "
                    "(strictly: a checkpoint of another model is an error listing what does not fit) and write "
                    "a run directory that eval, predict and model.init_from read.",
        epilog="examples:\n"
               "  udaseg convert daformer_gta2cs.pth --model mitb5_daformer --benchmark gta2cs --out runs/daformer_rel\n"  # noqa: E501
               "  udaseg convert mic_gta2cs.pth --model mitb5_hrda --benchmark gta2cs_hr --out runs/mic_rel\n"
               "  udaseg eval runs/mic_rel --network teacher")
    p.add_argument("checkpoint", metavar="FILE", help="the released checkpoint (.pth/.pt)")
    p.add_argument("config", nargs="*", metavar="key=value", help="further config overrides (e.g. data_root=…)")
    p.add_argument("--model", required=True, help="the model preset it belongs to (configs/model: mitb5_daformer, "
                                                   "mitb5_hrda, deeplabv2_r101_proda, …)")
    p.add_argument("--benchmark", required=True, help="the benchmark it was trained for (gta2cs, gta2cs_hr, …)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--layout", default="auto", help="the file's layout (default: detected from its key names)")
    p.add_argument("--network", choices=("student", "teacher", "both"), default="both",
                   help="which networks to convert (default: both where the file holds an EMA teacher)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    _add_trust_flag(p)
    p.set_defaults(func=cmd_convert)


def _add_eval_command(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a run or checkpoint, or score saved prediction PNGs", formatter_class=_formatter,
        epilog="examples:\n"
               "  udaseg eval runs/so_s1                                     # the run's validation sets\n"
               "  udaseg eval runs/so_s1 --dataset acdc --root data/minicity/acdc --split val --mode slide \\\n"
               "      --window 256x256 --stride 128x128 --flip --out eval_acdc.json\n"
               "  udaseg eval --predictions preds/ --pred-format labelid --dataset cityscapes \\\n"
               "      --root data/minicity/cityscapes --split val")
    p.add_argument("source", nargs="?", metavar="RUN_DIR|CKPT", help="a run directory or a checkpoint file")
    p.add_argument("--predictions", default=None, metavar="DIR", help="score saved PNGs under DIR instead")
    p.add_argument("--pred-format", choices=("labelid", "trainid"), default="labelid",
                   help="content of the saved PNGs (default labelid, what the Cityscapes server takes)")
    p.add_argument("--dataset", choices=DATASET_NAMES, default=None, help="dataset to evaluate on")
    p.add_argument("--root", default=None, help="its root folder")
    p.add_argument("--split", default="val")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option (e.g. conditions=night, beta=0.02); repeatable")
    p.add_argument("--label-space", default=None, help="label space (default: the run's)")
    _add_inference_flags(p, "each validation set's")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the result as JSON (eval.json schema)")
    _add_trust_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _add_predict_command(sub) -> None:
    p = sub.add_parser(
        "predict", help="segment images, folders or videos; colour, overlay, trainId or labelId PNGs",
        formatter_class=_formatter,
        epilog="examples:\n"
               "  udaseg predict runs/so_s1 street.jpg photos/ --out preds --format overlay\n"
               "  udaseg predict runs/so_s1/checkpoints/last.pt drive.mp4 --out frames --format color\n"
               "  udaseg predict runs/x data/cityscapes/leftImg8bit/test --out submit --format labelid "
               "--test-scale 1024x512")
    p.add_argument("source", metavar="RUN_DIR|CKPT", help="a run directory or a checkpoint file")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or videos")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", action="append", choices=("color", "overlay", "trainid", "labelid"), default=None,
                   help="output format(s), repeatable (default: color)")
    _add_inference_flags(p, "the run's first validation set's")
    p.add_argument("--video-stride", type=int, default=1, help="every N-th frame of a video (default 1)")
    _add_trust_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def _add_report_command(sub) -> None:
    p = sub.add_parser(
        "report", help="results table (mean ± std over seeds), per-class IoU, pictures", formatter_class=_formatter,
        epilog="example:\n  udaseg report runs/minicity_gta2cs/* --out docs/results/minicity.md")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories (a folder holding run directories is searched for them)")
    p.add_argument("--out", default="report.md", help="Markdown file to write (pictures go beside it)")
    p.add_argument("--title", default="Results")
    p.add_argument("--notes", default=None, metavar="FILE", help="Markdown inserted after the introduction")
    p.add_argument("--claims", action="store_true",
                   help="end with the claims table: each paper's claim on MiniCity, reproduced / within noise / "
                        "reversed (udaseg.report.CLAIMS)")
    p.add_argument("--diagnoses", default=None, metavar="FILE",
                   help="YAML mapping a claim to what the diagnostics say where it is not reproduced "
                        "(its last column; implies --claims)")
    p.set_defaults(func=cmd_report)


def _add_bench_command(sub) -> None:
    p = sub.add_parser(
        "bench", help="median step time and peak memory per config, and ratios to source-only",
        formatter_class=_formatter,
        epilog="examples:\n"
               "  udaseg bench                                   # the shipped benchmark set\n"
               "  udaseg bench 'minicity_cpu benchmark=minicity_gta2cs method=source_only' \\\n"
               "               'minicity_cpu benchmark=minicity_gta2cs method=oracle'\n"
               "  udaseg bench --preset cpu --steps 10 --out bench.json")
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="each a quoted list of config arguments (experiment files and key=value); "
                        "default: the --preset set")
    p.add_argument("--preset", choices=("cpu", "gpu", "family", "all"), default=None,
                   help="shipped set (default: gpu on a CUDA machine, cpu otherwise)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per config (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_bench)


def _add_data_command(sub) -> None:
    data = sub.add_parser("data", help="generate MiniCity, prepare and check datasets",
                          formatter_class=_formatter)
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser(
        "minicity", help="generate the MiniCity benchmark", formatter_class=_formatter,
        epilog="example:\n  udaseg data minicity --out data/minicity --scale small --seed 0")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=_size, default=None,
                   help="Cityscapes-domain image size HxW (default 256x512; other domains keep their "
                        "real dataset's aspect ratio at this width)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (same seed → identical files)")
    p.add_argument("--scale", choices=("small", "default", "large"), default="default",
                   help="number of images: small (tests, seconds), default (CPU demo), large (GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_minicity)

    p = dsub.add_parser(
        "prepare", help="convert labels to trainId PNGs and write rare-class-sampling statistics",
        formatter_class=_formatter,
        epilog="example:\n  udaseg data prepare gta5 data/minicity/gta")
    p.add_argument("dataset", choices=DATASET_NAMES)
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--force", action="store_true", help="overwrite existing files whose content differs")
    p.add_argument("--label-space", default="cityscapes19",
                   help="label space of the trainId files (cityscapes19, synthia16, seven)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_prepare)

    p = dsub.add_parser(
        "check", help="counts, pairing, sizes, label ids and class histogram; non-zero exit on problems",
        formatter_class=_formatter,
        epilog="example:\n  udaseg data check cityscapes data/minicity/cityscapes")
    p.add_argument("dataset", choices=DATASET_NAMES)
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--split", action="append", default=None, help="split(s) to check (default: all present)")
    p.add_argument("--class-map", default=None, help="YAML class map (custom datasets)")
    p.set_defaults(func=cmd_data_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="udaseg", formatter_class=_formatter,
        description="Unsupervised domain adaptation for semantic segmentation.",
        epilog="examples:\n  udaseg demo --out runs/demo\n  udaseg data minicity --out data/minicity --scale small",
    )
    from udaseg import __version__

    parser.add_argument("--version", action="version", version=f"udaseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo_command(sub)
    _add_train_command(sub)
    _add_convert_command(sub)
    _add_eval_command(sub)
    _add_predict_command(sub)
    _add_report_command(sub)
    _add_bench_command(sub)
    _add_data_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # key=value overrides after an option: `train minicity_cpu --quiet iters=5` (argparse stops at options)
        if getattr(args, "config", None) is None or any(e.startswith("-") for e in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)} "
                         f"(see udaseg {getattr(args, 'command', '')} --help)")
        args.config = list(args.config) + extras
    try:
        if getattr(args, "trust_checkpoint", False):
            from udaseg.models.weights import checkpoint_trust

            with checkpoint_trust(True):
                return args.func(args)
        return args.func(args)
    except UdasegError as err:
        print(f"udaseg: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file system refusing a write (read-only, full, permissions): one line
        where = f"{err.filename}: " if err.filename else ""
        print(f"udaseg: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("udaseg: interrupted", file=sys.stderr)
        return 130
