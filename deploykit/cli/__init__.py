"""The ``deploykit`` command: parses arguments, calls one library function, prints. No logic lives here.

One module per command group (``model``: blocks, export, convert; ``targets``; ``profile``; ``train``;
``lut``; ``search``; ``verify``; ``table``; ``run``; ``device``: serve, device), each with
``add_<name>(subparsers)``, which declares a command's arguments and sets ``func`` to its
``run_<name>(args) -> int``; the options more than one command takes are declared in :mod:`.args`.
Defaults and help texts are read from the library's config objects and signatures. Every
:class:`DeployKitError`, and any OSError (a file or folder that cannot be read or written), becomes one
line on stderr and exit code 2; anything else is a bug and keeps its traceback. Building the parser
loads nothing heavy (no torch, no pandas): each ``run_<name>`` imports what its command needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from deploykit import __version__
from deploykit.cli import device, lut, model, profile, run, search, table, targets, train, verify
from deploykit.errors import DeployKitError, os_error_reason

__all__ = ["COMMANDS", "OneLineParser", "build_parser", "main"]


# --- entry point -----------------------------------------------------------------------------------

# Each command's ``add_<name>(subparsers)``, in the order `deploykit --help` lists them.
COMMANDS = (run.add_run, model.add_blocks, targets.add_targets, profile.add_profile, train.add_train,
            lut.add_lut, search.add_search, model.add_export, model.add_convert, verify.add_verify,
            table.add_table, device.add_serve, device.add_device)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (like every other deploykit error) that
    points to --help instead of repeating the usage. Sub-command parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
        return _fail(args.command, _whole_message(error))
    except KeyboardInterrupt:
        print(f"deploykit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
        return 0
    except OSError as error:  # a file or folder the library did not anticipate: still one line
        return _fail(args.command, os_error_reason(error))


def _fail(command: str, message: str) -> int:
    print(f"deploykit {command}: error: {message}", file=sys.stderr)
    return 2


def _whole_message(error: DeployKitError) -> str:
    """All of the message on one line (never cut: it is the user's only clue); the error's class name
    when it has no message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__

