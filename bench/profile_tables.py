"""Re-profile the shipped latency tables and record what each profile cost and what it stored.

For every (target, model) asked for — by default the shipped tables under ``latency_tables/`` — this runs
``deploykit profile --target T --model M --force`` as a user would (a fresh process, the table written
in place, its ``.fit.csv`` beside it), times it, and reads back the metadata the profile stored: the
held-out fidelity of the table's predictor (n, ρ, ±5 %, ±10 %, MAPE, max error), the machine's own
repeatability (the unpruned model's fresh-process measurements: share within ±5 % of their median,
robust cv) and the sentinel's drifts. One row per table goes to ``bench/results/profile_tables.csv``
(replacing that table's earlier row), with the load average before and after, the machine, the command
and the UTC time. A row is written as soon as its profile ends, so an interrupted run keeps what it
finished. Each profile's output goes to ``bench/results/logs/``.

    .venv/bin/python bench/profile_tables.py                            # every shipped table
    .venv/bin/python bench/profile_tables.py --targets cpu-ort --models convnext_tiny
    .venv/bin/python bench/profile_tables.py --extra convnext_atto:32   # the demo's regime too
    .venv/bin/python bench/profile_tables.py --targets cpu-ort --models mobilenetv2_100 --threads 1
    .venv/bin/python bench/profile_tables.py --refit    # fit the profiled tables again, measuring nothing
    .venv/bin/python bench/profile_tables.py --quick    # smoke: convnext_atto 32×32 on cpu-ort, short
                                                        # protocol, into bench/results/quick/ (~1 min)
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import load_average  # noqa: E402
from deploykit.clock import utc_now  # noqa: E402
from deploykit.fileio import write_text_atomic  # noqa: E402
from deploykit.latency.table import LatencyTable  # noqa: E402
from deploykit.runtimes.hostinfo import cpu_name  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUICK_FLAGS = ["--min-time", "0.1", "--warmup-time", "0.05", "--max-repeats", "1", "--fit-samples", "2",
               "--holdout", "3"]
KEY = ["target", "model", "input_size", "batch"]


def shipped() -> list[tuple[str, str, int]]:
    """(target, model, input size) of every shipped b1 table."""
    found = []
    for path in sorted((ROOT / "latency_tables").glob("*/*_b1.csv")):
        if path.name.endswith(".fit.csv"):
            continue
        meta = LatencyTable.read(path).meta
        found.append((meta.target, meta.model, int(meta.input_size[0])))
    return found


def table_path(target: str, model: str, size: int) -> Path:
    return ROOT / "latency_tables" / target / f"{model}_{size}_b1.csv"


def profile_one(target: str, model: str, size: int, say, *, out: Path | None = None,
                extra: list[str] = (), logs: Path = RESULTS / "logs") -> dict[str, Any]:
    out = out or table_path(target, model, size)
    command = ["deploykit", "profile", "--target", target, "--model", model, "--input-size", str(size),
               "--out", str(out.relative_to(ROOT)), "--force", *extra]
    load_before, started_at = load_average(), utc_now()
    say(f"{target} {model} {size}: {shlex.join(command)}")
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deploykit.cli", *command[1:]], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - began
    log = logs / f"profile_{target}_{model}_{size}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(log, done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed (exit {done.returncode}); see {log}")
    table = LatencyTable.read(out)
    runs = (table.meta.conditions or {}).get("runs", [])
    drifts = sum(len((run.get("sentinel") or {}).get("drifts", [])) for run in runs)
    say(f"  {wall:.0f} s; {table.fidelity_line()}")
    return {"date": started_at, "target": target, "model": model, "input_size": size, "batch": 1,
            "wall_s": round(wall, 1), **fidelity_columns(table), "sentinel_drifts": drifts,
            "model_ms": table.model_latency(), "settings": table.meta.measured_with().describe(),
            "probed": table.meta.settings_probe is not None,
            "contended_rows": int((table.rows["contended"] == 1).sum()), "load_before": load_before,
            "load_after": load_average(), "machine": f"{platform.machine()} {cpu_name()}",
            "cpus": os.cpu_count(), "table": str(out.relative_to(ROOT)), "log": str(log.relative_to(ROOT)),
            "command": shlex.join(command)}


def fidelity_columns(table: LatencyTable) -> dict[str, Any]:
    """What the profile stored about its prediction, as profile_tables.csv columns."""
    fidelity = dict(table.meta.fidelity or {})
    repeat = dict(fidelity.get("repeatability") or {})
    return {"predictor": fidelity.get("predictor", ""), "holdout_n": fidelity.get("n"),
            "spearman": fidelity.get("spearman"), "within_5": fidelity.get("within_5"),
            "within_10": fidelity.get("within_10"), "mape_pct": fidelity.get("mape"),
            "max_error_pct": fidelity.get("max_error"), "repeat_n": repeat.get("n"),
            "repeat_within_5": repeat.get("within_5"), "repeat_robust_cv": repeat.get("robust_cv"),
            "downweighted_points": (table.meta.predictor or {}).get("fit", {}).get("downweighted_points"),
            "paired": bool(fidelity.get("paired", False))}


def refit_one(row: dict[str, Any], say) -> dict[str, Any]:
    """Rerun the profile of a complete table without --force: nothing is measured, the predictor is fitted
    again on the stored end-to-end points (after a change to the fit) and the held-out figures recomputed."""
    out = ROOT / row["table"]
    command = ["deploykit", "profile", "--target", row["target"], "--model", row["model"], "--input-size",
               str(row["input_size"]), "--out", row["table"]]
    say(f"refit {row['target']} {row['model']} {row['input_size']}: {shlex.join(command)}")
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deploykit.cli", *command[1:]], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed (exit {done.returncode}): {done.stdout[-500:]}")
    table = LatencyTable.read(out)
    say(f"  {table.fidelity_line()}")
    return {**row, **fidelity_columns(table), "refit_s": round(time.perf_counter() - began, 1),
            "refit_date": utc_now(),
            "refit_command": shlex.join(command)}


def save(rows: list[dict[str, Any]], path: Path) -> None:
    new = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path)
        if set(KEY) <= set(old.columns) and "holdout_n" in old.columns:
            keys = set(map(tuple, new[KEY].astype(str).to_numpy()))
            old = old[[tuple(k) not in keys for k in old[KEY].astype(str).to_numpy()]]
            new = pd.concat([old, new], ignore_index=True)
    write_text_atomic(path, new.sort_values(KEY).to_csv(index=False, float_format="%.4f"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", help="only these targets (default: every shipped table's)")
    p.add_argument("--models", nargs="+", help="only these models")
    p.add_argument("--extra", nargs="*", default=[], metavar="MODEL:SIZE",
                   help="also profile MODEL at SIZE×SIZE on each target (e.g. convnext_atto:32)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="profile with N threads instead of the probe's choice (what a profile's drift "
                        "warning advises)")
    p.add_argument("--paired", action="store_true",
                   help="pair the end-to-end phase whatever the settings (`deploykit profile --paired`)")
    p.add_argument("--out", type=Path, default=None, help="default: bench/results/profile_tables.csv")
    p.add_argument("--quick", action="store_true",
                   help="smoke: convnext_atto 32×32 on cpu-ort, a short protocol, into bench/results/quick/")
    p.add_argument("--refit", action="store_true",
                   help="measure nothing: fit every table in --out again on its stored points (after a "
                        "change to the fit) and update its figures")
    args = p.parse_args(argv)
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if args.quick:
        quick = RESULTS / "quick"
        row = profile_one("cpu-ort", "convnext_atto", 32, say, out=quick / "convnext_atto_32_b1.csv",
                          extra=QUICK_FLAGS, logs=quick / "logs")
        save([row], args.out or quick / "profile_tables.csv")
        return 0
    args.out = args.out or RESULTS / "profile_tables.csv"
    if args.refit:
        rows = [refit_one(row, say) for row in pd.read_csv(args.out).to_dict("records")
                if (not args.targets or row["target"] in args.targets)
                and (not args.models or row["model"] in args.models)]
        save(rows, args.out)
        return 0
    plan = shipped()
    targets = args.targets or sorted({t for t, _, _ in plan})
    for spec in args.extra:
        model, _, size = spec.partition(":")
        if not size.isdigit():
            p.error(f"--extra takes MODEL:SIZE, got {spec!r}")
        plan += [(t, model, int(size)) for t in targets]
    plan = [(t, m, s) for t, m, s in plan if t in targets and (not args.models or m in args.models)]
    if not plan:
        p.error("nothing to profile: no shipped table matches --targets/--models")
    rows: list[dict[str, Any]] = []
    for target, model, size in plan:
        extra = ([] if args.threads is None else ["--threads", str(args.threads)]) + \
            (["--paired"] if args.paired else [])
        rows.append(profile_one(target, model, size, say, extra=extra))
        save(rows, args.out)
    print(pd.DataFrame(rows)[["target", "model", "input_size", "wall_s", "spearman", "within_5", "mape_pct",
                              "repeat_within_5"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
