"""Progressive vs abrupt vs drop depth pruning under the same budget, on mnist5k, several seeds.

For each model and seed: ``deploykit train baseline`` (from scratch, since no pretrained weights can be
downloaded), then ``deploykit train subnet`` from that baseline with each method, pruning the same
blocks (a third of the prunable blocks, all shape-preserving so that ``drop`` applies), with the same
epochs, learning rate and distillation. A control, ``continued``, trains the unpruned baseline for the
same extra epochs (cross-entropy only): the baseline is short-trained, so extra epochs alone help.
Every command runs as a fresh process, timed end to end.

Writes ``bench/results/train_runs.csv`` (one row per command) and ``bench/results/train_summary.csv``
(mean ± std over seeds). Rerunning skips commands whose ``result.json`` exists (``--fresh`` to redo).

    .venv/bin/python bench/train_compare.py                # the recorded study (~25 min on 2 cores)
    .venv/bin/python bench/train_compare.py --seeds 0 --epochs 1 --baseline-epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("progressive", "abrupt", "drop")


@dataclass(frozen=True)
class Study:
    """One model of the study: which blocks are pruned (the same set for every method)."""

    model: str
    pruned: tuple[int, ...]
    note: str


STUDIES = {
    # 12 prunable ConvNeXt blocks, all shape-preserving: every third one, across all four stages.
    "convnext_atto": Study("convnext_atto", (1, 4, 7, 10), "4 of 12 blocks: stages.0.1, 2.0, 2.3, 3.0"),
    # 8 BasicBlocks, of which 0, 1, 3, 5, 7 keep their shape: the second block of stages 1-3.
    "resnet18": Study("resnet18", (1, 3, 5), "3 of 8 blocks: layer1.1, layer2.1, layer3.1"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--input-size", default="32")
    p.add_argument("--baseline-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="epochs of every pruning method")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per command (1 is fastest on a "
                                                          "loaded 2-core machine)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "train_compare")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs of this study first")
    return p.parse_args(argv)


def common_args(args) -> list[str]:
    extra = ["--train-limit", str(args.train_limit)] if args.train_limit else []
    return ["--data", args.data, "--input-size", args.input_size, "--batch-size", str(args.batch_size),
            "--threads", str(args.threads), "--device", "cpu", *extra]


def run_command(argv: list[str], out: Path) -> dict:
    """Run one ``deploykit`` command in a fresh process (unless its result exists); time it."""
    result_file = out / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text()) | {"wall_s": _recorded_wall(out)}
    if out.exists():
        shutil.rmtree(out)  # an interrupted earlier attempt
    command = [sys.executable, "-m", "deploykit.cli", *argv, "--out", str(out)]
    print("$ deploykit " + shlex.join(command[3:]), file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": argv[argv.index("--threads") + 1]}
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"command failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    print(completed.stdout.strip(), f"[{wall:.1f} s]", file=sys.stderr, flush=True)
    (out / "wall_s.txt").write_text(f"{wall:.3f}\n")
    return json.loads(result_file.read_text()) | {"wall_s": wall}


def _recorded_wall(out: Path) -> float:
    path = out / "wall_s.txt"
    return float(path.read_text()) if path.is_file() else float("nan")


def study_rows(args, study: Study, seed: int) -> list[dict]:
    common = common_args(args)
    base_out = args.runs / study.model / f"seed{seed}" / "baseline"
    baseline_argv = ["train", "baseline", "--model", study.model, "--epochs", str(args.baseline_epochs),
                     "--seed", str(seed), "--warmup-epochs", "0.5", *common]
    base = run_command(baseline_argv, base_out)
    rows = [_row(study, seed, "baseline", args.baseline_epochs, base["top1"], base["top1"], base,
                 baseline_argv)]
    # Control: the unpruned baseline trained for the same extra budget (CE only, fine-tuning lr).
    continued_argv = ["train", "baseline", "--model", study.model, "--weights", str(base_out / "model.pt"),
                      "--epochs", str(args.epochs), "--seed", str(seed), "--lr", "5e-4",
                      "--warmup-epochs", "0", *common]
    continued = run_command(continued_argv, args.runs / study.model / f"seed{seed}" / "continued")
    rows.append(_row(study, seed, "continued", args.epochs, continued["top1"], continued["top1"], continued,
                     continued_argv))
    for method in METHODS:
        argv = ["train", "subnet", "--model", study.model, "--prune", ",".join(map(str, study.pruned)),
                "--weights", str(base_out / "model.pt"), "--method", method, "--epochs", str(args.epochs),
                "--seed", str(seed), *common]
        result = run_command(argv, args.runs / study.model / f"seed{seed}" / method)
        rows.append(_row(study, seed, method, args.epochs, result["top1_merged"], result["top1_unmerged"],
                         result, argv))
    return rows


def _row(study: Study, seed: int, method: str, epochs: int, top1: float, top1_unmerged: float,
         result: dict, argv: list[str]) -> dict:
    pruned = "" if method in ("baseline", "continued") else ";".join(map(str, study.pruned))
    return {"model": study.model, "method": method, "seed": seed, "pruned": pruned, "epochs": epochs,
            "top1": top1, "top1_unmerged": top1_unmerged, "params": result.get("params"),
            "macs": result.get("macs"), "wall_s": round(result["wall_s"], 2),
            "train_wall_s": result.get("train_wall_s"),
            "command": "deploykit " + shlex.join(argv).replace(f"{ROOT}/", "")}


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    grouped = runs.groupby(["model", "method"], sort=False)
    summary = grouped.agg(n=("seed", "count"), epochs=("epochs", "first"), pruned=("pruned", "first"),
                          top1_mean=("top1", "mean"), top1_std=("top1", "std"),
                          params=("params", "first"), macs=("macs", "first"),
                          wall_s_mean=("wall_s", "mean"), wall_s_std=("wall_s", "std"))
    return summary.reset_index().round({"top1_mean": 2, "top1_std": 2, "wall_s_mean": 1, "wall_s_std": 1})


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fresh and args.runs.exists():
        shutil.rmtree(args.runs)
    started = time.perf_counter()
    rows = [row for model in args.models for seed in args.seeds
            for row in study_rows(args, STUDIES[model], seed)]
    runs = pd.DataFrame(rows)
    summary = summarize(runs)
    args.results.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.results / "train_runs.csv", index=False)
    summary.to_csv(args.results / "train_summary.csv", index=False)
    print(summary.drop(columns=["macs"]).to_string(index=False))
    print(f"wrote {args.results / 'train_runs.csv'} and {args.results / 'train_summary.csv'} "
          f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
