"""``deploykit run``: the whole pipeline in one run directory, resumable."""

from __future__ import annotations

from types import SimpleNamespace

from deploykit.cli.args import (
    add_device_arguments,
    add_end_to_end_arguments,
    add_protocol_arguments,
    add_strict_images_argument,
    end_to_end_from_args,
    measuring_host,
    measuring_hosts,
    protocol_from_args,
    size_argument,
    size_text,
)
from deploykit.progress import to_stderr


def add_run(sub) -> None:
    from deploykit.pipeline import demo_defaults
    from deploykit.training.config import DEVICES, METHODS

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
                   help=f"input resolution for training and latency (default: {size_text(d.input_size)})")
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
    add_device_arguments(p, what="run the profile and verify stages (training stays here)", per_target=True)
    p.set_defaults(func=run_run)


def run_run(args) -> int:
    from deploykit.pipeline import Pipeline, PipelineConfig, device_urls
    from deploykit.training.config import DEVICES

    if args.device in DEVICES:  # `run --device cpu` named the training device before --train-device
        args.train_device, args.device = args.device, None
    config = PipelineConfig(
        model=args.model, target=args.target, data=args.data, strict_images=args.strict_images,
        input_size=args.input_size,
        budgets=tuple(b for b in args.budgets.split(",")), weights=args.weights,
        baseline_epochs=args.baseline_epochs, supernet_epochs=args.supernet_epochs,
        subnet_epochs=args.subnet_epochs, method=args.method, batch_size=args.batch_size,
        train_limit=args.train_limit, val_limit=args.val_limit, proxy_val_limit=args.proxy_val_limit,
        seed=args.seed, device=args.train_device, train_threads=args.train_threads, latency_batch=args.batch,
        rounds=args.rounds, protocol=protocol_from_args(args), end_to_end=end_to_end_from_args(args),
        table=args.table)
    urls = device_urls(config, args.device)  # checked before connecting to any
    hosts = measuring_hosts(args, urls) or measuring_host(args)
    pipeline = Pipeline(config, args.out, fresh=args.fresh, host=hosts, progress=to_stderr)
    result = pipeline.run()
    print(result.summary())
    return 0
