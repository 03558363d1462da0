"""The ``deploykit`` command: parses arguments, calls one library stage, prints. No logic lives here.

Each command is a pair: ``_add_<name>(subparsers)`` declares its arguments and sets ``func`` to a
``_run_<name>(args) -> int`` that calls the library. Every :class:`DeployKitError` becomes one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from deploykit import __version__
from deploykit.errors import DeployKitError

DEFAULT_MODEL = "convnext_tiny"


def parse_size(text: str) -> tuple[int, int]:
    """``224`` → (224, 224); ``96x128`` → (96, 128) as height × width."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size like 224 or 96x128, got {text!r}")
    return values


# --- deploykit blocks ------------------------------------------------------------------------------

def _add_blocks(sub) -> None:
    p = sub.add_parser(
        "blocks", help="list a model's blocks: family, shapes, MACs original vs merged, prunable or why not",
        description="List every block of a timm model that deploykit knows, in execution order, with "
                    "its input/output shape, MACs of the original and of the merged form, and whether it "
                    "can be pruned (and why not). Built without pretrained weights: no network needed.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"timm model name (default: {DEFAULT_MODEL})")
    p.add_argument("--input-size", type=parse_size, default=(224, 224), metavar="SIZE",
                   help="input resolution, 224 or HxW such as 96x128 (default: 224)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format (default: table)")
    p.set_defaults(func=_run_blocks)


def _run_blocks(args) -> int:
    from deploykit.models import create_model
    from deploykit.prune import prunable
    from deploykit.report import blocks_frame, format_blocks_table

    net = prunable(create_model(args.model, input_size=args.input_size), input_size=args.input_size)
    if args.format == "json":
        print(json.dumps([info.as_dict() for info in net.blocks], indent=2))
    elif args.format == "csv":
        print(blocks_frame(net.blocks).to_csv(index=False), end="")
    else:
        print(format_blocks_table(net.blocks, model=args.model, input_size=args.input_size))
    return 0


# --- deploykit targets -----------------------------------------------------------------------------

def _add_targets(sub) -> None:
    p = sub.add_parser(
        "targets", help="list the deployment targets and whether each can be profiled here (and why not)",
        description="List every target (targets/*.yaml): the runtime and execution provider or device "
                    "that serves it, precision, default batch and input size, the hardware it stands "
                    "for, and whether it can be profiled on this machine, or exactly why not.")
    p.add_argument("names", nargs="*", metavar="TARGET",
                   help="target names or YAML paths to show (default: every target)")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="output format (default: table)")
    p.set_defaults(func=_run_targets)


def _run_targets(args) -> int:
    from deploykit.targets import describe, format_targets, list_targets, load_target, targets_dir

    targets = [load_target(name) for name in args.names] if args.names else list_targets()
    rows = [describe(target) for target in targets]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(f"{len(rows)} target(s) from {targets_dir() if not args.names else 'the command line'}")
        print(format_targets(rows))
    return 0


# --- deploykit profile -----------------------------------------------------------------------------

def _add_profile(sub) -> None:
    from deploykit.latency.protocol import add_protocol_arguments

    p = sub.add_parser(
        "profile", help="measure a model's block latency table on a target (or --estimate it)",
        description="Time every distinct block of a timm model in original and merged form, plus the "
                    "fixed parts (stem, downsampling, head) and the whole model, each exported to ONNX "
                    "and run on the target's runtime in a fresh process. Writes a latency table (CSV + "
                    ".meta.json) after every entry: rerun the same command to resume an interrupted "
                    "profile. --estimate builds a roofline table from the target's peak figures instead.")
    p.add_argument("--target", required=True, help="target name (see `deploykit targets`) or YAML path")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"timm model name (default: {DEFAULT_MODEL})")
    p.add_argument("--input-size", type=parse_size, default=None, metavar="SIZE",
                   help="input resolution, 224 or HxW (default: the target's)")
    p.add_argument("--batch", type=int, default=None, metavar="B", help="batch size (default: the target's)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="table CSV path (default: latency_tables/<target>/<model>_<size>_b<batch>.csv)")
    p.add_argument("--estimate", action="store_true",
                   help="roofline estimates from the target's peak figures, for hardware that is not here")
    p.add_argument("--force", action="store_true", help="start an existing table at --out over")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="resume a table measured on another device or runtime version")
    add_protocol_arguments(p)
    p.set_defaults(func=_run_profile)


def _run_profile(args) -> int:
    from deploykit.latency.profile import profile
    from deploykit.latency.protocol import Protocol
    from deploykit.targets import load_target

    result = profile(args.model, load_target(args.target), input_size=args.input_size, batch=args.batch,
                     out=args.out, protocol=None if args.estimate else Protocol.from_args(args),
                     estimate=args.estimate, force=args.force, allow_mismatch=args.allow_mismatch,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(result.summary())
    return 0


# --- entry point -----------------------------------------------------------------------------------

COMMANDS = (_add_blocks, _add_targets, _add_profile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploykit",
        description="Hardware-aware depth pruning for timm vision models: find the blocks whose merged "
                    "(re-parameterized) form is faster on your target, prune them progressively, merge, "
                    "export to ONNX and verify on the target.")
    parser.add_argument("--version", action="version", version=f"deploykit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except DeployKitError as error:
        print(f"deploykit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deploykit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
