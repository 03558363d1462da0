"""``deploykit profile``: a model's block latency table, measured on a target (or estimated)."""

from __future__ import annotations

from deploykit.cli.args import (
    DEFAULT_MODEL,
    add_device_arguments,
    add_end_to_end_arguments,
    add_protocol_arguments,
    end_to_end_from_args,
    measuring_host,
    protocol_from_args,
    size_argument,
)
from deploykit.progress import to_stderr


def add_profile(sub) -> None:
    from deploykit.latency.sentinel import SentinelPolicy

    p = sub.add_parser(
        "profile", help="measure a model's block latency table on a target (or --estimate it)",
        description="Time every distinct block of a timm model in original and merged form, plus the "
                    "fixed parts (stem, downsampling, head) and the whole model, each exported to ONNX "
                    "and run on the target's runtime in a fresh process pinned to fixed cores. Each figure "
                    "is sampled until the confidence interval of its median is narrow (--max-ci). A "
                    "sentinel (the whole model) is measured at the start, every --sentinel-every entries "
                    "or --sentinel-interval seconds, and at the end; when it drifts more than --max-drift, "
                    "the entries measured meanwhile are measured again and the load is recorded. Then the "
                    "speed anchors (the unpruned and the all-merged model, interleaved), and whole subnets "
                    "end to end: the table's predictor is fitted on designed and random subnets (the "
                    "isolated entries as prior) and its fidelity measured on held-out subnets is stored "
                    "in the table, with this machine's fingerprint. Writes the latency table (CSV + "
                    ".meta.json) after every entry and each subnet into NAME.fit.csv: rerun the same "
                    "command to resume an interrupted profile. --estimate builds a roofline table from the "
                    "target's peak figures instead.")
    p.add_argument("--target", required=True, help="target name (see `deploykit targets`) or YAML path")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"timm model name (default: {DEFAULT_MODEL})")
    p.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                   help="input resolution, 224 or HxW (default: the target's)")
    p.add_argument("--batch", type=int, default=None, metavar="B", help="batch size (default: the target's)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="table CSV path (default: latency_tables/<target>/<model>_<size>_b<batch>.csv)")
    p.add_argument("--estimate", action="store_true",
                   help="roofline estimates from the target's peak figures, for hardware that is not here")
    p.add_argument("--force", action="store_true",
                   help="measure an existing table at --out anew: the new table is built beside it and "
                        "replaces it once complete (an interrupted --force run keeps the old table; rerun "
                        "it to resume the new one)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="resume a table begun on another machine (another fingerprint: CPU, cores, ISA, "
                        "memory, OS, runtime version, device); the table notes it")
    sentinel = p.add_argument_group("sentinel", "the whole model, re-measured to catch the machine changing")
    d = SentinelPolicy()
    sentinel.add_argument("--sentinel-every", type=int, default=d.every, metavar="N",
                          help=f"measure the sentinel after every N entries; 0: only at the start and the "
                               f"end (default: {d.every})")
    sentinel.add_argument("--sentinel-interval", type=float, default=d.interval_s, metavar="S",
                          help=f"or after S seconds since the last one (default: {d.interval_s:g})")
    sentinel.add_argument("--max-drift", type=float, default=d.max_drift, metavar="F",
                          help="measure the entries since the last good sentinel again when the sentinel "
                               f"moves more than this fraction from its start value (default: {d.max_drift}; "
                               "where the settings probe chose the run settings, at least twice the robust "
                               "cv of their fresh processes)")
    add_end_to_end_arguments(p)
    add_protocol_arguments(p)
    add_device_arguments(p, what="measure every entry and subnet")
    p.set_defaults(func=run_profile)


def run_profile(args) -> int:
    from deploykit.latency.profile import profile
    from deploykit.latency.sentinel import SentinelPolicy
    from deploykit.targets import load_target

    sentinel = SentinelPolicy(every=args.sentinel_every, interval_s=args.sentinel_interval,
                              max_drift=args.max_drift)
    result = profile(args.model, load_target(args.target), input_size=args.input_size, batch=args.batch,
                     out=args.out, protocol=None if args.estimate else protocol_from_args(args),
                     estimate=args.estimate, force=args.force, allow_mismatch=args.allow_mismatch,
                     end_to_end=end_to_end_from_args(args), sentinel=sentinel,
                     host=measuring_host(args), progress=to_stderr)
    print(result.summary())
    return 0
