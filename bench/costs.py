"""What `deploykit run` costs in wall time with its defaults.

- **run** (``--run``): ``deploykit run --out runs/bench_demo --fresh`` — the embedded demo (convnext_atto,
  mnist5k, 32×32, cpu-ort) from nothing — timed end to end, with each stage's seconds from its
  ``run.json``, and its speed-vs-accuracy table copied to ``bench/results/demo_table.md``.
  ``--quick`` runs the demo on tiny settings instead (digits, 1 epoch each, short protocol).
- Profiling a table costs what ``bench/profile_tables.py`` records; the search's cost is
  ``bench/search_speed.py``.

Writes ``bench/results/run_costs.csv`` (one row per call, with
the machine, versions, load average and command), appending to earlier rows.

    .venv/bin/python bench/costs.py --run                 # the demo pipeline's wall time (~5-10 min)
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
QUICK_RUN = ["--data", "digits", "--train-limit", "256", "--val-limit", "128", "--baseline-epochs", "1",
             "--supernet-epochs", "1", "--subnet-epochs", "1", "--proxy-val-limit", "64", "--rounds", "1",
             "--min-time", "0.1", "--warmup-time", "0.05", "--max-repeats", "1"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="store_true", help="time `deploykit run` with its defaults from nothing")
    p.add_argument("--quick", action="store_true", help="--run on tiny settings")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.run:
        p.error("choose --run")
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
    if args.run:
        append(run_costs(args, info), quick_dir / "run_costs.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
