"""Accuracy at equal latency: UPDP (progressive) vs abrupt vs dropped blocks vs Torch-Pruning channel pruning.

For each model (convnext_atto, resnet18; 32×32, batch 1, target ``cpu-ort``), data set (mnist5k, digits)
and seed, every command in a fresh process, timed end to end:

1. ``deploykit train baseline``: the original, from scratch (no pretrained weights can be downloaded),
   ``--baseline-epochs`` epochs (half an epoch of warm-up, as in ``bench/train_compare.py``).
2. ``deploykit profile``: the block latency table of the model, **once per model** (not per data or seed),
   under the study's measurement protocol and ``--latency-threads`` intra-op threads.
3. ``deploykit search --budget B --proxy sensitivity:baseline/model.pt``: the UPDP subnet whose
   table-predicted latency is ≤ B × the table's unpruned prediction (B = ``--budget``, default 0.75). The
   sensitivity proxy scores a subnet by −Σ over its pruned blocks of the val loss increase of the trained
   baseline with that block alone in pruned form (activations removed, λ = 1, no training): it suits a
   plain trained checkpoint (there is no supernet here) and, unlike ``--proxy depth`` (fewest blocks,
   then lowest latency; no data), it steers away from the blocks that matter. ``--proxy depth`` remains
   for a baseline so short-trained that its sensitivities are noise (in ``--quick``, ConvNeXt's layer
   scale still sits near its 1e-6 initialization, so every block's sensitivity is ~0).
   ``progressive`` and ``abrupt`` (``deploykit train subnet --subnet``) train that same subnet.
4. ``drop`` removes blocks outright. Removing a block saves all of its latency, not only the difference
   to its merged form, so at the same budget it needs fewer blocks. The rule: among the shape-preserving
   blocks (table rows whose input and output shapes agree), the set D whose table prediction with D's
   *original* entries removed, calibrate(fixed + Σ_{i∉D} original_i), is ≤ the same budget ms; of the
   sets that fit, the fewest blocks, then the least Σ sensitivity (val loss increase of the baseline with
   that block dropped alone, measured here), then the lowest prediction; brute force over all subsets.
   If no set fits, every candidate is dropped and the row says so.
5. ``torch-pruning``: ``bench/tp_prune.py match`` prunes the baseline's channels globally by L2 magnitude
   (``tp.pruner.BasePruner``, ``GroupMagnitudeImportance(p=2)``, classifier ignored, ConvNeXt's layer
   scale ``gamma`` pruned as an unwrapped parameter, channel counts rounded to multiples of
   ``--round-to`` 8, without which onnxruntime runs the pruned model slower than the unpruned one; see
   ``bench/tp_prune.py``) with the ratio found by bisection so that the
   exported model's **measured** latency equals that of the UPDP progressive model (its exported ONNX,
   measured interleaved in the same run) within ``--tolerance`` (5 %); the progressive model, not the
   table's budget, is the reference because at 32×32 the table's sum and the measured end-to-end
   latency differ and equal *measured* latency is what this study compares. ``bench/tp_prune.py
   finetune`` then trains it with the subnet training's recipe (same loop, optimizer, schedule, epochs,
   batch, CE + T²·KL distillation from the baseline, T = 2).
6. Every final model is exported (``deploykit export``) and measured side by side: ``deploykit verify
   MODEL.onnx --reference original.onnx --torch merged.safetensors`` per method (Torch-Pruning's
   channel-pruned model is no timm architecture a model file can rebuild: its ``merged.pt``, written by
   this benchmark moments before, is loaded with ``--unsafe-pickle``), all after the seed's training, so
   each method is timed interleaved with the same original in fresh processes (numerics against
   PyTorch checked too). The baseline's measured latency is the median of the reference's medians.

Same training budget for every pruning method: ``--epochs`` epochs from the same baseline, batch 64,
AdamW lr 5e-4 (wd 0.05) cosine, distillation. Sensitivities (UPDP search and drop set) are measured on
the val split that top-1 is reported on, as in ``deploykit search``; Torch-Pruning's magnitude ranking
uses no data.

Writes ``<results>/accuracy_latency_runs.csv`` (one row per model × data × seed × method: top-1, params,
MACs, measured ms, speed-up vs the original, pruned set or channel ratio, wall times, the command) and
``<results>/accuracy_latency_summary.csv`` (mean ± std over seeds per model × data × method), both with
the machine, versions and this script's command. Every step is skipped when its output exists (rerun the
same command to resume; ``--fresh`` starts over). Settings that change results are stored in
``<runs>/settings.json`` and a rerun with other settings is refused. Progress on stderr.

    .venv/bin/python bench/accuracy_latency.py             # the study: 2 × 2 × 3 cells, ~2-2.5 h on 2 cores
    .venv/bin/python bench/accuracy_latency.py --quick --threads 1 --runs /tmp/al --results /tmp/al
    .venv/bin/python bench/accuracy_latency.py --models resnet18 --data digits --seeds 0   # one cell

Cost of the study on a shared 2-core machine, from the per-step walls of ``walls.json``: about 10 min per
mnist5k cell and 7-8 min per digits cell (training 3-5 min, the Torch-Pruning bisection 1.5-3.5 min at
15-30 s a step, the four verify runs ~2.5 min, five exports ~45 s), plus ~2 min to profile each model.
Rows of one run folder accumulate in the CSVs across invocations (one model or data set at a time).

``--quick``: convnext_atto on digits, seed 0, 1 + 1 epochs on 256 training images, a short measurement
protocol, at most 3 bisection steps (~3 min); it defaults to ``--runs runs/accuracy_latency_quick`` and
``--results bench/results/quick``, so that it never mixes with the study's runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _path in (ROOT, BENCH):  # deploykit, and tp_prune beside this script
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

MODELS = ("convnext_atto", "resnet18")
DATA = ("mnist5k", "digits")
DEPTH_METHODS = ("progressive", "abrupt", "drop")
METHODS = ("baseline", *DEPTH_METHODS, "torch-pruning")
TARGET = "cpu-ort"
SIZE = 32
# deploykit's default protocol for the study; a short one for --quick.
FULL_PROTOCOL = {"warmup_s": 0.2, "warmup_iters": 10, "min_time_s": 1.0, "min_iters": 20, "max_ci": 0.02,
                 "max_repeats": 5}
QUICK_PROTOCOL = {"warmup_s": 0.05, "warmup_iters": 5, "min_time_s": 0.1, "min_iters": 10, "max_ci": 0.02,
                  "max_repeats": 1}
_FLAGS = {"warmup_s": "--warmup-time", "warmup_iters": "--warmup-iters", "min_time_s": "--min-time",
          "min_iters": "--min-iters", "max_ci": "--max-ci", "max_repeats": "--max-repeats"}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- arguments --------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=None, help="default: both")
    p.add_argument("--data", nargs="+", choices=DATA, default=None, help="default: both")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2")
    p.add_argument("--baseline-epochs", type=int, default=None, help="default: 4")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every pruning method (default: 2)")
    p.add_argument("--budget", type=float, default=0.75,
                   help="latency budget as a fraction of the table's unpruned prediction (default: 0.75)")
    p.add_argument("--proxy", choices=("sensitivity", "depth"), default="sensitivity",
                   help="search proxy: sensitivity:baseline/model.pt (default) or depth")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-limit", type=int, default=None, help="first N training samples (quick: 256)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per training command (1 is fastest on a loaded 2-core machine)")
    p.add_argument("--latency-threads", type=int, default=1,
                   help="onnxruntime intra-op threads of every latency measurement (default: 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per verify (default: 3)")
    p.add_argument("--match-rounds", type=int, default=None,
                   help="interleaved rounds per Torch-Pruning bisection step (default: 2)")
    p.add_argument("--match-steps", type=int, default=None, help="most bisection steps (default: 8)")
    p.add_argument("--tolerance", type=float, default=0.05, help="latency match tolerance (default: 0.05)")
    p.add_argument("--max-ratio", type=float, default=0.9, help="largest global channel ratio tried")
    p.add_argument("--round-to", type=int, default=8,
                   help="Torch-Pruning: channel counts rounded to a multiple of this (default 8; 0 = off)")
    p.add_argument("--quick", action="store_true",
                   help="convnext_atto, digits, seed 0, 1+1 epochs on 256 images, short protocol (~3 min)")
    p.add_argument("--runs", type=Path, default=None,
                   help="run folder (default: runs/accuracy_latency; runs/accuracy_latency_quick if --quick)")
    p.add_argument("--results", type=Path, default=None,
                   help="CSV folder (default: bench/results; bench/results/quick if --quick)")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs of this study first")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"models": ["convnext_atto"] if quick else list(MODELS),
                "data": ["digits"] if quick else list(DATA), "seeds": [0] if quick else [0, 1, 2],
                "baseline_epochs": 1 if quick else 4, "epochs": 1 if quick else 2,
                "train_limit": 256 if quick else None, "rounds": 1 if quick else 3,
                "match_rounds": 1 if quick else 2, "match_steps": 3 if quick else 8,
                "runs": ROOT / "runs" / ("accuracy_latency_quick" if quick else "accuracy_latency")}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.results is None:
        args.results = ROOT / "bench" / "results" / ("quick" if quick else "")
    args.protocol = dict(QUICK_PROTOCOL if quick else FULL_PROTOCOL)
    if not 0.0 < args.budget < 1.0:
        p.error(f"--budget must be a fraction in (0, 1), got {args.budget}")
    return args


def settings(args) -> dict:
    """What changes the results: a rerun into the same run folder must use the same."""
    return {"baseline_epochs": args.baseline_epochs, "epochs": args.epochs, "budget": args.budget,
            "proxy": args.proxy, "batch_size": args.batch_size, "train_limit": args.train_limit,
            "latency_threads": args.latency_threads, "rounds": args.rounds, "match_rounds": args.match_rounds,
            "match_steps": args.match_steps, "tolerance": args.tolerance, "max_ratio": args.max_ratio,
            "round_to": args.round_to,
            "protocol": args.protocol, "target": TARGET, "input_size": SIZE}


def check_settings(args) -> None:
    require_same_settings(args.runs / "settings.json", settings(args), hint="pass --fresh or another --runs")


def require_same_settings(path: Path, mine: dict, *, hint: str) -> None:
    """Record ``mine`` in ``path``; exit if it already records other settings (a study's runs must not
    mix settings). Shared by the studies in bench/."""
    if path.is_file():
        theirs = json.loads(path.read_text())
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if changed:
            shown = "; ".join(f"{k}: {theirs.get(k)!r} → {mine.get(k)!r}" for k in changed)
            sys.exit(f"{path.parent} holds runs with other settings ({shown}); {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=2) + "\n")


def protocol_args(args) -> list[str]:
    flags = [item for key, flag in _FLAGS.items() for item in (flag, str(args.protocol[key]))]
    return [*flags, "--threads", str(args.latency_threads)]


# --- running one step --------------------------------------------------------------------------------

class StepFailed(Exception):
    """A command of the study exited with an error (its stderr has been shown)."""


class Walls:
    """Wall seconds of every step of one seed folder, kept in walls.json (a resumed step keeps its own)."""

    def __init__(self, folder: Path):
        self.path = folder / "walls.json"
        self.values: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, label: str, wall: float) -> None:
        self.values[label] = round(wall, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.values, indent=2) + "\n")
        os.replace(tmp, self.path)

    def get(self, label: str) -> float:
        return self.values.get(label, float("nan"))


def shown(argv: Sequence[str]) -> str:
    """The command as a user would type it, with paths relative to the repository."""
    text = shlex.join(str(a) for a in argv)
    return text.replace(f"{ROOT}/", "")


def run_step(argv: list[str], *, done: Path, walls: Walls, label: str, clean: Path | None = None,
             ok_codes: tuple[int, ...] = (0,), threads: int = 1) -> str:
    """Run ``argv`` (``deploykit ...`` or ``bench/SCRIPT.py ...``) in a fresh process unless ``done``
    exists; ``clean`` (an interrupted attempt's folder) is removed first. Returns the shown command."""
    text = shown(argv)
    if done.is_file():
        return text
    if clean is not None and clean.exists():
        shutil.rmtree(clean)
    command = ([sys.executable, "-m", "deploykit.cli", *argv[1:]] if argv[0] == "deploykit"
               else [sys.executable, *argv])
    say(f"$ {text}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    if completed.returncode not in ok_codes or not done.is_file():
        raise StepFailed(f"{label} failed (exit {completed.returncode}): {text}")
    last = [line for line in completed.stdout.splitlines() if line.strip()][-1:] or [""]
    say(f"  {last[0][:200]} [{wall:.1f} s]")
    walls.record(label, wall)
    return text


# --- the drop set ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DropChoice:
    """The blocks to drop and the table's prediction with their original entries removed."""

    dropped: tuple[int, ...]
    predicted_ms: float
    fits: bool
    candidates: tuple[int, ...]


def choose_drop_set(block_ms: Mapping[int, float], *, rest_ms: float, budget_ms: float,
                    sensitivity: Mapping[int, float] | None = None,
                    calibration: tuple[float, float] | None = None) -> DropChoice:
    """Of the candidate blocks (``block_ms``: index → original-form latency), the set whose removal brings
    the prediction ``calibrate(rest_ms + Σ kept block_ms)`` to ≤ ``budget_ms`` with the fewest blocks, then
    the least Σ ``sensitivity``, then the lowest prediction, then the smallest indices (brute force).
    ``rest_ms``: the fixed parts and the non-candidate blocks. No set fits: all candidates, ``fits=False``."""
    candidates = tuple(sorted(block_ms))
    if len(candidates) > 20:
        raise ValueError(f"{len(candidates)} candidate blocks: too many for brute force")
    sensitivity = sensitivity or {}
    a, b = calibration or (1.0, 0.0)
    total = rest_ms + sum(block_ms.values())
    best = None
    for k in range(len(candidates) + 1):
        for subset in itertools.combinations(candidates, k):
            predicted = a * (total - sum(block_ms[i] for i in subset)) + b
            if predicted <= budget_ms * (1 + 1e-12):
                key = (sum(sensitivity.get(i, 0.0) for i in subset), predicted, subset)
                best = min(best, key) if best is not None else key
        if best is not None:
            return DropChoice(dropped=best[2], predicted_ms=best[1], fits=True, candidates=candidates)
    return DropChoice(dropped=candidates, predicted_ms=a * (total - sum(block_ms.values())) + b, fits=False,
                      candidates=candidates)


def shape_preserving(table) -> dict[int, float]:
    """Block index → original-form latency (ms) of the table's blocks whose output shape is their input's."""
    rows = table.rows
    keep = (rows["kind"] == "block") & (rows["form"] == "original") & (rows["in_shape"] == rows["out_shape"])
    rows = rows[keep]
    return {index: table.block_latency(index) for text in rows["indices"]
            for index in (int(i) for i in str(text).split(";") if i != "")}


def drop_sensitivity(weights: Path, candidates: Sequence[int], *, data: str,
                     threads: int) -> dict[int, float]:
    """Val loss increase of the baseline with each candidate block dropped alone (no training)."""
    import torch
    from tp_prune import load_baseline

    from deploykit.data import DataConfig, eval_loader, load_datasets
    from deploykit.prune import prunable
    from deploykit.training.build import dropped
    from deploykit.training.evaluation import evaluate

    torch.set_num_threads(threads)
    model, meta = load_baseline(weights)
    size = tuple(meta["input_size"])
    loader = eval_loader(load_datasets(DataConfig(data, input_size=size)).val, batch_size=256)
    net = prunable(model, input_size=size)
    _, base = evaluate(model, loader)
    return {i: evaluate(dropped(model, net, (i,)), loader)[1] - base for i in candidates}


def choose_drop(table, cell: Path, weights: Path, *, budget_ms: float, data: str, threads: int,
                walls: Walls) -> dict:
    """The drop set of one seed (cached in drop_choice.json)."""
    path = cell / "drop_choice.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    block_ms = shape_preserving(table)
    others = [i for i in table.block_indices if i not in block_ms]
    rest = table.fixed_latency() + sum(table.block_latency(i) for i in others)
    sensitivity = drop_sensitivity(weights, sorted(block_ms), data=data, threads=threads)
    choice = choose_drop_set(block_ms, rest_ms=rest, budget_ms=budget_ms, sensitivity=sensitivity,
                             calibration=table.meta.calibration)
    record = {"dropped": list(choice.dropped), "predicted_ms": choice.predicted_ms, "fits": choice.fits,
              "budget_ms": budget_ms, "candidates": list(choice.candidates),
              "block_ms": {str(k): v for k, v in block_ms.items()},
              "loss_increase": {str(k): v for k, v in sensitivity.items()},
              "rule": "fewest blocks, then least Σ loss increase, then lowest prediction"}
    path.write_text(json.dumps(record, indent=2) + "\n")
    walls.record("drop_choice", time.perf_counter() - started)
    say(f"  drop set {choice.dropped}: predicted {choice.predicted_ms:.3f} ms (budget {budget_ms:.3f} ms"
        f"{'' if choice.fits else ', NOT met: every shape-preserving block dropped'})")
    return record


# --- one model × data × seed -------------------------------------------------------------------------

def profile_table(args, model: str) -> Path:
    """The model's latency table (measured once per model; resumed if interrupted)."""
    from deploykit.latency.table import read_meta

    table = args.runs / "tables" / f"{model}_{SIZE}_b1.csv"
    meta = table.with_name(table.stem + ".meta.json")
    argv = ["deploykit", "profile", "--target", TARGET, "--model", model, "--input-size", str(SIZE),
            "--batch", "1", "--out", str(table), *protocol_args(args)]
    walls = Walls(args.runs / "tables")
    if not (meta.is_file() and read_meta(table).complete):
        say(f"$ {shown(argv)}")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "deploykit.cli", *argv[1:]], cwd=ROOT, check=False,
                              stdout=subprocess.PIPE, text=True)
        if done.returncode != 0 or not read_meta(table).complete:
            raise StepFailed(f"profiling {model} failed (exit {done.returncode}): {shown(argv)}")
        walls.record(model, time.perf_counter() - started)
        say(f"  {(done.stdout.strip().splitlines() or [''])[-1]} [{time.perf_counter() - started:.1f} s]")
    return table


