"""``deploykit train``: the training stages (baseline, supernet, progressive subnet), and their options.

Every default is read from the configs (:mod:`deploykit.training.config`, :class:`deploykit.data.DataConfig`),
so the CLI, the Python API and ``deploykit run`` agree (tests/test_training_defaults.py); the
``*_config(args)`` functions translate the options into those configs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from deploykit.cli.args import WEIGHTS_FORMATS, add_strict_images_argument, size_argument
from deploykit.training.config import (
    DEVICES,
    METHODS,
    DistillConfig,
    OptimConfig,
    RunConfig,
    SubnetConfig,
    SupernetConfig,
    stage_optim,
)

if TYPE_CHECKING:
    from deploykit.data import DataConfig


def add_train(sub) -> None:
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
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from deploykit.checkpoints import folder_config, model_name
    from deploykit.subnet import choose_subnet, parse_block_list
    from deploykit.training import train_baseline, train_subnet, train_supernet
    from deploykit.training.distributed import is_main_process

    from_weights_folder = args.stage != "subnet" or (args.prune is not None and folder_config(args.weights))
    if args.model is None and from_weights_folder:
        args.model = model_name(None, args.weights)  # named by the weights folder's config.json
    if args.stage == "baseline":
        result = train_baseline(args.model, data=data_config(args), weights=args.weights,
                                run=run_config(args, "baseline", args.model), optim=optim_config(args))
    elif args.stage == "supernet":
        candidates = parse_block_list(args.candidates) if args.candidates is not None else None
        config = SupernetConfig(max_pruned=args.max_pruned, candidates=candidates,
                                ramp_epochs=args.ramp_epochs)
        result = train_supernet(args.model, weights=args.weights, data=data_config(args),
                                run=run_config(args, "supernet", args.model), config=config,
                                optim=optim_config(args), distill=distill_config(args))
    else:
        size = data_config(args).input_size if args.subnet is None else args.input_size
        chosen = choose_subnet(path=args.subnet, prune=args.prune, model=args.model, input_size=size)
        config = SubnetConfig(method=args.method, progressive_epochs=args.progressive_epochs)
        result = train_subnet(chosen, weights=args.weights, data=data_config(args, chosen.input_size),
                              run=run_config(args, "subnet", chosen.model), optim=optim_config(args),
                              config=config, distill=distill_config(args))
    if is_main_process():
        print(result.summary())
    return 0


def add_common_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """The data, training and run options every stage takes; defaults from the stage's configs."""
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
