"""Channel pruning with Torch-Pruning, matched to a measured latency, then fine-tuned like a subnet.

The width-pruning baseline of ``bench/accuracy_latency.py``. Two commands, each run in a fresh process:

``match``: global L2-magnitude channel pruning of a trained baseline with ``tp.pruner.BasePruner`` (the
class that the older ``MetaPruner`` name aliases in torch-pruning 1.6) and
``tp.importance.GroupMagnitudeImportance(p=2)``, ``global_pruning=True``, the classifier layer in
``ignored_layers``, at most ``--max-layer-ratio`` of any layer's channels removed, and every pruned
layer's channel count rounded to a multiple of ``--round-to`` (default 8). The rounding matters on the
CPU: unrounded, global pruning leaves counts such as 33, 63, 138, 246, and onnxruntime runs such a model
*slower* than the unpruned one (convnext_atto, 32×32, ratio 0.45: 1.25 ms against 0.46 ms unpruned;
rounded to 8: 0.23 ms), since its blocked (NCHWc) kernels want multiples of the vector width; a
practitioner rounds. The global ratio is
found by bisection so that the exported model's latency **measured** on the target, interleaved with
``--reference`` (model, reference, model, …, each measurement in a fresh process:
``deploykit.verify.measure_interleaved``), is ``--match`` × the reference's within ``--tolerance``.
The latency ratio of a round is taken within the round and the median over rounds is used, so a
burst of load on a shared machine cancels out. Latency falls as the ratio grows, so bisection on
``[0, --max-ratio]`` applies; noise can make it locally non-monotone, which is why every evaluated point
is kept and the closest one wins. Writes ``pruned.safetensors`` (the pruned tensors and, in the header,
the recipe that rebuilds their structure: the same deterministic pruning of the same baseline, so that
nothing is unpickled), ``pruned.onnx``, ``match.json`` (every step) and ``result.json``.

ConvNeXt's layer scale ``gamma`` (one value per channel, held directly by the block, not by a layer
Torch-Pruning knows) is passed as an *unwrapped parameter* pruned along dim 0 together with the
channels it scales; its ``LayerNorm2d`` subclasses ``nn.LayerNorm``, which Torch-Pruning prunes itself.

``finetune``: trains the pruned module exactly as ``deploykit train subnet`` trains a subnet, through the
same loop (``deploykit.training.loop.fit``): AdamW with lr 5e-4 and weight decay 0.05 (none on biases
and norm parameters), no warm-up, cosine decay per step, batch 64, loss CE + T²·KL distillation from the
unpruned baseline (T = 2, weight 1), same epochs and seed (data order). Writes ``merged.pt`` (the whole
module: a channel-pruned model is no timm architecture that a deploykit model file can rebuild, so
``deploykit export`` and ``verify --torch`` load it only with ``--unsafe-pickle``; the benchmark passes
that flag for this file, which it wrote itself), ``log.csv`` and ``result.json`` (``top1_merged``,
``params``, ``macs``).

    .venv/bin/python bench/tp_prune.py match --weights BASE/model.pt --reference REF.onnx \\
        --target cpu-ort --data mnist5k --out DIR [--match 1.0] [--tolerance 0.05] [--threads 1]
    .venv/bin/python bench/tp_prune.py finetune --pruned DIR/pruned.safetensors --weights BASE/model.pt \\
        --data mnist5k --epochs 2 --seed 0 --threads 1 --out DIR2
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Layers whose parameters Torch-Pruning prunes itself; a per-channel parameter elsewhere is "unwrapped".
_WRAPPED = ("_ConvNd", "Linear", "_BatchNorm", "LayerNorm", "GroupNorm")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the bisection (pure; tested with a fake latency function) --------------------------------------

@dataclass(frozen=True)
class Point:
    """One evaluated ratio and its measured latency relative to the target (1.0 = on target)."""

    ratio: float
    relative: float


@dataclass(frozen=True)
class Match:
    """What :func:`bisect_ratio` found: the chosen point, whether it is within tolerance, every point."""

    ratio: float
    relative: float
    within: bool
    reachable: bool
    points: tuple[Point, ...]


def bisect_ratio(relative_at: Callable[[float], float], *, low: float = 0.0, high: float = 0.9,
                 tolerance: float = 0.05, max_steps: int = 8) -> Match:
    """The pruning ratio in ``[low, high]`` whose latency relative to the target is within ``tolerance``
    of 1, for ``relative_at`` falling as the ratio grows (more channels pruned, less latency).

    ``high`` is evaluated first: if even it is slower than the target by more than the tolerance, the
    target is out of reach and ``high`` is returned (``reachable=False``). Otherwise bisection, at most
    ``max_steps`` evaluations in all, stopping at the first point within tolerance. The point returned
    is the evaluated one closest to the target in ``|log relative|`` (the smaller ratio on a tie)."""
    if not 0.0 <= low < high < 1.0:
        raise ValueError(f"need 0 ≤ low < high < 1, got low {low}, high {high}")
    if not tolerance > 0 or max_steps < 1:
        raise ValueError(f"need tolerance > 0 and max_steps ≥ 1, got {tolerance}, {max_steps}")
    points: list[Point] = []

    def evaluate(ratio: float) -> float:
        value = float(relative_at(ratio))
        points.append(Point(ratio, value))
        return value

    top = evaluate(high)
    reachable = top <= 1.0 + tolerance
    if reachable and abs(top - 1.0) > tolerance:
        lo, hi = low, high
        while len(points) < max_steps:
            mid = (lo + hi) / 2.0
            value = evaluate(mid)
            if abs(value - 1.0) <= tolerance:
                break
            lo, hi = (mid, hi) if value > 1.0 else (lo, mid)
    best = min(points, key=lambda p: (abs(math.log(max(p.relative, 1e-12))), p.ratio))
    return Match(ratio=best.ratio, relative=best.relative, within=abs(best.relative - 1.0) <= tolerance,
                 reachable=reachable, points=tuple(points))


# --- pruning ---------------------------------------------------------------------------------------

def unwrapped_parameters(model) -> list[tuple]:
    """``(parameter, 0)`` for every parameter held directly by a module that Torch-Pruning does not
    prune itself (ConvNeXt's layer scale ``gamma``, one value per channel). A parameter there that is
    not one value per channel is refused: its pruning dimension would be a guess."""
    from deploykit.errors import ModelError

    found = []
    for name, module in model.named_modules():
        if any(cls.__name__ in _WRAPPED for cls in type(module).__mro__):
            continue
        for pname, param in module.named_parameters(recurse=False):
            if param.ndim != 1:
                raise ModelError(f"{name}.{pname} {tuple(param.shape)} is held outside the layers "
                                 "Torch-Pruning prunes and is not one value per channel")
            found.append((param, 0))
    return found


def channel_prune(model, *, ratio: float, input_size: tuple[int, int], max_layer_ratio: float = 0.9,
                  round_to: int | None = None):
    """A copy of ``model`` with ``ratio`` of its channels removed: global L2-magnitude ranking over all
    coupled channel groups (Torch-Pruning's dependency graph), the classifier layer kept whole, each
    pruned layer's channel count a multiple of ``round_to`` (None: not rounded)."""
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    if ratio <= 0:
        return model
    example = torch.zeros(1, 3, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter of torch-pruning on newer torch
        pruner = tp.pruner.BasePruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), global_pruning=True,
            pruning_ratio=ratio, max_pruning_ratio=max_layer_ratio,
            ignored_layers=[model.get_classifier()], unwrapped_parameters=unwrapped_parameters(model),
            round_to=round_to)
        pruner.step()
    with torch.no_grad():
        model(example)  # fails loudly here if the pruned graph is inconsistent
    return model


def save_pruned(model, path: Path, recipe: dict) -> Path:
    """The pruned model's tensors, and in the safetensors header the ``channel_prune`` arguments that
    rebuild its structure from the baseline (written atomically; no pickle)."""
    from safetensors.torch import save_file

    from deploykit.fileio import atomic_path

    tensors = {key: value.detach().cpu().clone().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"tp_recipe": json.dumps(recipe)})
    return path


