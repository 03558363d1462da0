"""``deploykit search``: the subnet with the best accuracy proxy whose predicted latency fits a budget."""

from __future__ import annotations

from deploykit.cli.args import size_argument
from deploykit.progress import to_stderr


def add_search(sub) -> None:
    from deploykit.search.options import DEFAULT_PROXY, STRATEGIES, SearchOptions
    from deploykit.training.heldout import ProxyData

    d = SearchOptions()
    p = sub.add_parser(
        "search", help="find the subnet with the best accuracy proxy whose predicted latency fits a budget",
        description="Search which blocks to prune: maximize an accuracy proxy subject to the latency the "
                    "table predicts (its fitted predictor, or the isolated sum) ≤ --budget. Depth and "
                    "sensitivity: exact dynamic programming along the block chain (any size). Supernet: "
                    "exhaustive up to 2^16 subnets, else the DP's optimum over per-block scores seeding an "
                    "evolutionary search; deterministic under --seed. Prints the table's stored held-out "
                    "fidelity. Writes a subnet.json for `deploykit train subnet --subnet`, or with "
                    "--pareto N a CSV of the best subnets across N budgets. A table measured on another "
                    "machine (another fingerprint) says what differs; a millisecond budget on it is "
                    "refused until `deploykit lut anchor TABLE` re-anchors it here, a ratio budget goes "
                    "on with a note. Several --table/--budget pairs: one subnet within every table's "
                    "budget (exact for depth and sensitivity), reporting which budget binds (least slack).")
    p.add_argument("--table", required=True, action="append", metavar="TABLE",
                   help="latency table CSV (or its .meta.json); repeat it for a joint search: one subnet "
                        "within a budget on every table (tables of one model)")
    p.add_argument("--budget", default=None, action="append", metavar="B",
                   help="0.7 or 70%% (of the unpruned model's predicted latency) or 12ms (needs a table "
                        "measured on, or re-anchored for, this machine); with several tables one per "
                        "--table, in order, or one for all")
    p.add_argument("--pareto", type=int, default=None, metavar="N",
                   help="the best subnets for N budgets from the smallest achievable latency to the "
                        "unpruned one; with several tables, N budgets of the first table, the others' "
                        "--budget held (one --budget per table after the first, or one for all)")
    p.add_argument("--proxy", default=DEFAULT_PROXY, metavar="PROXY",
                   help="depth (fewest pruned blocks, then lowest latency; no data), sensitivity:CKPT "
                        "(per-block loss increase, summed; CKPT: supernet or plain weights) or "
                        "supernet:CKPT (the supernet's top-1 or loss with the subnet's gates) "
                        f"(default: {DEFAULT_PROXY})")
    p.add_argument("--candidates", default=None, metavar="LIST",
                   help="only these blocks may be pruned, e.g. 0,2-5 (default: every prunable block)")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="auto: exact DP for depth/sensitivity; for supernet exhaustive up to 2^16 "
                        "subnets, else evolutionary. exhaustive: enumerate every subnet (depth/"
                        f"sensitivity up to 2^26) (default: {d.strategy})")
    p.add_argument("--population", type=int, default=d.population, metavar="P",
                   help=f"evolutionary population (default: {d.population})")
    p.add_argument("--generations", type=int, default=d.generations, metavar="G",
                   help=f"evolutionary generations (default: {d.generations})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the evolutionary search (default: {d.seed})")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="subnet JSON, or the CSV with --pareto (default: subnet.json / pareto.csv)")
    data = p.add_argument_group("proxy data (sensitivity and supernet proxies)")
    data.add_argument("--data", default=None, metavar="NAME",
                      help="held-out data: digits | mnist5k | imagefolder:PATH (its val split is used)")
    data.add_argument("--val-limit", type=int, default=None, metavar="N", help="use only N held-out samples")
    data.add_argument("--batch-size", type=int, default=ProxyData.batch_size, metavar="B",
                      help=f"evaluation batch (default: {ProxyData.batch_size})")
    data.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                      help="resolution of the proxy data (default: the supernet's training size, else "
                           "the table's)")
    data.add_argument("--metric", choices=("top1", "loss"), default=None,
                      help="what the supernet proxy maximizes: top-1, or minus the loss (default: top1)")
    data.add_argument("--recalibrate-batches", type=int, default=ProxyData.recalibrate_batches, metavar="N",
                      help="re-estimate BatchNorm statistics of each subnet on N training batches "
                           f"(default: {ProxyData.recalibrate_batches})")
    p.set_defaults(func=run_search)


def run_search(args) -> int:
    from deploykit.search.options import SearchOptions
    from deploykit.search.tables import search_tables
    from deploykit.subnet import parse_block_list
    from deploykit.training.heldout import ProxyData

    data = None if args.data is None else ProxyData(
        args.data, val_limit=args.val_limit, batch_size=args.batch_size, input_size=args.input_size,
        recalibrate_batches=args.recalibrate_batches)
    candidates = parse_block_list(args.candidates) if args.candidates is not None else None
    options = SearchOptions(strategy=args.strategy, seed=args.seed, population=args.population,
                            generations=args.generations)
    result = search_tables(args.table, args.budget, proxy=args.proxy, pareto=args.pareto, data=data,
                           metric=args.metric, candidates=candidates, options=options, progress=to_stderr)
    path = result.write(args.out or "pareto.csv") if args.pareto is not None \
        else result.subnet.write(args.out or "subnet.json")
    print(result.summary())
    print(f"wrote {path}")
    return 0
