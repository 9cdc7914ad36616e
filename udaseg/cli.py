"""The ``udaseg`` command line (DESIGN.md §3). Heavy modules are imported inside each command so
that ``udaseg --help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from udaseg.errors import UdasegError

DATASET_NAMES = ("gta5", "synthia", "cityscapes", "cityscapes_foggy", "cityscapes_rain", "acdc",
                 "darkzurich", "mapillary", "custom")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x512, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (minimum 32x32)")
    return h, w


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


def cmd_demo(args: argparse.Namespace) -> int:
    from udaseg.demo import run_demo

    return run_demo(Path(args.out))


# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="udaseg", formatter_class=_formatter,
        description="Unsupervised domain adaptation for semantic segmentation.",
        epilog="examples:\n  udaseg demo --out runs/demo\n  udaseg data minicity --out data/minicity --scale small",
    )
    from udaseg import __version__

    parser.add_argument("--version", action="version", version=f"udaseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="the main job on the embedded MiniCity benchmark (CPU, minutes)",
                       formatter_class=_formatter, epilog="example:\n  udaseg demo --out runs/demo")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.set_defaults(func=cmd_demo)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UdasegError as err:
        print(f"udaseg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("udaseg: interrupted", file=sys.stderr)
        return 130
