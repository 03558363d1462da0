"""Speed-up against pruned depth: merged subnets vs the original, measured side by side, on CPU runtimes.

For each model (convnext_tiny, resnet34, mobilenetv2_100, efficientnet_lite0, deit_tiny_patch16_224 at
224), batch (1, 8) and target (cpu-ort, cpu-openvino), and for k = 0, 3, 6, 9, … pruned blocks, plus the
most blocks the search ever prunes and all prunable blocks, this measures **the subnet the search
picks**: the depth proxy (:class:`deploykit.search.DepthProxy`: fewest pruned blocks, then the lowest
predicted latency) run by the search engine (:class:`deploykit.search.Searcher`, what ``search`` and
``pareto`` run) on the target's batch-1 table, for the budget ``table.predict(fastest k-subset)``. That
budget makes the search return exactly k blocks as long as the k-th block's merged form still saves
time by the table. Where it does not (resnet34's merged 5×5 and 3×3 convs are slower than the blocks they
replace, so the search never prunes one), the search answers with fewer blocks and the row takes the
fastest k-subset by the table instead, flagged ``picked_by_search = False`` (hollow markers on the plot):
the curve then shows what merging would cost there. Batch 8 uses the batch-1 subnets (no batch-8 tables
are shipped); its table prediction is filled in only where ``latency_tables/<target>/<model>_224_b8.csv``
exists (``--profile-missing`` first runs ``deploykit profile --target T --model M --batch 8`` in a
subprocess for each missing table: minutes per table).

Each subnet is built with seeded random weights (``torch.manual_seed(--seed)``; latency does not depend
on them), pruned, set to λ = 1, merged and exported to ONNX with the steps ``deploykit lut check`` takes
(:class:`deploykit.latency.subnets.SubnetMeasurer`); the reference is the unpruned model, exported the
same way. :func:`deploykit.verify.measure_interleaved` times subnet and reference alternately (S R S R …,
``--rounds`` each), every measurement in a fresh worker process under the measurement protocol; the
speed-up is the median over rounds of reference / subnet within a round: the machine's load drifts by
10–25 % between runs, a ratio taken within one round much less. The k = 0 row times the reference against
itself: its spread is the noise floor of the method. MACs (per image, :func:`deploykit.macs.count_macs`)
give the reference line: MAC ratio = original MACs / merged MACs.

Cross-check: on the openvino target at batch 1 (``--bapp-batches``), OpenVINO's own ``benchmark_app``
times the same ONNX files, each subnet (the largest k the search picks, and all blocks) against the
original, alternately, ``--rounds`` times each, in its own process, with the target's settings: ``-d CPU
-hint latency -api sync -infer_precision f32 -ip f32 -shape [1,3,224,224] -t 10``, and ``-nthreads`` where
the target fixes the threads (``-ip f32``: benchmark_app otherwise feeds image inputs as u8 through an
added conversion, which deploykit does not). Its median latency gives a second speed-up.

Writes, in ``--results`` (default ``bench/results``):

- ``speedup_depth.csv``: one row per (model, target, batch, k): the pruned blocks, MACs, the MAC ratio,
  the table's predicted latency and speed-up, the measured medians of subnet and reference (per round and
  overall), the per-round speed-ups, their median, min, max and the pooled cv of both sides, with the
  machine, the load average before/after, the versions, the protocol, the command and the UTC time;
- ``speedup_depth_benchmark_app.csv``: the cross-check, beside deploykit's figure for the same files;
- ``speedup_depth.png``: speed-up against k per model, one panel per target × batch; measured (median,
  whiskers min–max of the rounds), MAC ratio dashed, table prediction dotted.

The CSV is rewritten atomically after every row; rerunning skips rows already there with the same subnet,
protocol and rounds (``--fresh`` measures everything again). ``--quick`` is a smoke test (convnext_tiny,
cpu-ort, batch 1, k = 9 and 18, a short protocol, 2 rounds; under a minute) writing
``speedup_depth_quick.*`` so that it never mixes with the real results.

    .venv/bin/python bench/speedup_depth.py                  # the recorded study (~2 h on 2 quiet cores)
    .venv/bin/python bench/speedup_depth.py --quick          # a smoke test (< 1 min)
    .venv/bin/python bench/speedup_depth.py --models resnet34 --targets cpu-openvino --batches 1 --ks 0,16
    .venv/bin/python bench/speedup_depth.py --plot-only      # redraw the plot from the CSV
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import load_average, package_version  # noqa: E402
from deploykit import __version__  # noqa: E402
from deploykit.clock import utc_now  # noqa: E402
from deploykit.fileio import atomic_path, write_text_atomic  # noqa: E402
from deploykit.latency.identity import here_for, judge  # noqa: E402
from deploykit.latency.table import LatencyTable  # noqa: E402
from deploykit.progress import to_stderr  # noqa: E402
from deploykit.protocol import Protocol  # noqa: E402
from deploykit.runtimes.hostinfo import cpu_name  # noqa: E402
from deploykit.search import DepthProxy, Searcher  # noqa: E402
from deploykit.subnet import format_indices  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODELS = ("convnext_tiny", "resnet34", "mobilenetv2_100", "efficientnet_lite0", "deit_tiny_patch16_224")
TARGETS = ("cpu-ort", "cpu-openvino")
SIZE = (224, 224)
K_STEP = 3
QUICK_PROTOCOL = Protocol(warmup_s=0.1, warmup_iters=5, min_time_s=0.3, min_iters=10, max_repeats=1)
KEY = ("model", "target", "batch", "k")
Say = Callable[[str], None]


# --- which subnets -----------------------------------------------------------------------------------

def default_ks(n: int, reach: int | None = None, step: int = K_STEP) -> list[int]:
    """0, step, 2·step, … up to ``n`` prunable blocks, ``n`` itself and ``reach``, the most blocks the
    search ever prunes (:func:`search_reach`)."""
    return sorted({*range(0, n + 1, step), n, *([] if reach is None else [reach])})


def quick_ks(n: int) -> list[int]:
    """Half of the prunable blocks and all of them."""
    return sorted({n // 2, n})


def parse_ks(text: str) -> list[int] | None:
    """``auto`` → None (:func:`default_ks` per model); ``0,3,9`` → [0, 3, 9]."""
    if text.strip().lower() == "auto":
        return None
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks takes auto or integers such as 0,3,9, got {text!r}") from None
    if not ks or ks[0] < 0:
        raise argparse.ArgumentTypeError(f"--ks needs integers ≥ 0, got {text!r}")
    return ks


def search_reach(table: LatencyTable) -> int:
    """The most blocks the depth-proxy search prunes for any budget: those whose merged form saves time
    by the table (the smallest budget takes exactly them)."""
    return bin(Searcher(table, DepthProxy()).space.best_mask()).count("1")


@dataclass(frozen=True)
class Choice:
    """The subnet measured for one k."""

    k: int
    pruned: tuple[int, ...]
    picked_by_search: bool     # the depth-proxy search returns it for some budget


def choose_subnets(table: LatencyTable, ks: Iterable[int]) -> list[Choice]:
    """For each k (up to the number of prunable blocks), the subnet the depth-proxy search picks for the
    budget of the fastest k-subset, or that subset where the search reaches the budget with fewer blocks."""
    searcher = Searcher(table, DepthProxy())
    space = searcher.space
    order = sorted(range(space.bits), key=lambda j: (-space.savings[j], j))  # biggest saving first
    choices = []
    for k in ks:
        if k > space.bits:
            continue
        fastest = tuple(sorted(space.candidates[j] for j in order[:k]))
        solution = searcher.solve(table.predict(fastest))
        picked = space.pruned(solution.mask)
        chosen = picked if len(picked) == k else fastest
        choices.append(Choice(k, chosen, len(picked) == k))
    return choices


def table_file(model: str, target: str, batch: int) -> Path:
    """Where ``deploykit profile`` puts the measured table (``default_table_path``), under the repo."""
    size = str(SIZE[0]) if SIZE[0] == SIZE[1] else f"{SIZE[0]}x{SIZE[1]}"
    return ROOT / "latency_tables" / target / f"{model}_{size}_b{batch}.csv"


# --- benchmark_app -----------------------------------------------------------------------------------

_BAPP_FIGURES = {"median_ms": r"Median:\s*([\d.]+)\s*ms", "average_ms": r"Average:\s*([\d.]+)\s*ms",
                 "min_ms": r"Min:\s*([\d.]+)\s*ms", "max_ms": r"Max:\s*([\d.]+)\s*ms",
                 "count": r"Count:\s*(\d+)\s*iterations", "duration_ms": r"Duration:\s*([\d.]+)\s*ms",
                 "fps": r"Throughput:\s*([\d.]+)\s*FPS"}
_BAPP_PROPERTIES = ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT",
                    "ENABLE_CPU_PINNING")


def parse_benchmark_app(text: str) -> dict[str, Any]:
    """Figures from ``benchmark_app``'s report: median/average/min/max latency (ms), count, duration,
    FPS, its OpenVINO build and the compiled model's properties. A missing median is a ValueError."""
    found: dict[str, Any] = {}
    for name, pattern in _BAPP_FIGURES.items():
        match = re.search(pattern, text)
        found[name] = (int if name == "count" else float)(match.group(1)) if match else math.nan
    if math.isnan(found["median_ms"]):
        raise ValueError("no 'Median: … ms' latency in the benchmark_app output")
    build = re.search(r"Build \.+ (\S+)", text)
    found["build"] = build.group(1) if build else ""
    properties = {}
    for name in _BAPP_PROPERTIES:
        match = re.search(rf"^\[ INFO \]\s+{name}: (.+)$", text, re.MULTILINE)
        if match:
            properties[name] = match.group(1).strip()
    found["properties"] = properties
    return found


