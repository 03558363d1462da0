"""Paired or unpaired end-to-end points: which gives the table's predictor the lower held-out error?

For each table (default: the demo's convnext_atto 32 and mobilenetv2_100 224 on cpu-ort, convnext_tiny
224 on cpu-openvino) this copies the shipped table (its isolated entries and metadata, not its
end-to-end points) into two scratch folders and resumes a profile on each, which measures only the
end-to-end phase again — the designed and random fit subnets and the held-out ones, each in fresh
processes — once as today (``unpaired``: every subnet alone in its process) and once with
``deploykit profile --paired`` (each subnet timed as a ratio to the unpruned model in the same process;
its ms = ratio × the unpruned model's median over the phase's processes). The two runs of a table go
one after the other, their order alternating from table to table, so both see the same machine.

Per table and mode it records the held-out figures the profile stores (ρ, τ, share within ±5 % and
±10 %, MAPE, max error), the unpruned model's repeatability over its fresh processes, the wall time,
the run settings and the load average; writes ``bench/results/paired_endtoend.csv`` (atomically) and
prints a table.

    .venv/bin/python bench/paired_endtoend.py
    .venv/bin/python bench/paired_endtoend.py --tables latency_tables/cpu-ort/resnet34_224_b1.csv
    .venv/bin/python bench/paired_endtoend.py --quick     # the 32×32 table only, 4 held-out subnets
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.budget_compliance import environment  # noqa: E402
from deploykit.fileio import write_text_atomic  # noqa: E402
from deploykit.latency.table import meta_path  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_TABLES = ("latency_tables/cpu-ort/convnext_atto_32_b1.csv",
                  "latency_tables/cpu-ort/mobilenetv2_100_224_b1.csv",
                  "latency_tables/cpu-openvino/convnext_tiny_224_b1.csv")
MODES = ("unpaired", "paired")
FIGURES = ("spearman", "kendall", "within_5", "within_10", "mape", "max_error")


def profile_again(table: str, mode: str, work: Path, holdout: int | None) -> dict[str, Any]:
    """Resume a copy of ``table`` without its end-to-end points, so only that phase is measured."""
    source = ROOT / table
    meta = json.loads(meta_path(source).read_text())
    copy = work / mode / source.name
    copy.parent.mkdir(parents=True)
    shutil.copy(source, copy)
    shutil.copy(meta_path(source), meta_path(copy))
    size = meta["input_size"]
    command = [sys.executable, "-m", "deploykit.cli", "profile", "--target", meta["target"],
               "--model", meta["model"], "--input-size", f"{size[0]}x{size[1]}",
               "--batch", str(meta["batch"]),
               "--out", str(copy), *(["--paired"] if mode == "paired" else []),
               *(["--holdout", str(holdout)] if holdout is not None else [])]
    load_before, started = os.getloadavg(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:])} failed: {done.stderr.strip().splitlines()[-1:]}")
    fidelity = json.loads(meta_path(copy).read_text())["fidelity"]
    repeat = fidelity.get("repeatability") or {}
    return {"table": table, "model": meta["model"], "target": meta["target"], "mode": mode,
            **{name: fidelity[name] for name in FIGURES}, "held_out": fidelity["n"],
            "anchor_ms": fidelity.get("anchor_ms"), "unpruned_within_5": repeat.get("within_5"),
            "unpruned_robust_cv": repeat.get("robust_cv"), "unpruned_n": repeat.get("n"),
            "run_settings": json.dumps(meta.get("run_settings")), "wall_s": round(wall, 1),
            "load_before": " ".join(f"{x:.2f}" for x in load_before),
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "command": "deploykit " + " ".join(command[3:])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", nargs="+", default=list(DEFAULT_TABLES), metavar="PATH")
    p.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="held-out subnets per profile (default: the profile's)")
    p.add_argument("--quick", action="store_true", help="the 32x32 table only, 4 held-out subnets, into "
                                                        "bench/results/quick/")
    p.add_argument("--out", type=Path, default=None, help="CSV (default: bench/results/paired_endtoend.csv)")
    args = p.parse_args(argv)
    if args.quick:
        args.tables, args.holdout = [DEFAULT_TABLES[0]], 4
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS) / "paired_endtoend.csv"
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploykit-paired-") as work:
        for number, table in enumerate(args.tables):
            for mode in MODES if number % 2 == 0 else MODES[::-1]:
                print(f"== {table}: end-to-end phase, {mode}", file=sys.stderr, flush=True)
                row = profile_again(table, mode, Path(work) / str(number), args.holdout)
                rows.append({**row, **environment(0)})
                print(f"   ρ {row['spearman']:.3f}, ±5% {row['within_5']:.0%}, MAPE {row['mape']:.1f}%, "
                      f"max {row['max_error']:.1f}%; unpruned model {row['unpruned_within_5'] or 0:.0%} "
                      f"within ±5% [{row['wall_s']:.0f} s]", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    write_text_atomic(out, frame.to_csv(index=False, float_format="%.4f"))
    shown = frame[["model", "target", "mode", "spearman", "within_5", "mape", "max_error",
                   "unpruned_within_5", "wall_s"]]
    print(shown.to_string(index=False))  # to_markdown needs tabulate, which is not a dependency
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
