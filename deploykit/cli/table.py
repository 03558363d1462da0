"""``deploykit table``: the speed-vs-accuracy table of trained variants, and a Pareto plot."""

from __future__ import annotations

from deploykit.cli.args import (
    add_device_arguments,
    add_paired_argument,
    add_protocol_arguments,
    measuring_host,
    protocol_from_args,
)
from deploykit.progress import to_stderr


def add_table(sub) -> None:
    from deploykit.verify.timing import DEFAULT_ROUNDS

    p = sub.add_parser(
        "table", help="the speed-vs-accuracy table of trained variants, and a Pareto plot",
        description="One row per variant (the original and each pruned model): its training budget in "
                    "epochs, top-1 (merged, for a subnet), Δ top-1 against the unpruned model of the same "
                    "budget (named in the 'Δ vs' column), params, MACs, and per target the "
                    "table's predicted latency, the measured latency, the speed-up measured against the "
                    "reference in the same verify run, and the numerics verdict. Each RUN is a variant "
                    "directory (result.json from `deploykit train`, plus any verify*.json reports) or a "
                    "directory of them; a run directory's latency-TARGET.json files (`deploykit run`'s one "
                    "round-robin measurement per target) give those targets' figures. Missing figures stay "
                    "blank.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="a variant directory, or a run directory whose subdirectories are variant ones")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="write the table as .md, .csv (raw numbers) or .html (default: Markdown on stdout)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write a plot of top-1 against measured latency with the Pareto front, one panel "
                        "per target")
    group = p.add_argument_group(
        "one measurement for the table",
        "time every variant's model.onnx on a target in one round-robin measurement (fresh processes, "
        "--rounds rounds): the table's measured ms and speed-ups for that target then come from it, "
        "with their spread, instead of from verify runs minutes apart")
    group.add_argument("--measure", default=None, metavar="TARGET", help="the target to measure on")
    group.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, metavar="N",
                       help=f"rounds (default: {DEFAULT_ROUNDS})")
    group.add_argument("--table", dest="latency_table", default=None, metavar="TABLE",
                       help="measure with the run settings this latency table was measured with")
    add_paired_argument(group, timed="each variant", reference="the original", over="the rounds")
    group.add_argument("--latency-out", default=None, metavar="JSON",
                       help="where the measurement goes (default: latency-TARGET.json in the first RUN)")
    add_protocol_arguments(p)
    add_device_arguments(p, what="measure")
    p.set_defaults(func=run_table)


def run_table(args) -> int:
    from deploykit.latency.table import LatencyTable
    from deploykit.results_table import measure_variants, table_measurements, write_speed_accuracy
    from deploykit.targets import load_target

    measured = None
    if args.measure is not None:
        table = LatencyTable.read(args.latency_table) if args.latency_table else None
        measured = measure_variants(args.runs, target=load_target(args.measure),
                                    protocol=protocol_from_args(args), rounds=args.rounds,
                                    out=args.latency_out, table=table, host=measuring_host(args),
                                    paired=args.paired, progress=to_stderr)
        print(f"wrote {measured}")
    written = write_speed_accuracy(args.runs, out=args.out, plot=args.plot,
                                   measurements=table_measurements(args.runs, measured))
    print(written.markdown if written.table_path is None else f"wrote {written.table_path}")
    if written.plot_path is not None:
        print(f"wrote {written.plot_path}")
    return 0