def train_argv(args, data: str) -> list[str]:
    extra = ["--train-limit", str(args.train_limit)] if args.train_limit else []
    return ["--data", data, "--input-size", str(SIZE), "--batch-size", str(args.batch_size),
            "--threads", str(args.threads), "--device", "cpu", *extra]


def cell_rows(args, model: str, data: str, seed: int, table_path: Path) -> list[dict]:
    """Train, prune, export and measure every method for one model × data × seed; one row per method."""
    from deploykit.latency.table import LatencyTable

    cell = args.runs / model / data / f"seed{seed}"
    base = cell / "baseline"
    weights = base / "model.pt"
    if not (base / "result.json").is_file() and cell.exists():
        shutil.rmtree(cell)  # everything in a cell derives from its baseline: never keep it across two
    walls = Walls(cell)
    table = LatencyTable.read(table_path)
    budget_ms = args.budget * table.predict(())
    common = train_argv(args, data)
    rows: dict[str, dict] = {m: {"method": m, "status": "ok", "notes": ""} for m in METHODS}
    commands: dict[str, str] = {}  # step label → the command as shown

    def step(method: str, label: str, argv: list[str], done: Path, **kw) -> bool:
        if rows[method]["status"] != "ok":
            return False
        try:
            commands[label] = run_step(argv, done=done, walls=walls, label=label, threads=args.threads, **kw)
            return True
        except StepFailed as error:
            say(f"  {error}")
            rows[method]["status"] = f"failed: {label}"
            return False

    def fail(methods: Sequence[str], reason: str) -> None:
        for m in methods:
            if rows[m]["status"] == "ok":
                rows[m]["status"] = reason

    say(f"== {model} on {data}, seed {seed}: budget {args.budget:g} × {table.predict(()):.3f} ms = "
        f"{budget_ms:.3f} ms (table prediction)")
    # 1. the baseline, and the original's ONNX file (the class count comes from its weights)
    ok = step("baseline", "baseline",
              ["deploykit", "train", "baseline", "--model", model, "--epochs", str(args.baseline_epochs),
               "--seed", str(seed), "--warmup-epochs", "0.5", *common, "--out", str(base)],
              base / "result.json")
    if not ok:
        fail(METHODS, "failed: baseline")
        return finish_rows(rows, model, data, seed, cell, walls, commands, table, budget_ms, args)
    step("baseline", "export_original", ["deploykit", "export", model, "--weights", str(weights), "--out",
                                          str(base / "original.onnx"), "--input-size", str(SIZE)],
         base / "original.onnx")
    # 2. the UPDP subnet
    search = cell / "search"
    search.mkdir(parents=True, exist_ok=True)
    proxy = f"sensitivity:{weights}" if args.proxy == "sensitivity" else "depth"
    data_args = ["--data", data, "--input-size", str(SIZE)] if args.proxy == "sensitivity" else []
    if not step("progressive", "search", ["deploykit", "search", "--table", str(table_path), "--budget",
                                          str(args.budget), "--proxy", proxy, *data_args, "--out",
                                          str(search / "subnet.json")], search / "subnet.json"):
        fail(("abrupt", "torch-pruning"), "failed: search")
    # 3. progressive and abrupt on that subnet; drop on its own set
    for method in ("progressive", "abrupt"):
        out = cell / method
        step(method, method, ["deploykit", "train", "subnet", "--subnet", str(search / "subnet.json"),
                              "--weights", str(weights), "--method", method, "--epochs", str(args.epochs),
                              "--seed", str(seed), *common, "--out", str(out)],
             out / "result.json", clean=out)
    try:
        choice = choose_drop(table, cell, weights, budget_ms=budget_ms, data=data, threads=args.threads,
                             walls=walls)
    except Exception as error:  # a bug or bad data here must not cost the other methods' results
        say(f"  choosing the drop set failed: {type(error).__name__}: {error}")
        choice = {"dropped": [], "predicted_ms": None, "fits": True}
        fail(("drop",), "failed: drop_choice")
    rows["drop"]["predicted_ms"] = choice["predicted_ms"]
    if not choice["fits"]:
        rows["drop"]["notes"] = "no drop set meets the budget: every shape-preserving block dropped"
    out = cell / "drop"
    step("drop", "drop", ["deploykit", "train", "subnet", "--model", model,
                          "--prune", ",".join(map(str, choice["dropped"])), "--weights", str(weights),
                          "--method", "drop",
                          "--epochs", str(args.epochs), "--seed", str(seed), *common, "--out", str(out)],
         out / "result.json", clean=out)
    # 4. exports of the depth-pruned models; Torch-Pruning matched to the progressive model's latency
    for method in DEPTH_METHODS:
        step(method, f"export_{method}",
             ["deploykit", "export", *merged_model(cell / method, method), "--out",
              str(cell / method / "model.onnx"), "--input-size", str(SIZE)],
             cell / method / "model.onnx")
    if rows["progressive"]["status"] != "ok":
        fail(("torch-pruning",), "failed: no progressive model to match")
    match, tp = cell / "tp_match", cell / "torch-pruning"
    step("torch-pruning", "tp_match",
         [str(BENCH / "tp_prune.py"), "match", "--weights", str(weights), "--reference",
          str(cell / "progressive" / "model.onnx"), "--target", TARGET, "--data", data,
          "--tolerance", str(args.tolerance), "--max-steps", str(args.match_steps), "--max-ratio",
          str(args.max_ratio), "--round-to", str(args.round_to), "--rounds", str(args.match_rounds),
          *protocol_args(args), "--out", str(match)],
         match / "result.json", clean=match)
    step("torch-pruning", "torch-pruning",
         [str(BENCH / "tp_prune.py"), "finetune", "--pruned", str(match / "pruned.safetensors"), "--weights",
          str(weights), "--data", data, "--epochs", str(args.epochs), "--seed", str(seed), "--threads",
          str(args.threads), "--batch-size", str(args.batch_size),
          *(["--train-limit", str(args.train_limit)] if args.train_limit else []), "--out", str(tp)],
         tp / "result.json", clean=tp)
    step("torch-pruning", "export_torch-pruning",
         ["deploykit", "export", *merged_model(tp, "torch-pruning"), "--out", str(tp / "model.onnx"),
          "--input-size", str(SIZE)],
         tp / "model.onnx")
    # 5. side by side: each final model against the same original, after all the training
    for method in (*DEPTH_METHODS, "torch-pruning"):
        folder = cell / method
        step(method, f"verify_{method}",
             ["deploykit", "verify", str(folder / "model.onnx"), "--target", TARGET, "--reference",
              str(base / "original.onnx"), "--torch", *merged_model(folder, method),
              "--rounds", str(args.rounds),
              *protocol_args(args), "--out", str(folder / "verify.json")],
             folder / "verify.json", ok_codes=(0, 1))
    return finish_rows(rows, model, data, seed, cell, walls, commands, table, budget_ms, args)


