"""``deploykit targets``: the deployment targets and whether each can be profiled here."""

from __future__ import annotations

import json


def add_targets(sub) -> None:
    p = sub.add_parser(
        "targets", help="list the deployment targets and whether each can be profiled here (and why not)",
        description="List every target (targets/*.yaml): the runtime and execution provider or device "
                    "that serves it, precision, default batch and input size, the hardware it stands "
                    "for, and whether it can be profiled on this machine, or exactly why not.")
    p.add_argument("names", nargs="*", metavar="TARGET",
                   help="target names or YAML paths to show (default: every target)")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="output format (default: table)")
    p.set_defaults(func=run_targets)


def run_targets(args) -> int:
    from deploykit.runtimes import describe, format_targets
    from deploykit.targets import list_targets, load_target, targets_source_line

    targets = [load_target(name) for name in args.names] if args.names else list_targets()
    rows = [describe(target) for target in targets]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(f"{len(rows)} target(s) {'named on the command line' if args.names else targets_source_line()}")
        print(format_targets(rows))
    return 0