def benchmark_app_command(executable: str | Path, onnx: Path, *, target, shape: Sequence[int],
                          seconds: float, threads: int | None) -> list[str]:
    """``benchmark_app`` with the target's settings: device, latency hint, sync API, precision, f32 input,
    the static shape, the duration, and the thread count where one is fixed."""
    from deploykit.runtimes.openvino_backend import PRECISION_HINT

    command = [str(executable), "-m", str(onnx), "-d", target.runtime_device or "CPU", "-hint", "latency",
               "-api", "sync", "-infer_precision", PRECISION_HINT[target.precision], "-ip", "f32",
               "-shape", "[" + ",".join(map(str, shape)) + "]", "-t", f"{seconds:g}"]
    if threads:
        command += ["-nthreads", str(threads)]
    return command


def find_benchmark_app() -> str | None:
    beside = Path(sys.executable).parent / "benchmark_app"
    return str(beside) if beside.is_file() else shutil.which("benchmark_app")


def run_benchmark_app(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"benchmark_app failed (exit {done.returncode}): {' | '.join(tail)}")
    return parse_benchmark_app(done.stdout + "\n" + done.stderr)


# --- statistics and rows -------------------------------------------------------------------------------

def spread(ratios: Sequence[float]) -> dict[str, float]:
    """Median, min and max of per-round speed-ups."""
    if not ratios:
        return {"speedup": math.nan, "speedup_min": math.nan, "speedup_max": math.nan}
    return {"speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios)}


def same_value(a: Any, b: Any) -> bool:
    """Equal as numbers where both read as numbers (a CSV turns 10.0 into 10), else as text."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def numbers(values: Iterable[float]) -> str:
    return " ".join(f"{v:.4f}" for v in values)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """What every row records about the machine, the software and the run."""
    shown = Path(sys.argv[0]).resolve()
    script = str(shown.relative_to(ROOT)) if shown.is_relative_to(ROOT) else str(shown)
    return {"machine": f"{platform.machine()} {cpu_name()}", "platform": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": package_version("torch"),
            "timm": package_version("timm"), "onnxruntime": package_version("onnxruntime"),
            "openvino": package_version("openvino"), "deploykit": __version__,
            "weights": f"random, torch.manual_seed({args.seed})",
            "command": shlex.join(["python", script, *sys.argv[1:]])}


class Results:
    """One CSV of rows keyed by (model, target, batch, k), rewritten atomically after every change."""

    def __init__(self, path: Path, *, fresh: bool):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file() and not fresh:
            self.rows = pd.read_csv(path, keep_default_na=False, dtype=str).to_dict("records")

    def find(self, key: dict[str, Any]) -> dict[str, Any] | None:
        for row in self.rows:
            if all(str(row.get(name)) == str(key[name]) for name in KEY):
                return row
        return None

    def done(self, key: dict[str, Any], **same: Any) -> bool:
        """A row for ``key`` exists and agrees on every ``same`` column (subnet, protocol, rounds)."""
        row = self.find(key)
        return row is not None and all(same_value(row.get(name), value) for name, value in same.items())

    def put(self, row: dict[str, Any]) -> None:
        old = self.find(row)
        if old is not None:
            self.rows.remove(old)
        self.rows.append(row)
        frame = pd.DataFrame(self.rows)
        write_text_atomic(self.path, frame.to_csv(index=False, float_format="%.6g"))


# --- building and exporting subnets -------------------------------------------------------------------

class ModelFiles:
    """One model at one batch: merged subnets exported to ONNX (cached by pruned set) and their MACs.

    Built as ``deploykit lut check`` builds its subnets (SubnetMeasurer): prune, λ = 1, merge, export."""

    def __init__(self, name: str, *, seed: int, work: Path, say: Say):
        import torch

        from deploykit.models import create_model
        from deploykit.prune import prunable

        torch.manual_seed(seed)
        say(f"building {name} at {SIZE[0]}x{SIZE[1]} (random weights, seed {seed})")
        module = create_model(name, input_size=SIZE)
        self.net = prunable(module.eval(), input_size=SIZE).eval()
        self.name, self.work, self.say = name, work, say
        self._files: dict[tuple[tuple[int, ...], int], Path] = {}
        self._macs: dict[tuple[int, ...], int] = {}

    def _merged(self, pruned: tuple[int, ...]):
        self.net.prune(pruned)
        if pruned:
            self.net.set_progress(1.0)
        return self.net.eval().merge()

    def macs(self, pruned: tuple[int, ...]) -> int:
        from deploykit.macs import count_macs

        if pruned not in self._macs:
            self._macs[pruned] = count_macs(self._merged(pruned), (3, *SIZE))
        return self._macs[pruned]

    def onnx(self, pruned: tuple[int, ...], batch: int) -> Path:
        from deploykit.export import export_onnx

        if (pruned, batch) not in self._files:
            path = self.work / f"{self.name}_b{batch}_pruned-{'-'.join(map(str, pruned)) or 'none'}.onnx"
            began = time.perf_counter()
            export_onnx(self._merged(pruned), (batch, 3, *SIZE), path)
            self.say(f"  exported {path.name} ({path.stat().st_size / 2**20:.0f} MiB, "
                     f"{time.perf_counter() - began:.0f} s)")
            self._files[pruned, batch] = path
        return self._files[pruned, batch]

    def drop(self, batch: int) -> None:
        """Delete the files of one batch (a full run would otherwise keep gigabytes)."""
        for (pruned, b), path in list(self._files.items()):
            if b == batch:
                path.unlink(missing_ok=True)
                del self._files[pruned, b]


# --- the study --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    models: list[str]
    targets: list[str]
    batches: list[int]
    ks: list[int] | None          # None: default_ks per model and target (quick_ks under --quick)
    rounds: int
    protocol: Protocol
    stem: str


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(models=args.models or (["convnext_tiny"] if quick else list(MODELS)),
                targets=args.targets or (["cpu-ort"] if quick else list(TARGETS)),
                batches=args.batches or ([1] if quick else [1, 8]),
                ks=args.ks, rounds=args.rounds or (2 if quick else 3),
                protocol=QUICK_PROTOCOL if quick else Protocol(),
                stem="speedup_depth_quick" if quick else "speedup_depth")


def profile_missing(plan: Plan, say: Say) -> None:
    """Run ``deploykit profile`` for every table the plan needs that does not exist yet."""
    for model in plan.models:
        for target in plan.targets:
            for batch in sorted({1, *plan.batches}):
                if table_file(model, target, batch).is_file():
                    continue
                command = [sys.executable, "-m", "deploykit.cli", "profile", "--target", target,
                           "--model", model, "--batch", str(batch)]
                say("$ deploykit " + shlex.join(command[3:]))
                done = subprocess.run(command, cwd=ROOT, check=False)
                if done.returncode != 0:
                    say(f"  profile failed (exit {done.returncode}); that table stays missing")


def measure_model(model: str, plan: Plan, args, results: Results, bapp: Results | None, env: dict,
                  say: Say) -> int:
    """Every row of one model; returns the number of rows measured now."""
    from deploykit.latency.identity import with_table_settings
    from deploykit.targets import load_target

    # each target with the run settings its table was measured with (a table is used only with those)
    targets = {name: with_table_settings(load_target(name), LatencyTable.read(table_file(model, name, 1)))
               for name in plan.targets}
    choices = {}
    for name in plan.targets:
        table = LatencyTable.read(table_file(model, name, 1))
        n = len(table.prunable_indices)
        ks = plan.ks or (quick_ks(n) if args.quick else default_ks(n, search_reach(table)))
        choices[name] = (table, choose_subnets(table, ks))
    pending = [c for batch in plan.batches for name in plan.targets for c in choices[name][1]
               if not results.done(_key(model, name, batch, c.k), **_same(c, plan))]
    if bapp is not None:
        pending += [c for batch in plan.batches for name in plan.targets
                    if targets[name].runtime == "openvino" and batch in args.bapp_batches
                    for c in bapp_points(choices[name][1], args)
                    if not bapp.done(_key(model, name, batch, c.k), **_bapp_same(c, plan, args))]
    if not pending:
        say(f"{model}: every row is in {results.path.name} already (--fresh measures again)")
        return 0
    measured = 0
    with tempfile.TemporaryDirectory(prefix="speedup_depth-") as work:
        files = ModelFiles(model, seed=args.seed, work=Path(work), say=say)
        for batch in plan.batches:
            for name in plan.targets:
                table, chosen = choices[name]
                for choice in chosen:
                    key = _key(model, name, batch, choice.k)
                    if results.done(key, **_same(choice, plan)):
                        continue
                    results.put(measure_row(files, targets[name], table, choice, batch, plan, env, say))
                    measured += 1
                if bapp is not None and targets[name].runtime == "openvino" and batch in args.bapp_batches:
                    cross_check(files, targets[name], chosen, batch, plan, args, results, bapp, env, say)
            files.drop(batch)
    return measured


def _key(model: str, target: str, batch: int, k: int) -> dict[str, Any]:
    return {"model": model, "target": target, "batch": batch, "k": k}


def _same(choice: Choice, plan: Plan) -> dict[str, Any]:
    return {"pruned": format_indices(choice.pruned), "rounds": plan.rounds,
            "protocol": json.dumps(plan.protocol.as_dict(), sort_keys=True)}


def batch_prediction(model: str, target, batch: int, pruned: tuple[int, ...],
                     device: dict[str, str]) -> dict[str, Any]:
    """The prediction of the table for this batch, where one exists, and how it differs from here."""
    path = table_file(model, target.name, batch)
    blank = {"predict_table": "", "table_calibrated": "", "table_reference_ms": math.nan,
             "table_predicted_ms": math.nan, "predicted_speedup": math.nan, "table_mismatch": ""}
    if not path.is_file():
        return blank
    table = LatencyTable.read(path)
    if not table.meta.complete:
        return blank | {"predict_table": str(path.relative_to(ROOT)), "table_mismatch": "incomplete table"}
    differences = table.check_matches(target=target, batch=batch, input_size=SIZE, allow_mismatch=True)
    differences += judge(table, here_for(table.meta)).differences  # another machine: what differs
    reference, predicted = table.predict(()), table.predict(pruned)
    return {"predict_table": str(path.relative_to(ROOT)),
            "table_calibrated": table.meta.calibration is not None,
            "table_reference_ms": reference, "table_predicted_ms": predicted,
            "predicted_speedup": reference / predicted, "table_mismatch": "; ".join(differences)}


def measure_row(files: ModelFiles, target, table: LatencyTable, choice: Choice, batch: int, plan: Plan,
                env: dict, say: Say) -> dict[str, Any]:
    from deploykit.measure.client import runtime_info
    from deploykit.verify import measure_interleaved

    head = f"[{files.name} {target.name} b{batch}] k={choice.k}"
    say(f"{head}: pruned {format_indices(choice.pruned) or 'none'}"
        f"{'' if choice.picked_by_search else ' (beyond the search: fastest k-subset by the table)'}")
    device = runtime_info(target)
    reference = files.onnx((), batch)
    subnet = files.onnx(choice.pruned, batch) if choice.pruned else reference
    macs_original, macs_merged = files.macs(()), files.macs(choice.pruned)
    load_before, began = load_average(), time.perf_counter()
    shape = (batch, 3, *SIZE)
    latency = measure_interleaved(subnet, reference, target=target, protocol=plan.protocol, input_shape=shape,
                                  rounds=plan.rounds, progress=lambda line: say(f"  {line}"))
    model, ref = latency["model"], latency["reference"]
    figures = spread(latency["round_speedups"])
    prediction = batch_prediction(files.name, target, batch, choice.pruned, device)
    table_says = prediction["predicted_speedup"]
    say(f"{head}: {model['median_ms']:.3f} ms vs {ref['median_ms']:.3f} ms → speed-up "
        f"{figures['speedup']:.3f}× (rounds {numbers(latency['round_speedups'])}); table "
        f"{'–' if math.isnan(table_says) else f'{table_says:.3f}×'}, MACs {macs_original / macs_merged:.3f}× "
        f"[{time.perf_counter() - began:.0f} s]")
    return {**_key(files.name, target.name, batch, choice.k), "n_blocks": len(table.prunable_indices),
            "pruned": format_indices(choice.pruned), "picked_by_search": choice.picked_by_search,
            "subnet_table": str(table.path.relative_to(ROOT)) if table.path else "",
            "macs_original": macs_original, "macs_merged": macs_merged,
            "mac_ratio": macs_original / macs_merged, **prediction,
            "model_ms": model["median_ms"], "reference_ms": ref["median_ms"],
            "model_round_ms": numbers(model["round_medians_ms"]),
            "reference_round_ms": numbers(ref["round_medians_ms"]),
            "round_speedups": numbers(latency["round_speedups"]), **figures,
            "model_cv": model["cv"], "reference_cv": ref["cv"],
            "model_n": model["n"], "reference_n": ref["n"],
            "rounds": plan.rounds, "protocol": json.dumps(plan.protocol.as_dict(), sort_keys=True),
            "device": device["device"], "runtime": device["runtime"],
            "runtime_version": device["runtime_version"], "load_before": load_before,
            "load_after": load_average(), "wall_s": round(time.perf_counter() - began, 1), **env,
            "date": utc_now()}


def bapp_points(chosen: list[Choice], args) -> list[Choice]:
    """The subnets to cross-check: the largest k the search picks and the largest k of all (or
    ``--bapp-ks``); k = 0 has nothing to compare."""
    if args.bapp_ks is not None:
        ks = set(args.bapp_ks)
    else:
        picked = [c.k for c in chosen if c.picked_by_search]
        ks = {max(c.k for c in chosen), *([max(picked)] if picked else [])}
    return [c for c in chosen if c.k in ks and c.pruned]


def _bapp_same(choice: Choice, plan: Plan, args) -> dict[str, Any]:
    return {"pruned": format_indices(choice.pruned), "rounds": plan.rounds, "seconds": args.bapp_time}


def cross_check(files: ModelFiles, target, chosen: list[Choice], batch: int, plan: Plan, args,
                results: Results, bapp: Results, env: dict, say: Say) -> None:
    """benchmark_app on each :func:`bapp_points` subnet and the original, alternately, ``rounds`` times."""
    executable = find_benchmark_app()
    if executable is None:
        say("benchmark_app not found beside this Python or on PATH: no cross-check")
        return
    threads = plan.protocol.resolve_threads(target.threads)
    shape = (batch, 3, *SIZE)
    for choice in bapp_points(chosen, args):
        key = _key(files.name, target.name, batch, choice.k)
        same = _bapp_same(choice, plan, args)
        if bapp.done(key, **same):
            continue
        ours = results.find(key)
        subnet, reference = files.onnx(choice.pruned, batch), files.onnx((), batch)
        load_before, began = load_average(), time.perf_counter()
        runs: dict[str, list[dict[str, Any]]] = {"model": [], "reference": []}
        for index in range(plan.rounds):
            for role, path in (("model", subnet), ("reference", reference)):
                command = benchmark_app_command(executable, path, target=target, shape=shape,
                                                seconds=args.bapp_time, threads=threads)
                result = run_benchmark_app(command)
                runs[role].append(result)
                say(f"  benchmark_app round {index + 1}/{plan.rounds}: {role} {result['median_ms']:.3f} ms "
                    f"median ({result['count']} iterations)")
        ratios = [r["median_ms"] / m["median_ms"] for m, r in zip(runs["model"], runs["reference"])]
        figures = spread(ratios)
        ours_speedup = float(ours["speedup"]) if ours else math.nan
        say(f"[{files.name} {target.name} b{batch}] k={choice.k}: benchmark_app {figures['speedup']:.3f}× "
            f"(rounds {numbers(ratios)}), deploykit {ours_speedup:.3f}×")
        shown = shlex.join(["benchmark_app", *command[1:2], "MODEL.onnx", *command[3:]])
        bapp.put({**key, **same, "model_ms": statistics.median(r["median_ms"] for r in runs["model"]),
                  "reference_ms": statistics.median(r["median_ms"] for r in runs["reference"]),
                  "model_round_ms": numbers(r["median_ms"] for r in runs["model"]),
                  "reference_round_ms": numbers(r["median_ms"] for r in runs["reference"]),
                  "round_speedups": numbers(ratios), **figures,
                  "model_iterations": sum(r["count"] for r in runs["model"]),
                  "reference_iterations": sum(r["count"] for r in runs["reference"]),
                  "deploykit_speedup": ours_speedup,
                  "deploykit_model_ms": float(ours["model_ms"]) if ours else math.nan,
                  "deploykit_reference_ms": float(ours["reference_ms"]) if ours else math.nan,
                  "speedup_ratio": figures["speedup"] / ours_speedup,
                  "openvino_build": runs["model"][0]["build"],
                  "properties": json.dumps(runs["model"][0]["properties"], sort_keys=True),
                  "benchmark_app_command": shown, "load_before": load_before, "load_after": load_average(),
                  "wall_s": round(time.perf_counter() - began, 1), **env,
                  "date": utc_now()})


# --- the plot -------------------------------------------------------------------------------------------

def plot(frame: pd.DataFrame, path: Path) -> None:
    """Speed-up against k per model, one panel per target × batch; MAC ratio dashed, table dotted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = frame.copy()
    for column in ("batch", "k"):
        frame[column] = pd.to_numeric(frame[column])
    for column in ("speedup", "speedup_min", "speedup_max", "mac_ratio", "predicted_speedup"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["picked"] = frame["picked_by_search"].astype(str) == "True"
    panels = sorted({(t, int(b)) for t, b in zip(frame["target"], frame["batch"])})
    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(6.2 * columns, 4.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    models = list(dict.fromkeys(frame["model"]))
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    for number, (target, batch) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, number + 1)
        axes.axhline(1.0, color="0.6", linewidth=0.8)
        for model in models:
            part = frame[(frame["model"] == model) & (frame["target"] == target) & (frame["batch"] == batch)]
            part = part.sort_values("k")
            if part.empty:
                continue
            color, ks = colors[model], part["k"].to_numpy()
            errors = np.vstack([part["speedup"] - part["speedup_min"], part["speedup_max"] - part["speedup"]])
            axes.errorbar(ks, part["speedup"], yerr=np.clip(errors, 0, None), color=color, linewidth=1.4,
                          capsize=2, label=model)
            axes.scatter(ks, part["speedup"], color=color, s=22, zorder=3,
                         facecolors=[color if p else "white" for p in part["picked"]])
            axes.plot(ks, part["mac_ratio"], color=color, linestyle="--", linewidth=0.9)
            if part["predicted_speedup"].notna().any():
                axes.plot(ks, part["predicted_speedup"], color=color, linestyle=":", linewidth=1.0)
        axes.set(xlabel="pruned blocks k", ylabel="speed-up over the original (×)",
                 title=f"{target}, batch {batch}, {SIZE[0]}×{SIZE[1]}")
        axes.legend(fontsize=7, loc="upper left", title="measured; -- MACs; ··· table", title_fontsize=7)
    device = frame["machine"].iloc[0] if "machine" in frame else ""
    figure.suptitle(f"merged subnet vs original on {device}: median of interleaved rounds, "
                    "whiskers min–max;\nfilled: the search's pick, hollow: beyond what the search prunes",
                    fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


# --- main -------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", help=f"timm models (default: {' '.join(MODELS)})")
    p.add_argument("--targets", nargs="+", help=f"targets (default: {' '.join(TARGETS)})")
    p.add_argument("--batches", nargs="+", type=int, help="batch sizes (default: 1 8)")
    p.add_argument("--ks", type=parse_ks, default=None, metavar="auto|K,K,…",
                   help=f"pruned-block counts (default auto: 0, {K_STEP}, {2 * K_STEP}, …, the most the "
                        "search prunes, and all blocks)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per row (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the random weights")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: convnext_tiny, cpu-ort, batch 1, k = n/2 and n, short protocol, "
                        "2 rounds (options given explicitly still apply); writes speedup_depth_quick.*")
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: bench/results)")
    p.add_argument("--fresh", action="store_true", help="measure every row again (default: resume)")
    p.add_argument("--profile-missing", action="store_true",
                   help="first run `deploykit profile` for the tables that are missing (batch 8: long)")
    p.add_argument("--no-benchmark-app", action="store_true", help="skip the benchmark_app cross-check")
    p.add_argument("--bapp-time", type=float, default=None, help="benchmark_app -t seconds (default: 10; "
                                                                   "--quick: 2)")
    p.add_argument("--bapp-ks", type=parse_ks, default=None, metavar="K,K,…",
                   help="ks to cross-check with benchmark_app (default: the largest the search picks, "
                        "and all blocks)")
    p.add_argument("--bapp-batches", nargs="+", type=int, default=[1],
                   help="batches to cross-check (default: 1)")
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from the CSV and exit")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be ≥ 1")
    if args.bapp_time is None:
        args.bapp_time = 2.0 if args.quick else 10.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)

    say = to_stderr

    csv = args.results / f"{plan.stem}.csv"
    png = args.results / f"{plan.stem}.png"
    if args.plot_only:
        plot(pd.read_csv(csv), png)
        print(f"wrote {png}")
        return 0
    if args.profile_missing:
        profile_missing(plan, say)
    from deploykit.runtimes import availability
    from deploykit.targets import load_target

    for name in plan.targets:
        ok, reason = availability(load_target(name))
        if not ok:
            say(f"target {name} is not available here: {reason}")
            return 1
    missing = [str(table_file(m, t, 1).relative_to(ROOT)) for m in plan.models for t in plan.targets
               if not table_file(m, t, 1).is_file()]
    if missing:
        say(f"no batch-1 table to choose the subnets from: {', '.join(missing)} (--profile-missing)")
        return 1
    results = Results(csv, fresh=args.fresh)
    bapp = None if args.no_benchmark_app else Results(args.results / f"{plan.stem}_benchmark_app.csv",
                                                        fresh=args.fresh)
    env = environment(args)
    say(f"{len(plan.models)} model(s) × {len(plan.targets)} target(s) × batches {plan.batches}, "
        f"{plan.rounds} interleaved rounds, protocol {plan.protocol.as_dict()}; load {load_average()}")
    started, measured = time.perf_counter(), 0
    for model in plan.models:
        measured += measure_model(model, plan, args, results, bapp, env, say)
    say(f"measured {measured} row(s) in {(time.perf_counter() - started) / 60:.1f} min")
    if not results.rows:
        say("nothing was measured")
        return 1
    plot(pd.DataFrame(results.rows), png)
    written = [csv, png] + ([bapp.path] if bapp is not None and bapp.rows else [])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
