"""One model at a time: ``deploykit blocks`` (its prunable blocks), ``deploykit export`` (one checked ONNX
file) and ``deploykit convert`` (a model file: tensors plus the architecture record, no code)."""

from __future__ import annotations

import json
import sys

from deploykit.cli.args import (
    DEFAULT_MODEL,
    UNSAFE_PICKLE_HELP,
    WEIGHTS_FORMATS,
    note_printer,
    size_argument,
    size_text,
)
from deploykit.shapes import DEFAULT_BATCH, DEFAULT_INPUT_SIZE


def add_blocks(sub) -> None:
    p = sub.add_parser(
        "blocks", help="list a model's blocks: family, shapes, MACs original vs merged, prunable or why not",
        description="List every block of a timm model that deploykit knows, in execution order, with "
                    "its input/output shape, MACs of the original and of the merged form, and whether it "
                    "can be pruned (and why not). Built without pretrained weights: no network needed.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"timm model name (default: {DEFAULT_MODEL})")
    p.add_argument("--input-size", type=size_argument, default=DEFAULT_INPUT_SIZE, metavar="SIZE",
                   help="input resolution, 224 or HxW such as 96x128 "
                        f"(default: {size_text(DEFAULT_INPUT_SIZE)})")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format (default: table)")
    p.set_defaults(func=run_blocks)


def run_blocks(args) -> int:
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


def add_export(sub) -> None:
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
                   help="input resolution, 224 or HxW (default: a model file's own, else "
                        f"{size_text(DEFAULT_INPUT_SIZE)})")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="B",
                   help=f"batch size (default: {DEFAULT_BATCH})")
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
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from deploykit.modelfile import export_model

    deployment = None
    if args.table:  # the run settings it was measured with go beside the ONNX file
        from deploykit.latency.table import read_deployment

        deployment = read_deployment(args.table)
    result = export_model(args.checkpoint, args.out, weights=args.weights, input_size=args.input_size,
                          batch=args.batch, opset=args.opset, dynamic_batch=args.dynamic_batch,
                          unsafe_pickle=args.unsafe_pickle, deployment=deployment,
                          note=note_printer("export"))
    for warning in result.warnings:
        print(f"deploykit export: warning: {warning}", file=sys.stderr)
    print("\n".join(result.lines()))
    return 0


# --- deploykit convert -----------------------------------------------------------------------------

def add_convert(sub) -> None:
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
                        f"else {size_text(DEFAULT_INPUT_SIZE)})")
    p.add_argument("--unsafe-pickle", action="store_true", help=UNSAFE_PICKLE_HELP)
    p.set_defaults(func=run_convert)


def run_convert(args) -> int:
    from deploykit.modelfile import convert_model

    path, record = convert_model(args.checkpoint, args.out, weights=args.weights, input_size=args.input_size,
                                 unsafe_pickle=args.unsafe_pickle)
    print(f"wrote {path} ({record.describe()})")
    return 0
