"""``deploykit lut``: a latency table's fidelity check (``check``), its re-anchoring for this machine
(``anchor``) and its prediction for one subnet (``predict``)."""

from __future__ import annotations

from deploykit.cli.args import add_device_arguments, add_paired_argument, measuring_host
from deploykit.progress import to_stderr


def add_lut(sub) -> None:
    from deploykit.latency.options import ANCHOR_ROUNDS, CHECK_SAMPLES, CHECK_SEED, DRIFT_LIMIT

    p = sub.add_parser(
        "lut", help="latency tables: check a table end to end, re-anchor it for this machine, predict",
        description="Work with a latency table (from `deploykit profile`): `check` measures random subnets "
                    "end to end on the table's target and reports how well the table's prediction matches "
                    "them, then stores a calibration; `anchor` re-anchors a table measured on another "
                    "machine for this one; `predict` prints the table's latency for one subnet and the "
                    "held-out fidelity the table stores.")
    actions = p.add_subparsers(dest="lut_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="measure random subnets end to end, compare with the table, store a calibration",
        description="Sample subnets over the whole range of pruned depth (always including the unpruned "
                    "model), build each one merged (random weights), export it to ONNX and time it end to "
                    "end on the table's target with the table's protocol, each in a fresh process. Reports "
                    "Spearman ρ, Kendall τ, the share within ±5% and ±10%, MAPE, bias and the largest error, "
                    "before and after fitting measured ≈ a·predicted + b, stores (a, b) in the table's "
                    "metadata, and writes a CSV of all points and a predicted-vs-measured plot. Points are "
                    "written after every subnet: rerun the same command to resume an interrupted check.")
    check.add_argument("table", metavar="TABLE", help="latency table CSV (or its .meta.json)")
    check.add_argument("--samples", type=int, default=CHECK_SAMPLES, metavar="N",
                       help=f"subnets to measure (default: {CHECK_SAMPLES})")
    check.add_argument("--seed", type=int, default=CHECK_SEED,
                       help=f"seed of the subnet sample (default: {CHECK_SEED})")
    check.add_argument("--out", default=None, metavar="DIR",
                       help="folder for fidelity_<target>_<table>.csv/.png (default: beside the table)")
    check.add_argument("--allow-mismatch", action="store_true",
                       help="check a table measured on another machine that is not re-anchored for this one "
                            "(`deploykit lut anchor`) anyway, against its unscaled predictions")
    check.add_argument("--fresh", action="store_true",
                       help="measure every subnet again instead of reusing the points of an earlier run")
    check.add_argument("--no-store", action="store_true",
                       help="report only; leave the table's calibration as it is")
    check.add_argument("--force-store", action="store_true",
                       help="store the calibration even when the unpruned model now measures more than "
                            f"{DRIFT_LIMIT:.0%}% off the table's own end-to-end row")
    add_paired_argument(check, timed="each subnet", reference="the unpruned model",
                        over="all the check's processes")
    check.add_argument("--no-plot", action="store_true", help="write no PNG")
    check.add_argument("--format", choices=("text", "json"), default="text",
                       help="output format (default: text)")
    add_device_arguments(check, what="measure the subnets")
    check.set_defaults(func=run_lut_check)
    predict = actions.add_parser(
        "predict", help="the table's predicted latency of one subnet, and the table's stored fidelity",
        description="Print the latency the table predicts (its fitted predictor, or the isolated sum; "
                    "then its calibration, if any) for a subnet, given as --prune 0,3,5 or as a "
                    "subnet.json from `deploykit search`, with the unpruned prediction, the speed-up and "
                    "one line with the held-out fidelity stored in the table.")
    predict.add_argument("table", metavar="TABLE", help="latency table CSV (or its .meta.json)")
    chosen = predict.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--prune", default=None, metavar="LIST", help="blocks to prune, e.g. 0,3,5 or 2-4")
    chosen.add_argument("--subnet", default=None, metavar="FILE", help="subnet.json (from deploykit search)")
    predict.set_defaults(func=run_lut_predict)
    anchor = actions.add_parser(
        "anchor", help="re-anchor a table measured on another machine for this one (seconds)",
        description="Measure the table's two speed anchors on this machine — the unpruned model and "
                    "the model with every prunable block merged (random weights), interleaved over "
                    "--rounds rounds, each in a fresh process on the table's target with the table's "
                    "protocol (for a table whose subnets were measured paired: the all-merged model as a "
                    "ratio to the unpruned one in each process, mapped from the table's own predictions of "
                    "the two) — and store the affine map from the table's anchors to these in the table's "
                    "metadata, keyed by this machine's fingerprint. search, lut predict, verify --table and "
                    "run then predict this machine's milliseconds and accept millisecond budgets. Two "
                    "measurements do not prove the table's fidelity here: `deploykit lut check` does.")
    anchor.add_argument("table", metavar="TABLE", help="latency table CSV (or its .meta.json)")
    anchor.add_argument("--rounds", type=int, default=ANCHOR_ROUNDS, metavar="R",
                        help="fresh-process measurements of each anchor model (paired: of the pair); the "
                             f"median is kept (default: {ANCHOR_ROUNDS})")
    add_device_arguments(anchor, what="measure the anchors (and key the rescaling by that machine)")
    anchor.set_defaults(func=run_lut_anchor)


def run_lut_check(args) -> int:
    from deploykit.latency.fidelity import check_table, result_json

    result = check_table(args.table, samples=args.samples, seed=args.seed, out_dir=args.out,
                         allow_mismatch=args.allow_mismatch, fresh=args.fresh, store=not args.no_store,
                         plot=not args.no_plot, force_store=args.force_store, host=measuring_host(args),
                         progress=to_stderr, paired=args.paired)
    print(result_json(result) if args.format == "json" else result.summary())
    return 0


def run_lut_anchor(args) -> int:
    from deploykit.latency.anchor import anchor_table

    result = anchor_table(args.table, rounds=args.rounds, host=measuring_host(args), progress=to_stderr)
    print(result.summary())
    return 0


def run_lut_predict(args) -> int:
    from deploykit.latency.identity import predict_subnet

    prediction = predict_subnet(args.table, prune=args.prune, subnet=args.subnet)
    for line in prediction.notes:
        to_stderr(line)
    print("\n".join(prediction.lines))
    return 0
