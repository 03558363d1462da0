"""Command-line options of ``deploykit train`` and their translation into the frozen configs.

Kept beside the configs they fill so that ``cli.py`` stays a thin layer: it declares the three
sub-commands and calls :func:`add_common_arguments` / :func:`add_distill_arguments`, then the
``*_config(args)`` functions here. Every default is read from the configs
(:mod:`deploykit.training.config`), so the CLI, the Python API and ``deploykit run`` agree. Part of
the command layer: only the CLI imports this module (``deploykit._layers``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from deploykit.shapes import size_argument
from deploykit.training.config import DEVICES, DistillConfig, OptimConfig, RunConfig, stage_optim

if TYPE_CHECKING:
    from deploykit.data import DataConfig


def add_common_arguments(p: argparse.ArgumentParser, command: str) -> None:
    optim = stage_optim(command)
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="NAME",
                      help="digits | mnist5k | imagefolder:PATH (PATH/train/<class>/*, PATH/val/<class>/*)")
    data.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                      help="input resolution, 32 or HxW (default: the subnet's, else 32 for digits/mnist5k "
                           "and 224 for image folders)")
    data.add_argument("--train-limit", type=int, default=None, metavar="N",
                      help="use only the first N training samples of the fixed split")
    data.add_argument("--val-limit", type=int, default=None, metavar="N",
                      help="use only the first N validation samples of the fixed split")
    data.add_argument("--workers", type=int, default=RunConfig.workers,
                      help=f"data loader worker processes (default: {RunConfig.workers})")
    add_strict_images_argument(data)
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=RunConfig.epochs,
                       help=f"epochs (default: {RunConfig.epochs})")
    train.add_argument("--batch-size", type=int, default=RunConfig.batch_size, metavar="B",
                       help="global batch size, split over torchrun processes "
                            f"(default: {RunConfig.batch_size})")
    train.add_argument("--lr", type=float, default=optim.lr,
                       help=f"peak AdamW learning rate (default: {optim.lr:g})")
    train.add_argument("--weight-decay", type=float, default=optim.weight_decay,
                       help=f"AdamW weight decay (default: {optim.weight_decay:g})")
    train.add_argument("--warmup-epochs", type=float, default=optim.warmup_epochs,
                       help=f"linear warm-up before the cosine decay (default: {optim.warmup_epochs:g})")
    train.add_argument("--seed", type=int, default=RunConfig.seed,
                       help=f"seed of initialization, data order, sampling (default: {RunConfig.seed})")
    run = p.add_argument_group("run")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help=f"output folder (default: runs/train/{command}-MODEL)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    run.add_argument("--device", choices=DEVICES, default=RunConfig.device,
                     help=f"auto = the local CUDA device if there is one (default: {RunConfig.device})")
    run.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA (CPU runs fp32)")
    run.add_argument("--threads", type=int, default=RunConfig.threads,
                     help="CPU threads per process (default: torch's)")
    run.add_argument("--eval-batch-size", type=int, default=RunConfig.eval_batch_size, metavar="B",
                     help=f"(default: {RunConfig.eval_batch_size})")
    run.add_argument("--log-steps", action="store_true", help="also write steps.csv, one row per step")


def add_strict_images_argument(group) -> None:
    group.add_argument("--strict-images", action="store_true",
                       help="fail on an image file that cannot be decoded (default: skip it, counted "
                            "and named in the data summary)")


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("distillation from the original")
    group.add_argument("--temperature", type=float, default=DistillConfig.temperature,
                       help=f"KL temperature T (default: {DistillConfig.temperature:g})")
    group.add_argument("--distill-weight", type=float, default=DistillConfig.weight,
                       help=f"loss = CE + weight · T² · KL (default: {DistillConfig.weight:g}; 0 turns "
                            "distillation off)")


def data_config(args: argparse.Namespace, input_size: tuple[int, int] | None = None) -> DataConfig:
    from deploykit.data import DataConfig, default_input_size

    size = input_size or args.input_size or default_input_size(args.data)
    return DataConfig(name=args.data, input_size=tuple(size), train_limit=args.train_limit,
                      val_limit=args.val_limit, strict_images=args.strict_images)


def run_config(args: argparse.Namespace, command: str, model: str) -> RunConfig:
    out = args.out if args.out is not None else Path("runs") / "train" / f"{command}-{model}"
    return RunConfig(out=out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     device=args.device, amp=not args.no_amp, workers=args.workers, threads=args.threads,
                     eval_batch_size=args.eval_batch_size, log_steps=args.log_steps, resume=args.resume)


def optim_config(args: argparse.Namespace) -> OptimConfig:
    return OptimConfig(lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs)


def distill_config(args: argparse.Namespace) -> DistillConfig:
    return DistillConfig(temperature=args.temperature, weight=args.distill_weight)
