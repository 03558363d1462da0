"""What deploykit costs in wall time: profiling each table, and `deploykit run` with its defaults.

- **profile** (``--profile``): reruns ``deploykit profile --target T --model M --force`` for each shipped
  table (default: the 5 benchmark models on cpu-ort and cpu-openvino at 224, batch 1), in a fresh
  process, and records its wall time (isolated entries, end-to-end fit and held-out check included),
  entries, the spread of its entries, the subnets measured end to end and the held-out figures the
  profile stored. This re-measures the shipped tables in ``latency_tables/`` (``bench/lut_fidelity.py``
  then reports them, as ``make bench`` does).
- **run** (``--run``): ``deploykit run --out runs/bench_demo --fresh`` — the embedded demo (convnext_atto,
  mnist5k, 32×32, cpu-ort) from nothing — timed end to end, with each stage's seconds from its
  ``run.json``, and its speed-vs-accuracy table copied to ``bench/results/demo_table.md``.
  ``--quick`` runs the demo on tiny settings instead (digits, 1 epoch each, short protocol).
- The search's cost is ``bench/search_speed.py``.

Writes ``bench/results/profile_costs.csv`` and ``bench/results/run_costs.csv`` (one row per call, with
the machine, versions, load average and command), appending to earlier rows.

    .venv/bin/python bench/costs.py --run                 # the demo pipeline's wall time (~5-10 min)
    .venv/bin/python bench/costs.py --profile             # re-profile the 10 benchmark tables (< 50 min)
    .venv/bin/python bench/costs.py --run --quick         # a smoke run (~1-2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODELS = ("convnext_tiny", "resnet34", "mobilenetv2_100", "efficientnet_lite0", "deit_tiny_patch16_224")
TARGETS = ("cpu-ort", "cpu-openvino")
QUICK_RUN = ["--data", "digits", "--train-limit", "256", "--val-limit", "128", "--baseline-epochs", "1",
             "--supernet-epochs", "1", "--subnet-epochs", "1", "--proxy-val-limit", "64", "--rounds", "1",
             "--min-time", "0.1", "--warmup-time", "0.05", "--max-repeats", "1"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", action="store_true", help="re-profile the benchmark tables, timed")
    p.add_argument("--run", action="store_true", help="time `deploykit run` with its defaults from nothing")
    p.add_argument("--quick", action="store_true", help="--run on tiny settings; --profile on one table")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--targets", nargs="+", default=list(TARGETS))
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not (args.profile or args.run):
        p.error("choose --profile and/or --run")
    return args


def machine() -> dict:
    import onnxruntime
    import torch

    return {"machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__}


def timed(command: list[str]) -> tuple[float, str, tuple[float, float]]:
    """Run ``deploykit`` ``command`` in a fresh process from the repository root; stderr streams through."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deploykit.cli", *command], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"deploykit {shlex.join(command)} failed with exit {done.returncode}")
    return wall, done.stdout, (load, os.getloadavg()[0])


def profile_costs(args, info: dict) -> list[dict]:
    rows = []
    pairs = [(t, m) for t in args.targets for m in args.models]
    for target, model in pairs[:1] if args.quick else pairs:
        out = ["--out", f"{args.results}/quick/{model}_224_b1.csv"] if args.quick else []
        command = ["profile", "--target", target, "--model", model, "--force", *out]
        print(f"== deploykit {shlex.join(command)}", file=sys.stderr, flush=True)
        wall, _, load = timed(command)
        table = Path(out[1]) if out else ROOT / "latency_tables" / target / f"{model}_224_b1.csv"
        frame = pd.read_csv(table)
        meta = json.loads(table.with_suffix(".meta.json").read_text())
        fidelity = meta.get("fidelity") or {}
        fitted = (meta.get("predictor") or {}).get("fit", {})
        rows.append({"target": target, "model": model, "entries": len(frame), "wall_s": round(wall, 1),
                     "fit_subnets": fitted.get("points"), "heldout_subnets": fidelity.get("n"),
                     "heldout_spearman": fidelity.get("spearman"),
                     "heldout_within_5": fidelity.get("within_5"), "heldout_mape_pct": fidelity.get("mape"),
                     "heldout_max_error_pct": fidelity.get("max_error"),
                     "profile_s": round(meta.get("profile_s", float("nan")), 1),
                     "cv_median": round(float(frame["cv"].median()), 3),
                     "cv_p90": round(float(frame["cv"].quantile(0.9)), 3),
                     "load_start": round(load[0], 2), "load_end": round(load[1], 2), "table": str(table),
                     "command": "deploykit " + shlex.join(command), **info, "date": _now()})
        print(f"   {len(frame)} entries in {wall:.0f} s", file=sys.stderr, flush=True)
    return rows


def run_costs(args, info: dict) -> list[dict]:
    out = ROOT / "runs" / ("bench_demo_quick" if args.quick else "bench_demo")
    command = ["run", "--out", str(out.relative_to(ROOT)), "--fresh", *(QUICK_RUN if args.quick else [])]
    print(f"== deploykit {shlex.join(command)}", file=sys.stderr, flush=True)
    wall, stdout, load = timed(command)
    state = json.loads((out / "run.json").read_text())
    stages = {name: entry["seconds"] for name, entry in state["stages"].items()}
    if not args.quick:
        shutil.copyfile(out / "table.md", args.results / "demo_table.md")
        shutil.copyfile(out / "pareto.png", args.results / "demo_pareto.png")
    print(stdout, end="")
    return [{"mode": "quick" if args.quick else "defaults", "wall_s": round(wall, 1),
             "stages_s": round(sum(stages.values()), 1), **{f"s_{k}": v for k, v in stages.items()},
             "load_start": round(load[0], 2), "load_end": round(load[1], 2),
             "command": "deploykit " + shlex.join(command), **info, "date": _now()}]


def append(rows: list[dict], path: Path) -> None:
    frame = pd.DataFrame(rows)
    if path.exists():
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    print(f"wrote {path}", file=sys.stderr)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def main(argv=None) -> int:
    args = parse_args(argv)
    info = machine()
    quick_dir = args.results / "quick" if args.quick else args.results
    if args.profile:
        append(profile_costs(args, info), quick_dir / "profile_costs.csv")
    if args.run:
        append(run_costs(args, info), quick_dir / "run_costs.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
