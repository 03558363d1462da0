"""The ``deploykit`` command: parses arguments, calls one library stage, prints. No logic lives here.

Each command is a pair: ``_add_<name>(subparsers)`` declares its arguments and sets ``func`` to a
``_run_<name>(args) -> int`` that calls the library. Every :class:`DeployKitError`, and any OSError
(a file or folder that cannot be read or written), becomes one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from deploykit import __version__
from deploykit.errors import DeployKitError, os_error_reason
from deploykit.progress import to_stderr
from deploykit.shapes import size_argument

DEFAULT_MODEL = "convnext_tiny"
TRAINING_DEVICES = ("auto", "cpu", "cuda")
WEIGHTS_FORMATS = ("a .pt/.pth/.bin/.safetensors file (a state dict or a timm training checkpoint, whose EMA "
                   "weights are used when present), a Hugging Face-style folder (model.safetensors + "
                   "config.json) or package:efficientnet_lite0; nothing is unpickled")
UNSAFE_PICKLE_HELP = ("also load a whole-module torch.save pickle (such as merged.pt of deploykit before "
                      "model files). DANGER: unpickling runs code stored in the file; use it only for "
                      "files you made or trust")


def _add_device_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """Declare ``--device URL --token-file FILE --device-ca FILE``: measure on a device agent."""
    group = parser.add_argument_group(
        "measuring device", f"{what} on a device agent (`deploykit serve` on the target machine) instead "
                            "of this machine; the table or report then records the device's runtime and "
                            "machine fingerprint and its URL")
    group.add_argument("--device", default=None, metavar="URL",
                       help="the agent, e.g. https://board:8765, or http://127.0.0.1:8765 through an SSH "
                            "tunnel (default: measure here)")
    group.add_argument("--token-file", default=None, metavar="FILE",
                       help="file holding the agent's token (default: $DEPLOYKIT_DEVICE_TOKEN)")
    group.add_argument("--device-ca", default=None, metavar="FILE",
                       help="CA or self-signed certificate to verify an https agent with (default: the "
                            "system's CAs)")
    group.add_argument("--wait-quiet", dest="wait_quiet", type=float, default=None, metavar="S",
                       help="measuring here: while other processes use the cores a measurement needs, "
                            "wait up to S seconds for quiet, then measure and flag the figure as "
                            "contended (default: $DEPLOYKIT_WAIT_QUIET or 30)")


def _measuring_host(args):
    """Where the command measures: the --device agent, or this machine."""
    from deploykit.remote.host import measuring_host

    return measuring_host(args.device, token_file=args.token_file, ca_file=args.device_ca,
                          wait_quiet_s=args.wait_quiet)


# --- deploykit blocks ------------------------------------------------------------------------------

def _add_blocks(sub) -> None:
    p = sub.add_parser(
        "blocks", help="list a model's blocks: family, shapes, MACs original vs merged, prunable or why not",
        description="List every block of a timm model that deploykit knows, in execution order, with "
                    "its input/output shape, MACs of the original and of the merged form, and whether it "
                    "can be pruned (and why not). Built without pretrained weights: no network needed.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"timm model name (default: {DEFAULT_MODEL})")
    p.add_argument("--input-size", type=size_argument, default=(224, 224), metavar="SIZE",
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


# --- deploykit profile -----------------------------------------------------------------------------

def _add_profile(sub) -> None:
    from deploykit.latency.options import add_end_to_end_arguments
    from deploykit.latency.sentinel import SentinelPolicy
    from deploykit.protocol import add_protocol_arguments

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
                               f"moves more than this fraction from its start value (default: {d.max_drift})")
    add_end_to_end_arguments(p)
    add_protocol_arguments(p)
    _add_device_arguments(p, what="measure every entry and subnet")
    p.set_defaults(func=_run_profile)


def _run_profile(args) -> int:
    from deploykit.latency.options import EndToEndOptions
    from deploykit.latency.profile import profile
    from deploykit.latency.sentinel import SentinelPolicy
    from deploykit.protocol import Protocol
    from deploykit.targets import load_target

    sentinel = SentinelPolicy(every=args.sentinel_every, interval_s=args.sentinel_interval,
                              max_drift=args.max_drift)
    result = profile(args.model, load_target(args.target), input_size=args.input_size, batch=args.batch,
                     out=args.out, protocol=None if args.estimate else Protocol.from_args(args),
                     estimate=args.estimate, force=args.force, allow_mismatch=args.allow_mismatch,
                     end_to_end=EndToEndOptions.from_args(args), sentinel=sentinel,
                     host=_measuring_host(args), progress=to_stderr)
    print(result.summary())
    return 0


# --- deploykit train -------------------------------------------------------------------------------

def _add_train(sub) -> None:
    from deploykit.training.config import METHODS, SubnetConfig, SupernetConfig
    from deploykit.training.options import add_common_arguments, add_distill_arguments

    p = sub.add_parser(
        "train", help="train the original (baseline), the supernet, or a pruned subnet (progressive)",
        description="Training stages, on one process or many (torchrun --nproc_per_node N deploykit "
                    "train ...: DDP, gloo on CPU, nccl on CUDA; --batch-size is the global batch). Every "
                    "run writes log.csv and checkpoint.pt into --out each epoch; --resume continues it.")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    baseline = stages.add_parser(
        "baseline", help="train a model from scratch, or fine-tune local --weights, with cross-entropy",
        description="Train MODEL on the data (from scratch, or from local --weights whose classifier is "
                    "re-initialized when its class count differs). Writes model.pt for --weights.")
    baseline.add_argument("--model", default=None,
                          help="timm model name (optional with a --weights folder whose config.json "
                               "names it)")
    baseline.add_argument("--weights", default=None, metavar="FILE",
                          help=f"weights to fine-tune (optional): {WEIGHTS_FORMATS}")
    add_common_arguments(baseline, "baseline")
    supernet = stages.add_parser(
        "supernet", help="train the weight-sharing supernet (sampled pruned sets, distillation)",
        description="Wrap every prunable block; each step prunes k ~ U{0..K} sampled blocks at the global "
                    "λ (ramping 0 → 1) and trains on CE + distillation from the frozen original. Writes "
                    "supernet.pt for the search's supernet:CKPT proxy.")
    supernet.add_argument("--model", default=None,
                          help="timm model name (optional with a --weights folder whose config.json "
                               "names it)")
    supernet.add_argument("--weights", required=True, metavar="FILE",
                          help=f"the trained original: {WEIGHTS_FORMATS}")
    supernet.add_argument("--max-pruned", type=int, default=SupernetConfig.max_pruned, metavar="K",
                          help="at most K blocks pruned per step (default: all candidates)")
    supernet.add_argument("--candidates", default=SupernetConfig.candidates, metavar="LIST",
                          help="blocks that may be pruned, e.g. 0,2-5 (default: every prunable block)")
    supernet.add_argument("--ramp-epochs", type=float, default=SupernetConfig.ramp_epochs, metavar="R",
                          help="epochs over which λ ramps 0 → 1 (default: a third of --epochs)")
    add_common_arguments(supernet, "supernet")
    add_distill_arguments(supernet)
    subnet = stages.add_parser(
        "subnet", help="train a pruned subnet (progressive λ ramp, abrupt or drop), then merge it",
        description="Train the subnet from the original --weights with distillation, then merge it "
                    "into a plain module and report top-1 before and after the merge. Writes the merged "
                    "model as merged.safetensors: its tensors plus the architecture record that rebuilds "
                    "it, loaded by `deploykit export` and `verify --torch` without unpickling.")
    chosen = subnet.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--subnet", default=None, metavar="FILE", help="subnet.json from the search")
    chosen.add_argument("--prune", default=None, metavar="LIST",
                        help="blocks to prune, e.g. 0,3,5 (with --model)")
    subnet.add_argument("--model", default=None, help="timm model name (with --prune)")
    subnet.add_argument("--weights", required=True, metavar="FILE",
                        help=f"the trained original: {WEIGHTS_FORMATS}")
    subnet.add_argument("--method", choices=METHODS, default=SubnetConfig.method,
                        help="progressive λ ramp (default), abrupt (λ = 1 from the start) or drop the blocks")
    subnet.add_argument("--progressive-epochs", type=float, default=SubnetConfig.progressive_epochs,
                        metavar="P",
                        help="epochs over which λ ramps 0 → 1 (default: a third of --epochs; 0 = abrupt)")
    add_common_arguments(subnet, "subnet")
    add_distill_arguments(subnet)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    import os

    from deploykit.checkpoints import folder_config, model_name
    from deploykit.subnet import choose_subnet, parse_block_list
    from deploykit.training import SubnetConfig, SupernetConfig, train_baseline, train_subnet, train_supernet
    from deploykit.training.options import data_config, distill_config, optim_config, run_config

    from_weights_folder = args.stage != "subnet" or (args.prune is not None and folder_config(args.weights))
    if args.model is None and from_weights_folder:
        args.model = model_name(None, args.weights)  # named by the weights folder's config.json
    if args.stage == "baseline":
        result = train_baseline(args.model, data=data_config(args), weights=args.weights,
                                run=run_config(args, "baseline", args.model), optim=optim_config(args))
        summary = f"baseline top-1 {result.top1:.2f}%: {result.weights_path}"
    elif args.stage == "supernet":
        candidates = parse_block_list(args.candidates) if args.candidates is not None else None
        config = SupernetConfig(max_pruned=args.max_pruned, candidates=candidates,
                                ramp_epochs=args.ramp_epochs)
        result = train_supernet(args.model, weights=args.weights, data=data_config(args),
                                run=run_config(args, "supernet", args.model), config=config,
                                optim=optim_config(args), distill=distill_config(args))
        summary = f"supernet top-1 {result.top1:.2f}% (none pruned): {result.supernet_path}"
    else:
        size = data_config(args).input_size if args.subnet is None else args.input_size
        chosen = choose_subnet(path=args.subnet, prune=args.prune, model=args.model, input_size=size)
        config = SubnetConfig(method=args.method, progressive_epochs=args.progressive_epochs)
        result = train_subnet(chosen, weights=args.weights, data=data_config(args, chosen.input_size),
                              run=run_config(args, "subnet", chosen.model), optim=optim_config(args),
                              config=config, distill=distill_config(args))
        summary = (f"subnet ({result.method}) top-1 {result.top1_unmerged:.2f}% unmerged, "
                   f"{result.top1_merged:.2f}% merged: {result.merged_path}")
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary)
    return 0


# --- deploykit lut ---------------------------------------------------------------------------------

def _add_lut(sub) -> None:
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
    check.add_argument("--samples", type=int, default=40, metavar="N",
                       help="subnets to measure (default: 40)")
    check.add_argument("--seed", type=int, default=0, help="seed of the subnet sample (default: 0)")
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
                       help="store the calibration even when the unpruned model now measures more than 25%% "
                            "off the table's own end-to-end row")
    check.add_argument("--paired", action="store_true",
                       help="time each subnet as a ratio to the unpruned model in the same process (short "
                            "alternating slices); its ms = that ratio × the unpruned model's median over all "
                            "the check's processes. Steadier where fresh processes land in different states; "
                            "this machine only (a device agent measures one file per request)")
    check.add_argument("--no-plot", action="store_true", help="write no PNG")
    check.add_argument("--format", choices=("text", "json"), default="text",
                       help="output format (default: text)")
    _add_device_arguments(check, what="measure the subnets")
    check.set_defaults(func=_run_lut_check)
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
    predict.set_defaults(func=_run_lut_predict)
    anchor = actions.add_parser(
        "anchor", help="re-anchor a table measured on another machine for this one (seconds)",
        description="Measure the table's two speed anchors on this machine — the unpruned model and "
                    "the model with every prunable block merged (random weights), interleaved over "
                    "--rounds rounds, each in a fresh process on the table's target with the table's "
                    "protocol — and store the affine map from the table's anchors to these in the table's "
                    "metadata, keyed by this machine's fingerprint. search, lut predict, verify --table and "
                    "run then predict this machine's milliseconds and accept millisecond budgets. Two "
                    "measurements do not prove the table's fidelity here: `deploykit lut check` does.")
    anchor.add_argument("table", metavar="TABLE", help="latency table CSV (or its .meta.json)")
    anchor.add_argument("--rounds", type=int, default=3, metavar="R",
                        help="interleaved measurements of each anchor model; the median is kept (default: 3)")
    _add_device_arguments(anchor, what="measure the anchors (and key the rescaling by that machine)")
    anchor.set_defaults(func=_run_lut_anchor)


def _run_lut_check(args) -> int:
    from deploykit.latency.fidelity import check_table, result_json

    result = check_table(args.table, samples=args.samples, seed=args.seed, out_dir=args.out,
                         allow_mismatch=args.allow_mismatch, fresh=args.fresh, store=not args.no_store,
                         plot=not args.no_plot, force_store=args.force_store, host=_measuring_host(args),
                         progress=to_stderr, paired=args.paired)
    print(result_json(result) if args.format == "json" else result.summary())
    return 0


def _run_lut_anchor(args) -> int:
    from deploykit.latency.anchor import anchor_table

    result = anchor_table(args.table, rounds=args.rounds, host=_measuring_host(args), progress=to_stderr)
    print(result.summary())
    return 0


def _run_lut_predict(args) -> int:
    from deploykit.latency.identity import open_table
    from deploykit.subnet import choose_subnet

    notes: list[str] = []  # said once the subnet is known good: bad input stays a one-line error
    table = open_table(args.table, budget_unit=None, say=notes.append)
    subnet = choose_subnet(path=args.subnet, prune=args.prune, model=table.meta.model if args.prune else None,
                           input_size=table.meta.input_size if args.prune else None)
    for line in notes:
        to_stderr(line)
    meta = table.meta
    predicted, unpruned = table.predict_subnet(subnet), table.predict(())
    how = "fitted predictor" if meta.predictor is not None else "isolated sum"
    if meta.calibration:
        how += ", calibrated: {:.4f}·x {:+.3f} ms".format(*meta.calibration)
    print(f"{meta.model} at {meta.input_size[0]}x{meta.input_size[1]} b{meta.batch} on {meta.target} "
          f"({meta.mode}, {how}): pruned {list(subnet.pruned)} → {predicted:.3f} ms; "
          f"unpruned {unpruned:.3f} ms; speed-up {unpruned / predicted:.2f}×")
    print(table.fidelity_line())
    return 0


# --- deploykit search ------------------------------------------------------------------------------

def _add_search(sub) -> None:
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
    p.add_argument("--proxy", default="depth", metavar="PROXY",
                   help="depth (fewest pruned blocks, then lowest latency; no data), sensitivity:CKPT "
                        "(per-block loss increase, summed; CKPT: supernet or plain weights) or "
                        "supernet:CKPT (the supernet's top-1 or loss with the subnet's gates) "
                        "(default: depth)")
    p.add_argument("--candidates", default=None, metavar="LIST",
                   help="only these blocks may be pruned, e.g. 0,2-5 (default: every prunable block)")
    p.add_argument("--strategy", choices=("auto", "exhaustive", "evolutionary"), default="auto",
                   help="auto: exact DP for depth/sensitivity; for supernet exhaustive up to 2^16 "
                        "subnets, else evolutionary. exhaustive: enumerate every subnet (depth/"
                        "sensitivity up to 2^26) (default: auto)")
    p.add_argument("--population", type=int, default=24, metavar="P",
                   help="evolutionary population (default: 24)")
    p.add_argument("--generations", type=int, default=12, metavar="G",
                   help="evolutionary generations (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evolutionary search (default: 0)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="subnet JSON, or the CSV with --pareto (default: subnet.json / pareto.csv)")
    data = p.add_argument_group("proxy data (sensitivity and supernet proxies)")
    data.add_argument("--data", default=None, metavar="NAME",
                      help="held-out data: digits | mnist5k | imagefolder:PATH (its val split is used)")
    data.add_argument("--val-limit", type=int, default=None, metavar="N", help="use only N held-out samples")
    data.add_argument("--batch-size", type=int, default=256, metavar="B",
                      help="evaluation batch (default: 256)")
    data.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                      help="resolution of the proxy data (default: the supernet's training size, else "
                           "the table's)")
    data.add_argument("--metric", choices=("top1", "loss"), default=None,
                      help="what the supernet proxy maximizes: top-1, or minus the loss (default: top1)")
    data.add_argument("--recalibrate-batches", type=int, default=0, metavar="N",
                      help="re-estimate BatchNorm statistics of each subnet on N training batches "
                           "(default: 0)")
    p.set_defaults(func=_run_search)


def _run_search(args) -> int:
    from deploykit.latency.identity import open_table
    from deploykit.search import joint_pareto, joint_search, make_proxy, pareto, search
    from deploykit.search.joint import check_same_model, pair_budgets
    from deploykit.subnet import parse_block_list
    from deploykit.training import ProxyData

    budgets = pair_budgets(len(args.table), args.budget, args.pareto)
    tables = [open_table(path, say=to_stderr, budget_unit=budget.unit if budget is not None else "fraction")
              for path, budget in zip(args.table, budgets)]  # before any proxy work
    check_same_model(tables)
    data = None if args.data is None else ProxyData(
        args.data, val_limit=args.val_limit, batch_size=args.batch_size, input_size=args.input_size,
        recalibrate_batches=args.recalibrate_batches)
    proxy = make_proxy(args.proxy, table=tables[0], data=data, metric=args.metric, progress=to_stderr)
    options = dict(candidates=parse_block_list(args.candidates) if args.candidates is not None else None,
                   strategy=args.strategy, seed=args.seed, population=args.population,
                   generations=args.generations, progress=to_stderr)
    if len(tables) > 1 and args.pareto is not None:
        result = joint_pareto(tables, budgets[1:], proxy, args.pareto, **options)
    elif len(tables) > 1:
        result = joint_search(tables, budgets, proxy, **options)
    elif args.pareto is not None:
        result = pareto(tables[0], proxy, args.pareto, **options)
    else:
        result = search(tables[0], budgets[0], proxy, **options)
    path = result.write(args.out or "pareto.csv") if args.pareto is not None \
        else result.subnet.write(args.out or "subnet.json")
    print(result.summary())
    print(f"wrote {path}")
    return 0


# --- deploykit export ------------------------------------------------------------------------------

def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a merged (or original) model to one simplified, checked ONNX file",
        description="Export a model to ONNX with torch's dynamo exporter, simplify it with onnxsim and "
                    "validate it with the ONNX checker. MODEL is a model file (such as merged.safetensors "
                    "from `deploykit train subnet`: tensors plus the architecture record that rebuilds "
                    "them, so nothing is unpickled), a timm model name (random weights unless --weights, "
                    "whose class count the classifier gets) or a Hugging Face-style folder. A whole-module "
                    "torch.save pickle is refused unless --unsafe-pickle. Prints the node count, "
                    "parameters, MACs and file size.")
    p.add_argument("checkpoint", metavar="MODEL",
                   help="model file (.safetensors from deploykit), timm model name, or Hugging Face-style "
                        "folder")
    p.add_argument("--out", required=True, metavar="PATH", help="the ONNX file to write")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help=f"weights for a timm model name: {WEIGHTS_FORMATS}")
    p.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                   help="input resolution, 224 or HxW (default: a model file's own, else 224)")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="batch size (default: 1)")
    p.add_argument("--opset", type=int, default=None, metavar="N",
                   help="ONNX opset (default: the exporter's)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="make the batch dimension dynamic (named 'batch'); if onnxsim would fix it, "
                        "the unsimplified graph is kept and a warning says so")
    p.add_argument("--table", default=None, metavar="TABLE",
                   help="the latency table the model's figures come from: also write "
                        "OUT.settings.json beside the ONNX with the run settings (threads, spinning, ...) "
                        "the table was measured with, for deployment and `deploykit verify`")
    p.add_argument("--unsafe-pickle", action="store_true", help=UNSAFE_PICKLE_HELP)
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    import warnings

    from deploykit.errors import ConfigError
    from deploykit.export import export_onnx, onnx_summary
    from deploykit.macs import count_macs, count_params
    from deploykit.modelfile import load_module

    if args.batch < 1:
        raise ConfigError(f"--batch must be ≥ 1, got {args.batch}")
    deployment = _deployment_of(args.table) if args.table else None
    loaded = load_module(args.checkpoint, weights=args.weights, input_size=args.input_size,
                         unsafe_pickle=args.unsafe_pickle)
    _print_notes("export", loaded.notes)
    module, what = loaded.module, loaded.description
    args.input_size = args.input_size or loaded.input_size or (224, 224)
    shape = (args.batch, 3, *args.input_size)
    params = count_params(module)  # before the file is written: a failure here leaves nothing behind
    macs = count_macs(module, shape[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        path = export_onnx(module, shape, args.out, opset=args.opset, dynamic_batch=args.dynamic_batch)
    for warning in caught:
        if issubclass(warning.category, RuntimeWarning):
            print(f"deploykit export: warning: {warning.message}", file=sys.stderr)
    info = onnx_summary(path)
    inputs = ", ".join(f"{name} {list(dims)}" for name, dims in info["inputs"].items())
    print(f"exported {what} → {path}")
    print(f"  input {inputs}; opset {info['opset'].get('ai.onnx', '?')}")
    print(f"  nodes {info['nodes']}; params {params / 1e6:.3f} M ({params} in PyTorch, "
          f"{info['initializer_values']} ONNX initializer values)")
    print(f"  MACs {macs / 1e6:.2f} M per image at {args.input_size[0]}x{args.input_size[1]}")
    print(f"  file size {info['size_bytes'] / 1e6:.2f} MB ({info['size_bytes']} bytes)")
    if deployment is not None:
        from deploykit.deployment import write_settings

        written = write_settings(path, deployment)
        print(f"  run settings {deployment.settings.describe()} (as {args.table} was measured) → {written}")
    return 0


def _deployment_of(table_file: str):
    from deploykit.latency.table import read_meta

    meta = read_meta(table_file)
    return meta.deployment(measured_by=str(table_file))


def _print_notes(command: str, notes) -> None:
    for note in notes:
        print(f"deploykit {command}: note: {note}", file=sys.stderr)


# --- deploykit convert -----------------------------------------------------------------------------

def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert", help="write a model as a model file (tensors + architecture record, no code)",
        description="Write MODEL as a deploykit model file: one .safetensors file holding its tensors and, "
                    "in its header, the architecture record (timm model name, classes, input size, merged "
                    "and dropped blocks) that rebuilds it; `deploykit export` and `verify --torch` load it "
                    "without unpickling. The record is read off the model and checked: the file is written "
                    "only if the structure it describes reproduces the model's outputs exactly. MODEL is "
                    "anything export takes; a whole-module pickle (merged.pt of older deploykit) needs "
                    "--unsafe-pickle.")
    p.add_argument("checkpoint", metavar="MODEL",
                   help="a whole-module pickle (with --unsafe-pickle), a timm model name, a Hugging "
                        "Face-style folder or a model file")
    p.add_argument("--out", required=True, metavar="PATH", help="the model file to write (.safetensors)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help=f"weights for a timm model name: {WEIGHTS_FORMATS}")
    p.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                   help="input resolution recorded in the file, 224 or HxW (default: the model's fixed size, "
                        "else 224)")
    p.add_argument("--unsafe-pickle", action="store_true", help=UNSAFE_PICKLE_HELP)
    p.set_defaults(func=_run_convert)


def _run_convert(args) -> int:
    from deploykit.modelfile import convert_model

    path, record = convert_model(args.checkpoint, args.out, weights=args.weights, input_size=args.input_size,
                                 unsafe_pickle=args.unsafe_pickle)
    print(f"wrote {path} ({record.describe()})")
    return 0


# --- deploykit verify ------------------------------------------------------------------------------

def _add_verify(sub) -> None:
    from deploykit.protocol import add_protocol_arguments

    p = sub.add_parser(
        "verify", help="verify an exported model on its target: numerics, latency, prediction, speed-up",
        description="Run an ONNX file on the target's runtime. With --torch: compare its outputs with "
                    "PyTorch's on N seeded inputs (max abs and max relative error = max|Δ| / max|y|; "
                    "tolerance fp32 1e-4, fp16 1e-2; the ONNX file runs in this process in a session of "
                    "the target's runtime: onnxruntime with its provider checked, OpenVINO with its "
                    "precision hint read back, TensorRT or MIGraphX). Time it end to end under the "
                    "measurement protocol, each measurement in a fresh process, interleaved with "
                    "--reference (model, reference, model, …) for the speed-up; with --table, compare "
                    "with the table's prediction for the pruned blocks. With --device URL the file runs "
                    "and is timed on a device agent (`deploykit serve`): the numerics there on the same "
                    "seeded inputs, PyTorch here. Writes a JSON report with --out. Exit 1 when the "
                    "numerics fail, 2 on bad input or a runtime that is not here (or would silently fall "
                    "back).")
    p.add_argument("onnx", metavar="MODEL.onnx", help="the exported model")
    p.add_argument("--target", required=True, help="target name (see `deploykit targets`) or YAML path")
    p.add_argument("--reference", default=None, metavar="ONNX",
                   help="the original model's ONNX file, timed in the same run for the speed-up")
    p.add_argument("--table", default=None, metavar="TABLE",
                   help="latency table CSV: its prediction for the pruned blocks is reported")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--pruned", default=None, metavar="LIST",
                        help="the pruned blocks, e.g. 0,3,5 or 2-4 ('' for none)")
    chosen.add_argument("--subnet", default=None, metavar="FILE", help="subnet.json naming the pruned blocks")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="use a table made for another target, batch or input size (a table measured on "
                        "another machine is always used, with a note, rescaled where `lut anchor` "
                        "re-anchored it here)")
    p.add_argument("--torch", default=None, metavar="MODEL",
                   help="the PyTorch model to compare with: a model file (merged.safetensors from `deploykit "
                        "train subnet`), a timm model name or a Hugging Face-style folder")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help=f"weights for a --torch timm model name: {WEIGHTS_FORMATS}")
    p.add_argument("--unsafe-pickle", action="store_true", help=UNSAFE_PICKLE_HELP)
    p.add_argument("--inputs", type=int, default=4, metavar="N",
                   help="seeded random inputs for the numerics check (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of those inputs (default: 0)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="batch for a dynamic-batch file (default: the file's, else the target's)")
    p.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                   help="input size for a file with dynamic height/width (default: the file's)")
    p.add_argument("--rounds", type=int, default=3, metavar="R",
                   help="latency measurements per file, alternating model and reference; the speed-up is "
                        "the median over rounds of the within-round ratio (default: 3)")
    p.add_argument("--numerics-only", action="store_true", help="check the numerics only; measure no latency")
    p.add_argument("--out", default=None, metavar="PATH", help="write the report as JSON here")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    add_protocol_arguments(p)
    _add_device_arguments(p, what="run the numerics and time the files (PyTorch stays here)")
    p.set_defaults(func=_run_verify)


def _run_verify(args) -> int:
    from deploykit.errors import ConfigError
    from deploykit.latency.table import LatencyTable
    from deploykit.modelfile import load_module
    from deploykit.protocol import Protocol
    from deploykit.subnet import Subnet, parse_block_list
    from deploykit.targets import load_target
    from deploykit.verify import onnx_input_shape, verify

    if args.weights is not None and args.torch is None:
        raise ConfigError("--weights goes with --torch MODEL_NAME")
    if args.numerics_only and args.torch is None:
        raise ConfigError("--numerics-only needs --torch (the model to compare with)")
    target = load_target(args.target)
    host = _measuring_host(args)
    table = LatencyTable.read(args.table) if args.table is not None else None  # verify opens it for use
    pruned = None
    if args.subnet is not None:
        subnet = Subnet.read(args.subnet)
        if table is not None and subnet.model != table.meta.model:
            raise ConfigError(f"{args.subnet} is for {subnet.model}, the table for {table.meta.model}")
        pruned = subnet.pruned
    elif args.pruned is not None:
        pruned = parse_block_list(args.pruned)
    module = name = None
    if args.torch is not None:
        size = args.input_size
        if size is None and os.path.isfile(args.onnx):  # a timm ViT is built for the file's size
            size = onnx_input_shape(args.onnx, batch=args.batch, default_batch=target.batch,
                                    default_size=target.input_size)[2:]
        loaded = load_module(args.torch, weights=args.weights, input_size=size,
                             unsafe_pickle=args.unsafe_pickle)
        _print_notes("verify", loaded.notes)
        module, name = loaded.module, loaded.description
    report = verify(args.onnx, target=target, protocol=Protocol.from_args(args), reference=args.reference,
                    torch_module=module, torch_name=name, table=table, pruned=pruned,
                    allow_mismatch=args.allow_mismatch, n_inputs=args.inputs, seed=args.seed,
                    rounds=args.rounds, measure_latency=not args.numerics_only, batch=args.batch,
                    input_size=args.input_size, host=host, progress=to_stderr)
    print(json.dumps(report.as_dict(), indent=2) if args.format == "json" else report.summary())
    if args.out is not None:
        print(f"wrote {report.write(args.out)}", file=sys.stderr)
    return 1 if report.passed is False else 0


# --- deploykit table -------------------------------------------------------------------------------

def _add_table(sub) -> None:
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
    group.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds (default: 3)")
    group.add_argument("--table", dest="latency_table", default=None, metavar="TABLE",
                       help="measure with the run settings this latency table was measured with")
    group.add_argument("--latency-out", default=None, metavar="JSON",
                       help="where the measurement goes (default: latency-TARGET.json in the first RUN)")
    from deploykit.protocol import add_protocol_arguments

    add_protocol_arguments(p)
    _add_device_arguments(p, what="measure")
    p.set_defaults(func=_run_table)


def _run_table(args) -> int:
    from deploykit.results_table import measure_variants, run_measurements, write_speed_accuracy

    measured = []
    if args.measure is not None:
        from deploykit.latency.table import LatencyTable
        from deploykit.protocol import Protocol
        from deploykit.targets import load_target

        table = LatencyTable.read(args.latency_table) if args.latency_table else None
        target = load_target(args.measure)
        path = measure_variants(args.runs, target=target,
                                protocol=Protocol.from_args(args), rounds=args.rounds,
                                out=args.latency_out, table=table, host=_measuring_host(args),
                                progress=to_stderr)
        print(f"wrote {path}")
        measured.append(path)
    measured += run_measurements(args.runs, except_targets=[target.name] if measured else [])
    written = write_speed_accuracy(args.runs, out=args.out, plot=args.plot, measurements=measured)
    print(written.markdown if written.table_path is None else f"wrote {written.table_path}")
    if written.plot_path is not None:
        print(f"wrote {written.plot_path}")
    return 0


# --- deploykit run ---------------------------------------------------------------------------------

def _add_run(sub) -> None:
    from deploykit.latency.options import add_end_to_end_arguments
    from deploykit.pipeline import demo_defaults
    from deploykit.protocol import add_protocol_arguments
    from deploykit.training.config import DEVICES, METHODS
    from deploykit.training.options import add_strict_images_argument

    d = SimpleNamespace(**demo_defaults())
    p = sub.add_parser(
        "run", help="the whole pipeline: baseline, profile, supernet, search per budget, progressive "
                    "training, merge, export, verify, speed-vs-accuracy table",
        description="Run every stage in order in one run directory: train the original (unless --weights), "
                    "profile its block latency table on the target, train the supernet, and for each "
                    "budget search the subnet, train it progressively, merge, export to ONNX and verify it "
                    "on the target against the original (numerics, latency, speed-up measured side by "
                    "side); train the original on for the same epochs with the same recipe, nothing pruned, "
                    "as the equal-budget reference of every Δ top-1; finally write table.md, table.csv "
                    "and pareto.png. Each stage's artifact is "
                    "written atomically and a finished stage is skipped: rerun the same command to resume "
                    "an interrupted run. The defaults are the embedded demo: "
                    f"{d.model} on {d.data} at {d.input_size[0]}x{d.input_size[1]} on {d.target}.")
    p.add_argument("--model", default=d.model, help=f"timm model name (default: {d.model})")
    p.add_argument("--target", default=d.target,
                   help="target name or YAML path; several, comma-separated (cpu-ort,cpu-openvino): one "
                        "subnet per budget that fits it on every target (joint search), verified and "
                        f"measured on each (default: {d.target})")
    p.add_argument("--data", default=d.data, metavar="NAME",
                   help=f"digits | mnist5k | imagefolder:PATH (default: {d.data})")
    add_strict_images_argument(p)
    p.add_argument("--input-size", type=size_argument, default=d.input_size, metavar="SIZE",
                   help=f"input resolution for training and latency (default: {d.input_size[0]})")
    p.add_argument("--budgets", default=",".join(d.budgets), metavar="LIST",
                   help="latency budgets, comma-separated: fractions of the original's predicted latency "
                        "(0.8), percentages (80%%) or milliseconds (12ms, one target only); with several "
                        f"targets each budget holds on every one (default: {','.join(d.budgets)})")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="a trained original for this data (local state dict): skips baseline training")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (default: runs/MODEL-DATA-TARGET)")
    p.add_argument("--fresh", action="store_true",
                   help="delete what the earlier run in --out wrote (its run.json manifest) and start over")
    p.add_argument("--table", default=None, metavar="TABLE",
                   help="a latency table measured elsewhere (for this model, input size, batch and target) "
                        "to use instead of profiling; the verify stages still measure on the target: here, "
                        "or on --device")
    train = p.add_argument_group("training")
    train.add_argument("--baseline-epochs", type=int, default=d.baseline_epochs, metavar="E",
                       help=f"(default: {d.baseline_epochs})")
    train.add_argument("--supernet-epochs", type=int, default=d.supernet_epochs, metavar="E",
                       help=f"(default: {d.supernet_epochs})")
    train.add_argument("--subnet-epochs", type=int, default=d.subnet_epochs, metavar="E",
                       help="training of each chosen subnet, and of the original continued as their "
                            f"equal-budget reference (default: {d.subnet_epochs})")
    train.add_argument("--method", choices=METHODS, default=d.method,
                       help=f"how the chosen blocks are removed (default: {d.method})")
    train.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B",
                       help=f"(default: {d.batch_size})")
    train.add_argument("--train-limit", type=int, default=None, metavar="N", help="use N training samples")
    train.add_argument("--val-limit", type=int, default=None, metavar="N", help="use N validation samples")
    train.add_argument("--proxy-val-limit", type=int, default=d.proxy_val_limit, metavar="N",
                       help=f"validation samples the search's supernet proxy scores each subnet on "
                            f"(default: {d.proxy_val_limit})")
    train.add_argument("--seed", type=int, default=d.seed, help=f"(default: {d.seed})")
    train.add_argument("--train-device", choices=DEVICES, default=d.device,
                       help=f"training device (default: {d.device}; `--device auto|cpu|cuda`, its older "
                            "name, still means this)")
    train.add_argument("--train-threads", type=int, default=None, metavar="N",
                       help="CPU threads for training (default: torch's)")
    latency = p.add_argument_group("latency")
    latency.add_argument("--batch", type=int, default=None, metavar="B",
                         help="batch for the latency table and verification (default: the target's)")
    latency.add_argument("--rounds", type=int, default=d.rounds, metavar="R",
                         help=f"interleaved measurements per model when verifying (default: {d.rounds})")
    add_end_to_end_arguments(p)
    add_protocol_arguments(p)
    _add_device_arguments(p, what="run the profile and verify stages (training stays here)")
    p.set_defaults(func=_run_run)


def _run_run(args) -> int:
    from deploykit.latency.options import EndToEndOptions
    from deploykit.pipeline import Pipeline, PipelineConfig, check_device
    from deploykit.protocol import Protocol

    if args.device in TRAINING_DEVICES:  # `run --device cpu` named the training device before --train-device
        args.train_device, args.device = args.device, None
    config = PipelineConfig(
        model=args.model, target=args.target, data=args.data, strict_images=args.strict_images,
        input_size=args.input_size,
        budgets=tuple(b for b in args.budgets.split(",")), weights=args.weights,
        baseline_epochs=args.baseline_epochs, supernet_epochs=args.supernet_epochs,
        subnet_epochs=args.subnet_epochs, method=args.method, batch_size=args.batch_size,
        train_limit=args.train_limit, val_limit=args.val_limit, proxy_val_limit=args.proxy_val_limit,
        seed=args.seed, device=args.train_device, train_threads=args.train_threads, latency_batch=args.batch,
        rounds=args.rounds, protocol=Protocol.from_args(args), end_to_end=EndToEndOptions.from_args(args),
        table=args.table)
    check_device(config, args.device)  # before connecting to it
    pipeline = Pipeline(config, args.out, fresh=args.fresh, host=_measuring_host(args), progress=to_stderr)
    result = pipeline.run()
    print(result.summary())
    return 0


# --- deploykit serve / device ----------------------------------------------------------------------

def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", help="run the device agent: measure ONNX files sent from other machines on this one",
        description="Run on the machine a target stands for (an ARM board, a GPU server): an HTTP agent that"
                    " measures ONNX files sent by --device URL on profile, lut check, lut anchor, verify and"
                    " run (and by `deploykit device`) exactly as a local measurement would: the local "
                    "backend, the sent protocol, a fresh worker process; verify's numerics run there too "
                    "(seeded inputs, outputs sent back as arrays). Every request needs the token in "
                    "--token-file (refuses to start without one). Uploads are ONNX only, streamed to a "
                    "private temporary directory, size-limited and checked with the ONNX checker before "
                    "anything runs; one measurement at a time (others queue), each killed at --timeout. "
                    "Listens on 127.0.0.1 unless --host says otherwise; beyond localhost, give "
                    "--tls-cert/--tls-key. Needs the `remote` extra (starlette, uvicorn). Stops on Ctrl-C. "
                    "Example: deploykit serve --token-file ~/.deploykit-token --host 0.0.0.0 --tls-cert "
                    "cert.pem --tls-key key.pem")
    p.add_argument("--token-file", required=True, metavar="FILE",
                   help="file holding the token clients must send (one word, ≥ 16 characters; chmod 600)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any free port)")
    p.add_argument("--targets", default=None, metavar="T,...",
                   help="targets to serve, names or YAML paths (default: every target available here)")
    p.add_argument("--tls-cert", default=None, metavar="FILE", help="TLS certificate (PEM), with --tls-key")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="TLS private key (PEM), with --tls-cert")
    p.add_argument("--max-upload-mb", type=float, default=1024.0, metavar="MB",
                   help="largest ONNX upload in MB; bigger ones are refused while streaming (default: 1024)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="longest measurement in seconds; its worker is killed then (default: 600)")
    p.add_argument("--max-queue", type=int, default=16, metavar="N",
                   help="most measure requests admitted at once; more are told to retry (default: 16)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="a connection whose request headers are not all in after S seconds is closed "
                        "(default: 10)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="an upload from which nothing arrives for S seconds is refused, 408 (default: 30)")
    p.add_argument("--max-threads", type=int, default=None, metavar="N",
                   help="most intra-op threads a request's protocol may ask for (default: the CPUs here)")
    p.add_argument("--max-input-elements", type=int, default=2**26, metavar="N",
                   help="most elements in a request's input shape; more is a 422 (default: 67108864)")
    p.add_argument("--max-reply-mb", type=float, default=64.0, metavar="MB",
                   help="largest reply (a run's outputs) in MB; a larger one is a 422 (default: 64)")
    p.set_defaults(func=_run_serve)


def _run_serve(args) -> int:
    from pathlib import Path

    from deploykit.remote.server import ServeConfig, serve

    names = tuple(n.strip() for n in args.targets.split(",") if n.strip()) if args.targets else ()
    serve(ServeConfig(token_file=Path(args.token_file), host=args.host, port=args.port, targets=names,
                      tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                      tls_key=Path(args.tls_key) if args.tls_key else None,
                      max_upload_mb=args.max_upload_mb, timeout_s=args.timeout, max_queue=args.max_queue,
                      header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                      max_threads=args.max_threads, max_input_elements=args.max_input_elements,
                      max_reply_mb=args.max_reply_mb))
    return 0


def _add_device(sub) -> None:
    from deploykit.protocol import add_protocol_arguments

    p = sub.add_parser(
        "device", help="ask a device agent (`deploykit serve`) what it serves, or measure a file on it",
        description="Talk to a device agent started with `deploykit serve`: show its version, queue, "
                    "targets (served, or why not) and machine fingerprint; with --measure, time an ONNX "
                    "file on one of its targets, as `deploykit verify` would time it locally. The token "
                    "comes from --token-file or $DEPLOYKIT_DEVICE_TOKEN. Connection failures are retried "
                    "with backoff; an agent that stops answering is one error line (exit 2). Example: "
                    "deploykit device https://board:8765 --ca-file cert.pem --measure model.onnx "
                    "--target arm-cortex-a76")
    p.add_argument("url", metavar="URL", help="the agent, e.g. http://127.0.0.1:8765 or https://board:8765")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding the agent's token (default: $DEPLOYKIT_DEVICE_TOKEN)")
    p.add_argument("--ca-file", default=None, metavar="FILE",
                   help="CA or self-signed certificate to verify an https agent with (default: system CAs)")
    p.add_argument("--retries", type=int, default=6, metavar="N",
                   help="tries in all for a connection that fails or an agent that is busy (default: 6)")
    p.add_argument("--measure", default=None, metavar="MODEL.onnx", help="an ONNX file to time on the device")
    p.add_argument("--target", default=None, help="the target to time it on (with --measure)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="batch for a dynamic-batch file (default: the file's, else the target's)")
    p.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                   help="input size for a file with dynamic height/width (default: the target's)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="longest measurement in seconds (the agent's --timeout caps it)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    add_protocol_arguments(p)
    p.set_defaults(func=_run_device)


def _run_device(args) -> int:
    from deploykit.errors import ConfigError
    from deploykit.protocol import Protocol
    from deploykit.remote.client import DeviceClient, RetryPolicy, describe_device, describe_measurement

    client = DeviceClient.connect(args.url, token_file=args.token_file, ca_file=args.ca_file,
                                  retry=RetryPolicy(attempts=args.retries))
    if args.measure is None:
        if args.target is not None:
            raise ConfigError("--target goes with --measure MODEL.onnx")
        info = {"health": client.health(), "targets": client.targets(), "fingerprint": client.fingerprint()}
        print(json.dumps(info, indent=2) if args.format == "json" else describe_device(client.url, **info))
        return 0
    if args.target is None:
        raise ConfigError("--measure needs --target (see `deploykit device URL` for what it serves)")
    from deploykit.targets import load_target
    from deploykit.verify import onnx_input_shape

    target = load_target(args.target)
    shape = onnx_input_shape(args.measure, batch=args.batch, input_size=args.input_size,
                             default_batch=target.batch, default_size=target.input_size)
    result = client.measure_remote(args.measure, target=target, protocol=Protocol.from_args(args),
                                   input_shape=shape, timeout_s=args.timeout)
    print(json.dumps(result.as_dict(), indent=2) if args.format == "json" else describe_measurement(result))
    return 0


# --- entry point -----------------------------------------------------------------------------------

COMMANDS = (_add_run, _add_blocks, _add_targets, _add_profile, _add_train, _add_lut, _add_search,
            _add_export, _add_convert, _add_verify, _add_table, _add_serve, _add_device)


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


if __name__ == "__main__":
    sys.exit(main())