def merged_model(folder: Path, method: str) -> list[str]:
    """A method's final model for ``deploykit export`` / ``verify --torch``: the model file of a depth-pruned
    subnet; for Torch-Pruning, whose channel-pruned module no architecture record rebuilds, the
    whole-module pickle that ``tp_prune.py finetune`` wrote earlier in this run (``--unsafe-pickle``)."""
    if method == "torch-pruning":
        return [str(folder / "merged.pt"), "--unsafe-pickle"]
    return [str(folder / "merged.safetensors")]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def finish_rows(rows: dict[str, dict], model: str, data: str, seed: int, cell: Path, walls: Walls,
                commands: dict[str, str], table, budget_ms: float, args) -> list[dict]:
    """One row per method from the files the steps wrote (whatever exists; failed steps leave blanks)."""
    subnet = read_json(cell / "search" / "subnet.json")
    match = read_json(cell / "tp_match" / "result.json")
    choice = read_json(cell / "drop_choice.json")
    reference_ms = []
    for method, row in rows.items():
        folder = cell / method
        result = read_json(folder / "result.json")
        report = read_json(folder / "verify.json")
        latency = report.get("latency") or {}
        measured, reference = latency.get("model") or {}, latency.get("reference") or {}
        if reference:
            reference_ms.append(reference["median_ms"])
        row.update({"model": model, "data": data, "seed": seed,
                    "epochs": args.baseline_epochs if method == "baseline" else args.epochs,
                    "top1": result.get("top1" if method == "baseline" else "top1_merged"),
                    "params": result.get("params"), "macs": result.get("macs"),
                    "measured_ms": measured.get("median_ms"), "measured_cv": measured.get("cv"),
                    "reference_ms": reference.get("median_ms"), "speedup": report.get("speedup"),
                    "numerics_max_rel": (report.get("numerics") or {}).get("max_rel"),
                    "budget_ms": budget_ms, "wall_s": walls.get(method), "prep_wall_s": float("nan"),
                    "latency_table": shown([table.path]) if table.path else "",
                    "command": commands.get(method, ""), "prep_command": ""})
        row.setdefault("predicted_ms", None)
        if report.get("passed") is False:
            row["notes"] = "; ".join(filter(None, [row["notes"], "ONNX numerics vs PyTorch FAILED"]))
    both = statistics.median(reference_ms) if reference_ms else None
    rows["baseline"].update({"predicted_ms": table.predict(()), "budget_ms": None, "measured_ms": both,
                             "reference_ms": both, "speedup": 1.0 if both else None})
    for method in ("progressive", "abrupt"):
        rows[method].update({"pruned": ";".join(map(str, subnet.get("pruned", []))),
                             "predicted_ms": subnet.get("predicted_ms"), "prep_wall_s": walls.get("search"),
                             "prep_command": commands.get("search", "")})
    rows["drop"].update({"pruned": ";".join(map(str, choice.get("dropped", []))),
                         "prep_wall_s": walls.get("drop_choice"),
                         "prep_command": "in-process: drop set rule over the table (see the docstring)"})
    rows["torch-pruning"].update({
        "channel_ratio": match.get("ratio"), "top1_before_finetune": match.get("top1_before_finetune"),
        "match_relative": match.get("relative"), "match_within_tolerance": match.get("within_tolerance"),
        "match_steps": len(match.get("steps", [])) or None, "prep_wall_s": walls.get("tp_match"),
        "prep_command": commands.get("tp_match", "")})
    if match and not match.get("within_tolerance"):
        rows["torch-pruning"]["notes"] = (
            "channel pruning cannot reach the progressive model's latency at --max-ratio"
            if not match.get("reachable") else
            f"closest ratio gives {match['relative']:.3f}× the progressive model's latency, outside "
            f"±{match['tolerance']:.0%}")
    progressive = rows["progressive"].get("speedup")
    for row in rows.values():
        speedup = row["speedup"]
        row["latency_vs_progressive"] = progressive / speedup if progressive and speedup else None
    return list(rows.values())