def load_pruned(path: Path, base):
    """The model :func:`save_pruned` wrote: ``base`` pruned again by the recorded recipe (magnitude
    ranking of the same weights: the same channels), then the saved tensors loaded strictly."""
    from deploykit.checkpoints import read_safetensors
    from deploykit.errors import ModelError

    tensors, metadata = read_safetensors(path, what="pruned model")
    if "tp_recipe" not in metadata:
        raise ModelError(f"{path} has no tp_recipe: not written by tp_prune.py match")
    recipe = json.loads(metadata["tp_recipe"])
    model = channel_prune(base, ratio=recipe["ratio"], input_size=tuple(recipe["input_size"]),
                          max_layer_ratio=recipe["max_layer_ratio"], round_to=recipe["round_to"])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ModelError(f"{path} does not fit the baseline pruned by its recipe {recipe}: "
                         f"{str(error).strip().splitlines()[-1][:200]}") from None
    return model


def load_baseline(path: str | Path):
    """The trained baseline of ``deploykit train baseline`` (model.pt) as a module, with its meta."""
    from deploykit.checkpoints import read_torch_file
    from deploykit.models import create_model

    state = read_torch_file(path, what="baseline weights")
    meta = state["meta"]
    model = create_model(meta["model"], num_classes=meta["num_classes"], input_size=tuple(meta["input_size"]))
    model.load_state_dict(state["state_dict"])
    return model.eval(), meta


