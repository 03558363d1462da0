"""``deploykit verify``: an exported model on its target: numerics, latency, prediction, speed-up."""

from __future__ import annotations

import json
import sys

from deploykit.cli.args import (
    UNSAFE_PICKLE_HELP,
    WEIGHTS_FORMATS,
    add_device_arguments,
    add_paired_argument,
    add_protocol_arguments,
    default_of,
    measuring_host,
    note_printer,
    protocol_from_args,
    size_argument,
)
from deploykit.progress import to_stderr


def add_verify(sub) -> None:
    from deploykit.verify.check import verify

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
    inputs, seed, rounds = (default_of(verify, name) for name in ("n_inputs", "seed", "rounds"))
    p.add_argument("--inputs", type=int, default=inputs, metavar="N",
                   help=f"seeded random inputs for the numerics check (default: {inputs})")
    p.add_argument("--seed", type=int, default=seed, help=f"seed of those inputs (default: {seed})")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="batch for a dynamic-batch file (default: the file's, else the target's)")
    p.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                   help="input size for a file with dynamic height/width (default: the file's)")
    p.add_argument("--rounds", type=int, default=rounds, metavar="R",
                   help="latency measurements per file, alternating model and reference; the speed-up is "
                        f"the median over rounds of the within-round ratio (default: {rounds})")
    add_paired_argument(p, timed="the model", reference="the --reference model", over="the rounds")
    p.add_argument("--numerics-only", action="store_true", help="check the numerics only; measure no latency")
    p.add_argument("--out", default=None, metavar="PATH", help="write the report as JSON here")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    add_protocol_arguments(p)
    add_device_arguments(p, what="run the numerics and time the files (PyTorch stays here)")
    p.set_defaults(func=run_verify)


def run_verify(args) -> int:
    from deploykit.targets import load_target
    from deploykit.verify.check import check_torch_options, verify_files

    check_torch_options(torch_model=args.torch, weights=args.weights, numerics_only=args.numerics_only)
    report = verify_files(
        args.onnx, target=load_target(args.target), host=measuring_host(args), table_file=args.table,
        subnet_file=args.subnet, pruned=args.pruned, torch_model=args.torch, weights=args.weights,
        unsafe_pickle=args.unsafe_pickle, numerics_only=args.numerics_only, batch=args.batch,
        input_size=args.input_size, note=note_printer("verify"), protocol=protocol_from_args(args),
        reference=args.reference, allow_mismatch=args.allow_mismatch, n_inputs=args.inputs, seed=args.seed,
        rounds=args.rounds, paired=args.paired, progress=to_stderr)
    print(json.dumps(report.as_dict(), indent=2) if args.format == "json" else report.summary())
    if args.out is not None:
        print(f"wrote {report.write(args.out)}", file=sys.stderr)
    return 1 if report.passed is False else 0
