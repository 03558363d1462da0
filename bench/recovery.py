"""Recovery curves: how fast a pruned model gets its accuracy back — progressive vs abrupt vs drop.

UPDP's claim (docs/method.md) is that ramping λ of the pruned blocks from 0 to 1 keeps the original's
accuracy where removing their activations at once loses it. A short-trained original on an easy task
recovers from anything within an epoch (``bench/accuracy_latency.py``), so this study starts where the
claim is about: a **converged** original, an **aggressive** pruned set, and the accuracy measured
**along** the fine-tuning, not only at its end. Per case (model × data × input size) and seed:

1. **The original, trained to a validation plateau** (cached per case and seed, reused by reruns):
   ``deploykit.training.train_baseline`` for at most ``max_epochs`` epochs (cosine over them), stopped
   when val top-1 has not improved for ``--patience`` epochs; the best epoch's weights are kept. The
   transfer case starts from the real ImageNet weights the project loads offline
   (``package:efficientnet_lite0``) with a new 10-class head.
2. **The pruned sets**, from a cpu-ort block latency table: the shipped one of the model where there
   is one (measured at 224), else one profiled here once at the case's input size with a tiny protocol
   and cached in ``bench/results/cache/`` (it only ranks blocks). ``all``: every block whose merged
   form the table says is faster *and* whose output has its input's shape (so that ``drop`` can remove
   the very same blocks); ``half``: the half of those (rounded up) with the largest predicted saving.
3. **Fine-tuning**, the same number of steps for each method from the same original with
   ``deploykit.training.train_subnet`` (AdamW 5e-4 cosine, no warm-up, CE + T²·KL distillation from the
   original, T = 2, same seed and data order): ``progressive`` (λ ramps 0 → 1 over the first third of
   the steps), ``abrupt`` (λ = 1 from step 0), ``drop`` (the blocks replaced by identities).
4. **The curve**: val top-1 after 0, 25, 50, 100, 200, 400, … steps and at the end (the merged model's).
   ``top1`` is the *pruned* model's (every pruned block at λ = 1, exactly what merging would ship at
   that point); ``top1_training`` is the network as it trains (progressive: at its current λ < 1
   during the ramp; the same as ``top1`` otherwise). Measured through ``fit``'s ``on_step`` hook with
   the RNG state saved and restored, so measuring does not change the training.

Summary: the area under the ``top1`` curve over [0, end] by the trapezoid rule, divided by the steps
(the mean top-1 over the fine-tuning, in %), mean ± std over seeds, per case × set × method; also the
final top-1 and the top-1 right after pruning. Progressive's pruned model is not finished before its
ramp ends, which costs it area by construction; ``top1_training`` shows what the ramp keeps meanwhile.

Writes into ``--results`` (default ``bench/results``): ``recovery_runs.csv`` (one row per measured step,
with the machine, versions, settings and command; rows of a run are added when it finishes, so an
interrupted study resumes with the next run), ``recovery_summary.csv`` (mean ± std per step),
``recovery_auc.csv`` (the summary figures), ``recovery.png`` (curves) and ``recovery_auc.png``.
Originals and work folders live in ``--runs`` (default ``runs/recovery``); settings that change results
are kept in ``--runs``/settings.json and a rerun with other settings is refused (``--fresh`` starts over).
Processes for different seeds (or cases) may run side by side: rows are appended under a lock.

    .venv/bin/python bench/recovery.py                   # the study (see BENCHMARKS.md for its cost)
    for s in 0 1 2; do .venv/bin/python bench/recovery.py --seeds $s & done; wait   # one process per seed
    .venv/bin/python bench/recovery.py --cases convnext_atto --seeds 0 1 2
    .venv/bin/python bench/recovery.py --quick           # smoke test: 1 seed, few steps, small data
    .venv/bin/python bench/recovery.py --summarize       # tables and plots from the CSV only

deit_tiny is not among the cases: the training API builds ViTs for 224×224 only (``training.build.
original_model`` passes no input size to ``create_model``), and at 224 it would not fit the time.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _path in (ROOT, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from accuracy_latency import environment, require_same_settings, say, shown  # noqa: E402

from deploykit.fileio import write_bytes_atomic, write_text_atomic  # noqa: E402

METHODS = ("progressive", "abrupt", "drop")
SETS = ("all", "half")
TARGET = "cpu-ort"
CACHE = BENCH / "results" / "cache"
# Only ranks blocks for the choice of the pruned set: short, one repeat.
TINY_PROTOCOL = {"warmup_s": 0.05, "warmup_iters": 5, "min_time_s": 0.2, "min_iters": 10, "max_ci": 0.2,
                 "max_repeats": 1}


@dataclass(frozen=True)
class Case:
    """A model on a data set at an input size, and how its original is trained."""

    name: str
    model: str
    data: str
    size: int
    weights: str | None = None  # where the original starts (None: random initialization)
    lr: float = 2e-3  # the original's peak lr (deploykit train baseline's default from scratch)
    warmup_epochs: float = 1.0
    max_epochs: int = 10
    steps: int = 200  # fine-tuning steps of every method (rounded up to whole epochs)


CASES: dict[str, Case] = {case.name: case for case in (
    Case("convnext_atto", "convnext_atto", "mnist5k", 32),
    Case("mobilenetv2_100", "mobilenetv2_100", "mnist5k", 32),
    # ImageNet weights → the bundled digits; fine-tuning needs a gentler lr and fewer epochs, and a step
    # at 64×64 costs ~4× one of the 32×32 cases: fewer steps.
    Case("efficientnet_lite0-transfer", "efficientnet_lite0", "digits", 64,
         weights="package:efficientnet_lite0", lr=1e-3, warmup_epochs=0.5, max_epochs=6, steps=88),
)}
DEFAULT_CASES = ("convnext_atto", "efficientnet_lite0-transfer", "mobilenetv2_100")


@dataclass(frozen=True)
class Settings:
    """What changes the results (a rerun into the same --runs must use the same)."""

    batch_size: int = 32  # fine-tuning
    original_batch_size: int = 64
    patience: int = 2
    max_epochs: int | None = None  # None: each case's
    steps: int | None = None  # None: each case's
    first_probe: int = 25  # then doubling: 25, 50, 100, …
    train_limit: int | None = None
    val_limit: int | None = None


QUICK = Settings(batch_size=16, original_batch_size=32, patience=1, max_epochs=1, steps=8, first_probe=4,
                 train_limit=128, val_limit=64)


def say_progress(line: str) -> None:
    say(f"  {line}")


# --- arguments --------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=None,
                   help=f"default: {' '.join(DEFAULT_CASES)} (quick: convnext_atto)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (quick: 0)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: each case's)")
    p.add_argument("--max-epochs", type=int, default=None, help="the original's most epochs (default: "
                                                                 "each case's)")
    p.add_argument("--patience", type=int, default=None, help="epochs without a better val top-1 before "
                                                              "the original stops (default: 2)")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning batch (default: 32)")
    p.add_argument("--first-probe", type=int, default=None, help="first measured step after 0, then "
                                                                 "doubling (default: 25)")
    p.add_argument("--train-limit", type=int, default=None, help="first N training samples")
    p.add_argument("--val-limit", type=int, default=None, help="first N validation samples")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: convnext_atto, seed 0, 128 training images, 8 steps (~1 min)")
    p.add_argument("--runs", type=Path, default=None,
                   help="originals and work folders (default: runs/recovery; runs/recovery_quick if --quick)")
    p.add_argument("--results", type=Path, default=None,
                   help="CSVs and plots (default: bench/results; bench/results/quick if --quick)")
    p.add_argument("--fresh", action="store_true", help="delete this study's runs and rows first")
    p.add_argument("--summarize", action="store_true", help="only rebuild the summaries and plots")
    args = p.parse_args(argv)
    base = QUICK if args.quick else Settings()
    chosen = {"batch_size": args.batch_size, "patience": args.patience, "max_epochs": args.max_epochs,
              "steps": args.steps, "first_probe": args.first_probe, "train_limit": args.train_limit,
              "val_limit": args.val_limit}
    args.settings = replace(base, **{k: v for k, v in chosen.items() if v is not None})
    for name, value in asdict(args.settings).items():
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    args.cases = args.cases or (["convnext_atto"] if args.quick else list(DEFAULT_CASES))
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    args.runs = args.runs or ROOT / "runs" / ("recovery_quick" if args.quick else "recovery")
    args.results = args.results or BENCH / "results" / ("quick" if args.quick else "")
    return args


# --- the pruned sets ----------------------------------------------------------------------------------

def block_table(case: Case, cache: Path = CACHE):
    """The model's shipped cpu-ort table, else one profiled here at the case's size (cached)."""
    from deploykit.latency.profile import default_table_path, profile
    from deploykit.latency.table import LatencyTable, read_meta
    from deploykit.protocol import Protocol
    from deploykit.targets import load_target

    shipped = sorted(p for p in (ROOT / "latency_tables" / TARGET).glob(f"{case.model}_*_b1.csv")
                     if "estimated" not in p.name)
    if shipped:
        return LatencyTable.read(shipped[0])
    path = default_table_path(case.model, TARGET, (case.size, case.size), 1, root=cache)
    if not (path.is_file() and read_meta(path).complete):
        say(f"{case.model}: no shipped {TARGET} table; profiling one at {case.size}×{case.size} → {path}")
        profile(case.model, load_target(TARGET), input_size=case.size, batch=1, out=path,
                protocol=Protocol(**TINY_PROTOCOL), progress=say_progress)
    return LatencyTable.read(path)


def block_sets(case: Case, table) -> dict[str, tuple[int, ...]]:
    """``all``: the shape-preserving blocks the table says are faster merged; ``half``: the half of those
    with the largest saving (ties: lower index first)."""
    from deploykit.models import create_model
    from deploykit.prune import prunable
    from deploykit.search import LatencySpace

    net = prunable(create_model(case.model, num_classes=10), input_size=(case.size, case.size))
    keeps_shape = {b.index for b in net.blocks if tuple(b.in_shape) == tuple(b.out_shape)}
    space = LatencySpace.from_table(table)
    favored = [(saving, index) for index, saving in zip(space.candidates, space.savings)
               if saving > 0 and index in keeps_shape]
    if not favored:
        raise SystemExit(f"{case.name}: the table favors no shape-preserving block; nothing to study")
    ranked = sorted(favored, key=lambda pair: (-pair[0], pair[1]))
    return {"all": tuple(sorted(i for _, i in favored)),
            "half": tuple(sorted(i for _, i in ranked[: math.ceil(len(ranked) / 2)]))}


# --- the converged original ---------------------------------------------------------------------------

class Plateau(Exception):
    """Val top-1 stopped improving: training ends early (raised from the epoch callback)."""


class EarlyStop:
    """Keeps the best epoch's weights (the checkpoint the loop has just written) and stops the training
    after ``patience`` epochs without a better val top-1."""

    def __init__(self, out: Path, patience: int):
        self.out, self.patience = out, patience
        self.best_top1, self.best_epoch, self.epochs = -1.0, 0, 0

    def __call__(self, row: dict[str, Any]) -> None:
        self.epochs = int(row["epoch"])
        if row["val_top1"] > self.best_top1:
            self.best_top1, self.best_epoch = float(row["val_top1"]), self.epochs
            shutil.copyfile(self.out / "checkpoint.pt", self.out / "best.pt")
        elif self.epochs - self.best_epoch >= self.patience:
            raise Plateau


@dataclass(frozen=True)
class Original:
    weights: Path
    top1: float
    best_epoch: int
    epochs: int
    plateau: bool  # True: stopped by patience; False: reached max_epochs still improving
    wall_s: float


def converged_original(case: Case, seed: int, settings: Settings, args) -> Original:
    """Train (or reuse) the original of ``case`` for ``seed`` until its val top-1 plateaus."""
    from deploykit.training import OptimConfig, RunConfig, train_baseline
    from deploykit.training.checkpoint import FORMAT, read_checkpoint, save_atomic

    folder = args.runs / "originals" / case.name / f"seed{seed}"
    summary = folder / "original.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        return Original(**{**data, "weights": Path(data["weights"])})
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted attempt
    max_epochs = settings.max_epochs or case.max_epochs
    say(f"{case.name} seed {seed}: training the original to a plateau (≤ {max_epochs} epochs, "
        f"patience {settings.patience})")
    stop = EarlyStop(folder, settings.patience)
    started = time.perf_counter()
    run = RunConfig(out=folder, epochs=max_epochs, batch_size=settings.original_batch_size, seed=seed,
                    device="cpu", threads=args.threads)
    try:
        train_baseline(case.model, data=data_config(case, settings), run=run, weights=case.weights,
                       optim=OptimConfig(lr=case.lr, warmup_epochs=case.warmup_epochs), on_epoch_end=stop)
        plateau = False
    except Plateau:
        plateau = True
    best = read_checkpoint(folder / "best.pt")
    weights = folder / "model.pt"
    save_atomic({"format": FORMAT, "kind": "baseline-weights", "meta": best["meta"],
                 "state_dict": best["state_dict"]}, weights)
    for name in ("best.pt", "checkpoint.pt"):
        (folder / name).unlink(missing_ok=True)
    original = Original(weights=weights, top1=stop.best_top1, best_epoch=stop.best_epoch, epochs=stop.epochs,
                        plateau=plateau, wall_s=round(time.perf_counter() - started, 1))
    write_text_atomic(summary, json.dumps({**asdict(original), "weights": str(weights)}, indent=2) + "\n")
    say(f"  original: val top-1 {original.top1:.2f}% at epoch {original.best_epoch} of {original.epochs}"
        f"{' (plateau)' if plateau else ' (max epochs, still improving)'}")
    return original


def data_config(case: Case, settings: Settings):
    from deploykit.data import DataConfig

    return DataConfig(name=case.data, input_size=(case.size, case.size), train_limit=settings.train_limit,
                      val_limit=settings.val_limit)


# --- one recovery run ---------------------------------------------------------------------------------

def probe_steps(first: int, end: int) -> list[int]:
    """0, first, 2·first, 4·first, … below ``end`` (the end itself is measured after training)."""
    steps, step = [0], first
    while step < end:
        steps.append(step)
        step *= 2
    return steps


class Probe:
    """``on_step`` hook: val top-1 of the pruned model (λ = 1) and of the network at its training λ."""

    def __init__(self, steps: Sequence[int], loader):
        self.steps, self.loader, self.rows = set(steps), loader, []

    def __call__(self, step: int, student) -> None:
        if step not in self.steps:
            return
        import torch

        with torch.random.fork_rng(devices=[]):  # the training's random stream stays as it was
            self.rows.append({"step": step, **self.measure(student)})

    def measure(self, student) -> dict[str, float]:
        from deploykit.prune import PrunableNet
        from deploykit.training import evaluate

        if not isinstance(student, PrunableNet):  # drop: the blocks are gone
            top1 = evaluate(student, self.loader)[0]
            return {"lam": 1.0, "top1": top1, "top1_training": top1}
        gates = student.progress()
        lam = min(gates.values(), default=1.0)
        training = evaluate(student, self.loader)[0] if lam < 1.0 else None
        student.set_progress(1.0)
        top1 = evaluate(student, self.loader)[0]
        student.set_progress(gates)
        return {"lam": lam, "top1": top1, "top1_training": top1 if training is None else training}


def recovery_run(case: Case, seed: int, set_name: str, pruned: tuple[int, ...], method: str,
                 original: Original, settings: Settings, args) -> list[dict[str, Any]]:
    """Fine-tune ``pruned`` from the original with ``method``; val top-1 along the way."""
    from deploykit.data import eval_loader, load_datasets
    from deploykit.subnet import Subnet
    from deploykit.training import RunConfig, SubnetConfig, train_subnet
    from deploykit.training.config import stage_optim

    work = args.runs / "work" / case.name / f"seed{seed}" / f"{set_name}-{method}"
    if work.exists():
        shutil.rmtree(work)  # an interrupted attempt: a run's rows are written only when it finishes
    data = data_config(case, settings)
    datasets = load_datasets(data)
    steps_per_epoch = len(datasets.train) // settings.batch_size
    steps = settings.steps or case.steps
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    end = epochs * steps_per_epoch
    probe = Probe(probe_steps(settings.first_probe, end), eval_loader(datasets.val, batch_size=256))
    started = time.perf_counter()
    result = train_subnet(Subnet(case.model, (case.size, case.size), pruned), weights=original.weights,
                          data=data, config=SubnetConfig(method=method),
                          run=RunConfig(out=work, epochs=epochs, batch_size=settings.batch_size, seed=seed,
                                        device="cpu", threads=args.threads),
                          optim=stage_optim("subnet"), on_step=probe)
    wall = time.perf_counter() - started
    ending = {"step": end, "lam": 1.0, "top1": result.top1_merged, "top1_training": result.top1_unmerged}
    shutil.rmtree(work)
    common = {"case": case.name, "model": case.model, "data": case.data, "input_size": case.size,
              "weights": case.weights or "scratch", "seed": seed, "set": set_name, "n_pruned": len(pruned),
              "pruned": ";".join(map(str, pruned)), "method": method, "end_step": end, "epochs": epochs,
              "batch_size": settings.batch_size, "original_top1": original.top1,
              "original_epochs": original.epochs, "original_best_epoch": original.best_epoch,
              "original_plateau": original.plateau, "params": result.params, "macs": result.macs,
              "run_wall_s": round(wall, 1)}
    say(f"  {case.name} seed {seed} {set_name} {method}: " + ", ".join(
        f"{row['step']}: {row['top1']:.1f}" for row in [*probe.rows, ending]) + f" [{wall:.0f} s]")
    return [{**common, **row, "is_end": row is ending} for row in [*probe.rows, ending]]


# --- results ------------------------------------------------------------------------------------------

RUNS_CSV, SUMMARY_CSV, AUC_CSV = "recovery_runs.csv", "recovery_summary.csv", "recovery_auc.csv"
KEY = ["case", "seed", "set", "method"]


def done_runs(path: Path) -> set[tuple]:
    if not path.is_file():
        return set()
    frame = pd.read_csv(path)
    return set(frame[frame["is_end"]][KEY].itertuples(index=False, name=None))


def append_rows(path: Path, rows: list[dict[str, Any]], env: dict[str, Any], *, lock: Path) -> None:
    """Add one run's rows; under ``lock``, so that studies of different cases may run side by side."""
    import fcntl

    new = pd.DataFrame(rows).assign(**env)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        frame = pd.concat([pd.read_csv(path), new], ignore_index=True) if path.is_file() else new
        write_text_atomic(path, frame.to_csv(index=False, float_format="%.6g"))