def count(model, input_size) -> tuple[int, int]:
    from deploykit.macs import count_macs, count_params

    return count_params(model), count_macs(model, (3, *input_size))


# --- match -------------------------------------------------------------------------------------------

def run_match(args) -> int:
    import torch

    from deploykit.cli.args import protocol_from_args
    from deploykit.data import DataConfig, eval_loader, load_datasets
    from deploykit.export import export_onnx
    from deploykit.fileio import write_json_atomic
    from deploykit.targets import load_target
    from deploykit.training.evaluation import evaluate
    from deploykit.verify import measure_interleaved

    started = time.perf_counter()
    torch.set_num_threads(args.threads or 1)
    out = args.out
    (out / "steps").mkdir(parents=True, exist_ok=True)
    base, meta = load_baseline(args.weights)
    size = tuple(meta["input_size"])
    target, protocol = load_target(args.target), protocol_from_args(args)
    shape = (1, 3, *size)
    pruned: dict[float, object] = {}
    steps: list[dict] = []

    def relative_at(ratio: float) -> float:
        model = pruned[ratio] = channel_prune(base, ratio=ratio, input_size=size,
                                              max_layer_ratio=args.max_layer_ratio,
                                              round_to=args.round_to or None)
        path = export_onnx(model, shape, out / "steps" / f"ratio_{ratio:.4f}.onnx")
        timing = measure_interleaved(path, args.reference, target=target, protocol=protocol,
                                     input_shape=shape, rounds=args.rounds)
        model_ms, ref_ms = timing["model"]["round_medians_ms"], timing["reference"]["round_medians_ms"]
        measured = statistics.median(m / r for m, r in zip(model_ms, ref_ms))
        params, macs = count(model, size)
        steps.append({"ratio": ratio, "measured_relative": measured,
                      "relative_to_target": measured / args.match,
                      "model_ms": statistics.median(model_ms), "reference_ms": statistics.median(ref_ms),
                      "params": params, "macs": macs})
        say(f"[match {len(steps)}] ratio {ratio:.4f}: {statistics.median(model_ms):.3f} ms vs reference "
            f"{statistics.median(ref_ms):.3f} ms → {measured:.3f}× (target {args.match:g}×), "
            f"{params / 1e6:.2f} M params, {macs / 1e6:.1f} M MACs")
        write_json_atomic(out / "match.json", {"steps": steps})
        return measured / args.match

    found = bisect_ratio(relative_at, high=args.max_ratio, tolerance=args.tolerance, max_steps=args.max_steps)
    model = pruned[found.ratio]
    step = next(s for s in steps if s["ratio"] == found.ratio)
    export_onnx(model, shape, out / "pruned.onnx")
    save_pruned(model, out / "pruned.safetensors",
                {"ratio": found.ratio, "input_size": list(size), "max_layer_ratio": args.max_layer_ratio,
                 "round_to": args.round_to or None})
    top1 = loss = None
    if args.data:
        data = load_datasets(DataConfig(args.data, input_size=size))
        top1, loss = evaluate(model, eval_loader(data.val, batch_size=256))
    result = {"kind": "tp-match", "model": meta["model"], "weights": str(args.weights),
              "reference": str(args.reference), "target": target.name, "ratio": found.ratio,
              "match": args.match, "relative": step["measured_relative"], "within_tolerance": found.within,
              "reachable": found.reachable, "tolerance": args.tolerance, "model_ms": step["model_ms"],
              "reference_ms": step["reference_ms"], "params": step["params"], "macs": step["macs"],
              "top1_before_finetune": top1, "loss_before_finetune": loss, "steps": steps,
              "protocol": protocol.as_dict(), "rounds": args.rounds, "max_layer_ratio": args.max_layer_ratio,
              "round_to": args.round_to,
              "wall_s": round(time.perf_counter() - started, 3)}
    write_json_atomic(out / "result.json", result)
    verdict = "within" if found.within else ("NOT within" if found.reachable else "OUT OF REACH, not within")
    say(f"torch-pruning ratio {found.ratio:.4f}: {step['measured_relative']:.3f}× the reference's latency "
        f"({verdict} ±{args.tolerance:.0%} of {args.match:g}×) after {len(steps)} measurement(s); top-1 "
        f"before fine-tuning {top1 if top1 is None else f'{top1:.2f}%'}")
    print(f"wrote {out / 'pruned.safetensors'}, {out / 'pruned.onnx'}, {out / 'result.json'}")
    return 0


