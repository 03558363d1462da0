"""Latency-table fidelity of the shipped tables: the held-out figures each table stores, and a fresh check.

For every table (default: convnext_tiny, resnet34, mobilenetv2_100, efficientnet_lite0 and deit_tiny at
224, batch 1, on cpu-ort and cpu-openvino) this reports

- the **stored** held-out figures: what ``deploykit profile`` measured on subnets its predictor never
  saw (``fidelity`` in the table's metadata; variant ``stored held-out (profile)``), and
- a **fresh check** on this machine, in a fresh process, exactly::

      python -m deploykit.cli lut check TABLE --samples N --seed S --out bench/results --fresh
          --format json --no-store

  which measures N random subnets end to end on the table's target with the table's protocol and
  compares them with the prediction ``search`` uses (the fitted predictor where the table has one;
  variant ``predictor`` or ``table sum``), then fitted ``measured ≈ a·predicted + b`` in-sample and
  leave-one-out, writing ``bench/results/fidelity_<target>_<table>.csv`` (all points) and ``.png``.
  ``--store`` lets the check store that calibration in the table (the old way of correcting a table; a
  table with a fitted predictor does not need it).

``--modes unpaired paired`` runs the check both ways, one after the other per table: ``paired`` adds
``--paired`` (each subnet timed as a ratio to the unpruned model in the same process, its ms that ratio
× the unpruned model's median over the check's processes; points into ``bench/results/paired/``), so
the two ways of measuring held-out subnets are compared on the same subnets, the same day.

This script writes ``bench/results/fidelity_summary.csv``: one row per table and variant, with the
command, the machine, the runtime versions and the load average before and after (the machine's cores
may be shared: a high load makes timings noisy).

    .venv/bin/python bench/lut_fidelity.py [--samples 30] [--seed 0] [--tables PATH ...]
    .venv/bin/python bench/lut_fidelity.py --quick    # 8 subnets of one table into bench/results/quick/
    .venv/bin/python bench/lut_fidelity.py --modes unpaired paired \
        --tables latency_tables/cpu-ort/mobilenetv2_100_224_b1.csv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODELS = ("convnext_tiny", "resnet34", "mobilenetv2_100", "efficientnet_lite0", "deit_tiny_patch16_224")
DEFAULT_TABLES = [f"latency_tables/{target}/{model}_224_b1.csv"
                  for target in ("cpu-ort", "cpu-openvino") for model in MODELS]
QUICK_TABLES = ["latency_tables/cpu-ort/resnet34_224_b1.csv"]
VARIANTS = (("calibrated (in-sample)", "after"), ("leave-one-out", "leave_one_out"))
FIGURES = ("spearman", "kendall", "within_5", "within_10", "mape", "bias", "max_error")


def stored_row(table: str) -> dict | None:
    """The held-out figures the profile stored in the table's metadata, as a summary row."""
    meta = json.loads((ROOT / table).with_name(Path(table).name[:-len(".csv")] + ".meta.json").read_text())
    figures = meta.get("fidelity")
    if not figures:
        return None
    fit = (meta.get("predictor") or {}).get("fit", {})
    return {"table": table, "table_date": meta["date"], "model": meta["model"], "target": meta["target"],
            "device": meta["device_string"], "runtime": meta["runtime"],
            "runtime_version": meta["runtime_version"], "samples": figures["n"], "seed": figures.get("seed"),
            "variant": "stored held-out (profile)", "predictor": figures.get("predictor"),
            **{name if name in ("spearman", "kendall", "within_5", "within_10") else f"{name}_pct":
               figures[name] for name in FIGURES if name != "max_error"},
            "max_error_pct": figures["max_error"], "fit_points": fit.get("points"),
            "profile_s": meta.get("profile_s"), "date": figures.get("date"),
            "command": "deploykit profile (stored in the table's metadata)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="subnets per table (default: 30)")
    parser.add_argument("--seed", type=int, default=0, help="subnet sample seed (default: 0)")
    parser.add_argument("--tables", nargs="+", default=None, metavar="PATH",
                        help="tables to check (default: convnext_tiny, resnet34, mobilenetv2_100, deit_tiny "
                             "on cpu-ort and cpu-openvino)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one table (resnet34 on cpu-ort), 8 subnets, results in "
                             "bench/results/quick/")
    parser.add_argument("--store", action="store_true",
                        help="let the check store its calibration in each table (default: report only)")
    parser.add_argument("--modes", nargs="+", choices=("unpaired", "paired"), default=["unpaired"],
                        help="how held-out subnets are measured: each in its own processes (unpaired, the "
                             "default) and/or as a ratio to the unpruned model in one process (paired)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fidelity_summary.csv", help="summary CSV")
    args = parser.parse_args()
    if args.quick:
        args.samples = min(args.samples, 8)
        args.tables = args.tables or QUICK_TABLES
        if args.out == RESULTS / "fidelity_summary.csv":
            args.out = RESULTS / "quick" / "fidelity_summary.csv"
    args.tables = args.tables or DEFAULT_TABLES
    rows = []
    for table in args.tables:
        stored = stored_row(table)
        if stored is not None:
            rows.append({**stored, "mode": "profile"})
            print(f"== {table}: stored held-out figures on {stored['samples']} subnets: "
                  f"ρ {stored['spearman']:.3f}, ±5% {stored['within_5']:.0%}, MAPE {stored['mape_pct']:.1f}%",
                  file=sys.stderr, flush=True)
        for mode in args.modes:
            rows += check_rows(table, mode, args)
    if not rows:
        print("nothing was measured", file=sys.stderr)
        return 1
    frame = pd.DataFrame(rows)
    if args.out.exists():  # keep the rows of tables not checked in this run
        old = pd.read_csv(args.out)
        frame = pd.concat([old[~old["table"].isin(frame["table"])], frame], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False, float_format="%.4f")
    print(f"wrote {args.out} ({len(frame)} rows)")
    return 0


def check_rows(table: str, mode: str, args: argparse.Namespace) -> list[dict]:
    """One fresh ``lut check`` of ``table`` measured the ``mode`` way, as summary rows (none if it failed)."""
    rows = []
    paired = mode == "paired"
    command = [sys.executable, "-m", "deploykit.cli", "lut", "check", table,
               "--samples", str(args.samples), "--seed", str(args.seed),
               "--out", str(args.out.parent / "paired" if paired else args.out.parent), "--fresh",
               "--format", "json", *(["--paired"] if paired else []),
               *([] if args.store and not args.quick else ["--no-store"])]
    shown = "deploykit " + shlex.join(command[3:])
    print(f"== {shown}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    if done.returncode != 0:
        print(f"   failed (exit {done.returncode}); see the error above", file=sys.stderr)
        return []
    report = json.loads(done.stdout)
    for label, key in ((report.get("prediction", "table sum"), "before"), *VARIANTS):
        figures = report[key]
        if figures is None:
            continue
        rows.append({
            "table": table, "table_date": report["table_date"], "model": report["model"],
            "target": report["target"],
            "device": report["device"],
            "runtime": report["runtime"], "runtime_version": report["runtime_version"],
            "samples": report["samples"], "seed": report["seed"], "k_min": report["k_range"][0],
            "k_max": report["k_range"][1], "variant": label, "predictor": report.get("prediction"),
            "mode": mode, "anchor_ms": report.get("anchor_ms"),
            "spearman": figures["spearman"],
            "kendall": figures["kendall"], "within_5": figures["within_5"],
            "within_10": figures["within_10"], "mape_pct": figures["mape"], "bias_pct": figures["bias"],
            "max_error_pct": figures["max_error"],
            "calibration_a": report["calibration"][0], "calibration_b_ms": report["calibration"][1],
            "stored": report["stored"], "unpruned_measured_ms": report["unpruned_measured_ms"],
            "unpruned_table_sum_ms": report["unpruned_predicted_ms"],
            "model_row_ms": report["model_row_ms"], "unpruned_drift": report["drift"],
            "wall_s": round(wall, 1), "load_before": " ".join(f"{x:.2f}" for x in load_before),
            "load_after": " ".join(f"{x:.2f}" for x in load_after), "cpus": os.cpu_count(),
            "machine": f"{platform.machine()} {report['device']}", "python": platform.python_version(),
            "points_csv": report["csv"], "notes": " | ".join(report["notes"]), "command": shown,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    before = report["before"]
    print(f"   {report['samples']} subnets in {wall:.0f} s: ρ {before['spearman']:.3f}, "
          f"τ {before['kendall']:.3f}, ±10% {before['within_10']:.0%}, MAPE {before['mape']:.1f}% → "
          f"{report['after']['mape']:.1f}% calibrated ({mode})", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