# --- results -----------------------------------------------------------------------------------------

def environment(study_command: str) -> dict:
    import importlib.metadata as md

    from deploykit.measure.client import runtime_info
    from deploykit.targets import load_target

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "absent"

    info = runtime_info(load_target(TARGET))
    return {"machine": f"{platform.machine()} {info['device']}", "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": version("torch"), "timm": version("timm"),
            "onnxruntime": version("onnxruntime"), "torch_pruning": version("torch-pruning"),
            "deploykit": version("deploykit"), "target": TARGET,
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "study_command": study_command,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


COLUMNS = ["model", "data", "seed", "method", "status", "top1", "top1_before_finetune", "params", "macs",
           "measured_ms", "measured_cv", "reference_ms", "speedup", "latency_vs_progressive", "predicted_ms",
           "budget_ms", "pruned", "channel_ratio", "match_relative", "match_within_tolerance", "match_steps",
           "numerics_max_rel", "epochs", "wall_s", "prep_wall_s", "notes", "latency_table", "command",
           "prep_command"]


def merged_with_earlier(runs: pd.DataFrame, path: Path) -> pd.DataFrame:
    """This invocation's rows plus the earlier rows of the same run folder for cells not run now (a
    study run one model or data set at a time still ends in one file)."""
    if not path.is_file():
        return runs
    old = pd.read_csv(path)
    if "runs_dir" not in old:
        return runs
    now = set(zip(runs["model"], runs["data"], runs["seed"]))
    here = runs["runs_dir"].iloc[0]
    keep = [folder == here and cell not in now
            for folder, cell in zip(old["runs_dir"], zip(old["model"], old["data"], old["seed"]))]
    return pd.concat([old[keep], runs], ignore_index=True) if any(keep) else runs


def joined(values) -> str:
    """The distinct values, in order, joined by " | " (blank and missing ones left out)."""
    return " | ".join(dict.fromkeys(str(v) for v in values if pd.notna(v) and str(v) != ""))


ENVIRONMENT = ("machine", "cpus", "python", "torch", "timm", "onnxruntime", "torch_pruning", "deploykit",
               "target", "runs_dir", "study_command", "date")


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per model × data × method (finished rows only), with the environment."""
    ok = runs[runs["status"] == "ok"]
    grouped = ok.groupby(["model", "data", "method"], sort=False)
    summary = grouped.agg(n=("seed", "count"), epochs=("epochs", "first"),
                          top1_mean=("top1", "mean"), top1_std=("top1", "std"),
                          measured_ms_mean=("measured_ms", "mean"), measured_ms_std=("measured_ms", "std"),
                          speedup_mean=("speedup", "mean"), speedup_std=("speedup", "std"),
                          latency_vs_progressive_mean=("latency_vs_progressive", "mean"),
                          params_mean=("params", "mean"), macs_mean=("macs", "mean"),
                          predicted_ms=("predicted_ms", "mean"), budget_ms=("budget_ms", "first"),
                          pruned=("pruned", joined), channel_ratio_mean=("channel_ratio", "mean"),
                          wall_s_mean=("wall_s", "mean"), wall_s_std=("wall_s", "std"),
                          **{key: (key, joined) for key in ENVIRONMENT if key in ok})
    summary = summary.reset_index()
    top1 = [f"{m:.2f} ± {s:.2f}" if pd.notna(s) else f"{m:.2f}"
            for m, s in zip(summary["top1_mean"], summary["top1_std"])]
    summary.insert(4, "top1", top1)
    return summary.round(4)


def main(argv=None) -> int:
    args = parse_args(argv)
    study_command = shown([".venv/bin/python", "bench/accuracy_latency.py",
                           *(sys.argv[1:] if argv is None else argv)])
    if args.fresh and args.runs.exists():
        shutil.rmtree(args.runs)
    check_settings(args)
    started = time.perf_counter()
    rows = []
    for model in args.models:
        try:
            table = profile_table(args, model)
        except StepFailed as error:
            say(str(error))
            rows += [{"model": model, "data": data, "seed": seed, "method": method,
                      "status": "failed: profile"}
                     for data in args.data for seed in args.seeds for method in METHODS]
            continue
        for data in args.data:
            for seed in args.seeds:
                rows += cell_rows(args, model, data, seed, table)
    env = environment(study_command) | {"runs_dir": shown([args.runs])}
    runs = pd.DataFrame(rows)
    runs = runs.reindex(columns=COLUMNS + [c for c in runs if c not in COLUMNS]).assign(**env)
    args.results.mkdir(parents=True, exist_ok=True)
    runs_csv = args.results / "accuracy_latency_runs.csv"
    summary_csv = args.results / "accuracy_latency_summary.csv"
    runs = merged_with_earlier(runs, runs_csv)
    summary = summarize(runs)
    runs.to_csv(runs_csv, index=False, float_format="%.6g")
    summary.to_csv(summary_csv, index=False, float_format="%.6g")
    shown_cols = ["model", "data", "method", "n", "top1", "measured_ms_mean", "speedup_mean", "pruned",
                  "channel_ratio_mean"]
    print(summary[shown_cols].to_string(index=False))
    failed = runs[runs["status"] != "ok"]
    for _, row in failed.iterrows():
        say(f"not in the summary: {row['model']} {row['data']} seed {row['seed']} {row['method']}: "
            f"{row['status']}")
    print(f"wrote {runs_csv} and {summary_csv} ({time.perf_counter() - started:.0f} s)")
    return 0 if failed.empty else 1


if __name__ == "__main__":
    sys.exit(main())