# --- finetune ------------------------------------------------------------------------------------

def run_finetune(args) -> int:
    import torch

    from deploykit.data import DataConfig, load_datasets
    from deploykit.training.build import validate_plain, write_json
    from deploykit.training.checkpoint import save_atomic
    from deploykit.training.config import DistillConfig, OptimConfig, RunConfig
    from deploykit.training.distributed import distributed
    from deploykit.training.evaluation import evaluate
    from deploykit.training.loop import Policy, Task, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    teacher, meta = load_baseline(args.weights)
    size = tuple(meta["input_size"])
    student = load_pruned(args.pruned, teacher)
    run = RunConfig(out=args.out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                    device=args.device, threads=args.threads)
    optim = OptimConfig(lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=0.0)
    distill = DistillConfig(temperature=args.temperature, weight=args.distill_weight)
    data = DataConfig(args.data, input_size=size, train_limit=args.train_limit)
    with distributed(args.device) as ctx:
        datasets = load_datasets(data)
        ctx.log(f"data: {datasets.describe}")
        task_meta = {"model": meta["model"], "pruned_from": str(args.pruned), "weights": str(args.weights),
                     "input_size": list(size), "num_classes": datasets.num_classes, "method": "torch-pruning"}
        task = Task(kind="tp-finetune", student=student, datasets=datasets, meta=task_meta,
                    make_policy=lambda steps_per_epoch: Policy(), validate=validate_plain, teacher=teacher,
                    distill=distill)
        fitted = fit(task, run=run, optim=optim, ctx=ctx)
        student = fitted.student.eval()
        top1, loss = evaluate(student, fitted.val_loader, ctx=ctx, dtype=fitted.dtype)
        student = student.cpu()
        params, macs = count(student, size)
        save_atomic(student, args.out / "merged.pt")
        write_json({"kind": "tp-finetune", **task_meta, "top1_merged": top1, "loss_merged": loss,
                    "params": params, "macs": macs, "epochs": args.epochs, "seed": args.seed,
                    "train_wall_s": round(fitted.wall_s, 3), "merged_path": args.out / "merged.pt"},
                   args.out / "result.json")
        ctx.log(f"torch-pruning fine-tuned: top-1 {top1:.2f}%, loss {loss:.4f}; "
                f"wrote {args.out / 'merged.pt'}, {args.out / 'result.json'}")
    return 0


# --- command line ------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    from deploykit.cli.args import add_protocol_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("match", help="prune to the reference's measured latency (bisect the ratio)")
    m.add_argument("--weights", type=Path, required=True, help="model.pt of deploykit train baseline")
    m.add_argument("--reference", type=Path, required=True, help="ONNX file whose latency is the target")
    m.add_argument("--target", default="cpu-ort")
    m.add_argument("--match", type=float, default=1.0, help="latency to reach, × the reference's (default 1)")
    m.add_argument("--tolerance", type=float, default=0.05, help="relative (default 0.05 = ±5%%)")
    m.add_argument("--max-steps", type=int, default=8, help="most measured ratios (default 8)")
    m.add_argument("--max-ratio", type=float, default=0.9, help="largest global ratio tried (default 0.9)")
    m.add_argument("--max-layer-ratio", type=float, default=0.9,
                   help="largest share of one layer's channels removed (default 0.9)")
    m.add_argument("--round-to", type=int, default=8,
                   help="round each pruned layer's channels to a multiple of this (default 8; 0 = off)")
    m.add_argument("--rounds", type=int, default=3, help="interleaved rounds per ratio (default 3)")
    m.add_argument("--data", help="also report top-1 right after pruning on this data's val split")
    m.add_argument("--out", type=Path, required=True)
    add_protocol_arguments(m)  # its --threads: onnxruntime intra-op threads (also torch's here)
    f = commands.add_parser("finetune", help="fine-tune the pruned model like deploykit train subnet")
    f.add_argument("--pruned", type=Path, required=True, help="pruned.safetensors of the match command")
    f.add_argument("--weights", type=Path, required=True, help="baseline model.pt: the distillation teacher")
    f.add_argument("--data", required=True)
    f.add_argument("--train-limit", type=int, default=None)
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--batch-size", type=int, default=64)
    f.add_argument("--lr", type=float, default=5e-4)
    f.add_argument("--weight-decay", type=float, default=0.05)
    f.add_argument("--temperature", type=float, default=2.0)
    f.add_argument("--distill-weight", type=float, default=1.0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    f.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_match(args) if args.command == "match" else run_finetune(args)


if __name__ == "__main__":
    sys.exit(main())