def auc(steps: Sequence[float], top1: Sequence[float]) -> float:
    """Area under top-1 over [0, end] by the trapezoid rule, divided by the steps: a mean top-1 in %."""
    steps, top1 = np.asarray(steps, dtype=float), np.asarray(top1, dtype=float)
    return float(np.trapezoid(top1, steps) / (steps[-1] - steps[0]))


def per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the AUC of its pruned-model and training curves, top-1 at step 0 and at the end."""
    rows = []
    for key, run in runs.sort_values("step").groupby(KEY, sort=False):
        rows.append({**dict(zip(KEY, key)), "model": run["model"].iloc[0], "data": run["data"].iloc[0],
                     "input_size": run["input_size"].iloc[0], "weights": run["weights"].iloc[0],
                     "n_pruned": run["n_pruned"].iloc[0], "pruned": run["pruned"].iloc[0],
                     "end_step": run["end_step"].iloc[0], "original_top1": run["original_top1"].iloc[0],
                     "auc": auc(run["step"], run["top1"]),
                     "auc_training": auc(run["step"], run["top1_training"]),
                     "top1_step0": run["top1"].iloc[0], "top1_end": run["top1"].iloc[-1],
                     "run_wall_s": run["run_wall_s"].iloc[0]})
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean ± std over seeds per case × set × method × step, the summary figures per case × set × method)."""
    group = ["case", "set", "method"]
    curve = runs.groupby([*group, "step"], sort=False).agg(
        n=("seed", "count"), top1_mean=("top1", "mean"), top1_std=("top1", "std"),
        top1_training_mean=("top1_training", "mean"),
        top1_training_std=("top1_training", "std")).reset_index()
    figures = per_run(runs).groupby(group, sort=False).agg(
        n=("seed", "count"), model=("model", "first"), data=("data", "first"),
        input_size=("input_size", "first"), weights=("weights", "first"), n_pruned=("n_pruned", "first"),
        pruned=("pruned", "first"),
        end_step=("end_step", "first"), original_top1_mean=("original_top1", "mean"),
        original_top1_std=("original_top1", "std"), auc_mean=("auc", "mean"), auc_std=("auc", "std"),
        auc_training_mean=("auc_training", "mean"), auc_training_std=("auc_training", "std"),
        top1_step0_mean=("top1_step0", "mean"), top1_step0_std=("top1_step0", "std"),
        top1_end_mean=("top1_end", "mean"), top1_end_std=("top1_end", "std"),
        run_wall_s_mean=("run_wall_s", "mean")).reset_index()
    order = {m: i for i, m in enumerate(METHODS)}
    figures = figures.sort_values(["case", "set", "method"], key=lambda c: c.map(order) if c.name == "method"
                                  else c, kind="stable")
    return curve.round(4), figures.round(4)


