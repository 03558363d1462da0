"""The ``deploykit`` command: parses arguments, calls one library stage, prints. No logic lives here.

Each command is a pair: ``_add_<name>(subparsers)`` declares its arguments and sets ``func`` to a
``_run_<name>(args) -> int`` that calls the library. Every :class:`DeployKitError` becomes one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
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

    net = prunable(create_model(args.model), input_size=args.input_size)
    if args.format == "json":
        print(json.dumps([info.as_dict() for info in net.blocks], indent=2))
    elif args.format == "csv":
        print(blocks_frame(net.blocks).to_csv(index=False), end="")
    else:
        print(format_blocks_table(net.blocks, model=args.model, input_size=args.input_size))
    return 0


# --- entry point -----------------------------------------------------------------------------------

COMMANDS = (_add_blocks,)


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


if __name__ == "__main__":
    sys.exit(main())