COLORS = {"progressive": "tab:blue", "abrupt": "tab:orange", "drop": "tab:green"}


def render_curves(curve: pd.DataFrame, figures: pd.DataFrame) -> bytes:
    """One panel per case × set: mean val top-1 of the pruned model against steps, ± std bands; the
    progressive network at its training λ dashed; the original's top-1 as a grey line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(figures.groupby(["case", "set"], sort=False))
    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(6.0 * columns, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes_grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, ((case, set_name), info) in zip(axes_grid, panels):
        here = curve[(curve["case"] == case) & (curve["set"] == set_name)]
        for method, points in here.groupby("method", sort=False):
            x, y = points["step"].to_numpy(float), points["top1_mean"].to_numpy(float)
            spread = points["top1_std"].fillna(0).to_numpy(float)
            axes.plot(x, y, marker="o", markersize=3, color=COLORS[method], label=method)
            axes.fill_between(x, y - spread, y + spread, color=COLORS[method], alpha=0.15, linewidth=0)
            if method == "progressive":
                axes.plot(x, points["top1_training_mean"], linestyle="--", color=COLORS[method], alpha=0.7,
                          label="progressive at its training λ")
        axes.axhline(info["original_top1_mean"].iloc[0], color="0.5", linewidth=1, label="original")
        axes.set_xlim(left=-0.02 * here["step"].max())
        axes.set(xlabel="fine-tuning step", ylabel="val top-1 (%)",
                 title=f"{case}: {set_name} ({info['n_pruned'].iloc[0]} blocks), n = {info['n'].max()}")
        axes.legend(fontsize=7, loc="best")
    for axes in axes_grid[len(panels):]:
        axes.set_visible(False)
    return _png(figure)


def render_auc(figures: pd.DataFrame) -> bytes:
    """Area under the recovery curve (mean top-1 over the fine-tuning), mean ± std per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(figures.groupby(["case", "set"], sort=False))
    figure = Figure(figsize=(max(6.0, 1.6 * len(groups)), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    width = 0.8 / len(METHODS)
    for offset, method in enumerate(METHODS):
        values = [g[g["method"] == method] for _, g in groups]
        means = [v["auc_mean"].iloc[0] if len(v) else np.nan for v in values]
        stds = [v["auc_std"].fillna(0).iloc[0] if len(v) else 0.0 for v in values]
        axes.bar(np.arange(len(groups)) + (offset - 1) * width, means, width, yerr=stds, capsize=3,
                 color=COLORS[method], label=method)
    labels = [f"{case}\n{set_name}" for (case, set_name), _ in groups]
    axes.set_xticks(np.arange(len(groups)), labels, fontsize=7)
    low = np.nanmin(figures["auc_mean"] - figures["auc_std"].fillna(0))
    axes.set_ylim(max(0.0, low - 5), 100)
    axes.set(ylabel="area under the curve / steps (% top-1)",
             title="mean val top-1 of the pruned model over the fine-tuning\n(area under the recovery curve "
                   "/ steps; ± std over seeds)")
    axes.legend(fontsize=8)
    return _png(figure)


def _png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_summaries(results: Path) -> pd.DataFrame | None:
    path = results / RUNS_CSV
    if not path.is_file():
        say(f"no {path} yet: nothing to summarize")
        return None
    curve, figures = summarize(pd.read_csv(path))
    write_text_atomic(results / SUMMARY_CSV, curve.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(results / AUC_CSV, figures.to_csv(index=False, float_format="%.6g"))
    write_bytes_atomic(results / "recovery.png", render_curves(curve, figures))
    write_bytes_atomic(results / "recovery_auc.png", render_auc(figures))
    return figures


# --- the study ----------------------------------------------------------------------------------------

def study(args, command: str) -> int:
    settings = args.settings
    recorded = {**asdict(settings), "target": TARGET, "cases": {n: asdict(c) for n, c in CASES.items()}}
    require_same_settings(args.runs / "settings.json", recorded, hint="pass --fresh or another --runs")
    runs_csv = args.results / RUNS_CSV
    done = done_runs(runs_csv)
    env = environment(command) | {"runs_dir": shown([args.runs]), "settings": json.dumps(asdict(settings))}
    for name in args.cases:
        case = CASES[name]
        sets = block_sets(case, block_table(case))
        say(f"{case.name}: pruned sets {', '.join(f'{k} = {list(v)}' for k, v in sets.items())}")
        for seed in args.seeds:
            pending = [(s, m) for s in args.sets for m in args.methods if (name, seed, s, m) not in done]
            if not pending:
                continue
            original = converged_original(case, seed, settings, args)
            for set_name, method in pending:
                rows = recovery_run(case, seed, set_name, sets[set_name], method, original, settings, args)
                append_rows(runs_csv, rows, env, lock=args.runs / "rows.lock")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shown([".venv/bin/python", "bench/recovery.py", *(sys.argv[1:] if argv is None else argv)])
    args.results.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        shutil.rmtree(args.runs, ignore_errors=True)
        for name in (RUNS_CSV, SUMMARY_CSV, AUC_CSV, "recovery.png", "recovery_auc.png"):
            (args.results / name).unlink(missing_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    code = 0 if args.summarize else study(args, command)
    figures = write_summaries(args.results)
    if figures is not None:
        shown_columns = ["case", "set", "method", "n", "n_pruned", "auc_mean", "auc_std", "top1_step0_mean",
                         "top1_end_mean", "top1_end_std", "original_top1_mean"]
        print(figures[shown_columns].to_string(index=False))
        print(f"wrote {args.results / AUC_CSV} and the rest ({time.perf_counter() - started:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
