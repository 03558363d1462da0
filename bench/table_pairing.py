"""The results table's one measurement, paired or not: do the same architecture's rows agree?

``deploykit run``'s table stage times every variant's ONNX in one round-robin measurement. Unpaired,
each variant runs alone in its fresh process per round, and the table shows the median of those;
paired, each variant runs beside the original in one process per round and its ms is the in-process
ratio × the original's median. This script measures the same run directory both ways, ``--repeats``
times, the two modes alternating (so both see the same machine), and records per measurement the
baseline's and ``original-continued``'s ms (the same architecture: they should agree), the gap between
them, and how many variants with a speed-up > 1 do *not* measure fewer ms than the baseline (the
"faster by speed-up, slower in ms" table the issue started from). Writes
``bench/results/table_pairing.csv`` (atomically) and prints a summary per mode.

    .venv/bin/deploykit run --out /tmp/demo            # a run directory to measure (the demo)
    .venv/bin/python bench/table_pairing.py --run /tmp/demo --repeats 6
    .venv/bin/python bench/table_pairing.py --run /tmp/demo --quick     # 1 repeat, 2 rounds, quick/
"""

from __future__ import annotations

import argparse
import os
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

RESULTS = ROOT / "bench" / "results"
MODES = ("unpaired", "paired")
BASELINE, CONTINUED = "baseline", "original-continued"


def measure_once(run: Path, target_name: str, mode: str, rounds: int, work: Path) -> dict[str, Any]:
    """One measurement of every variant in ``run`` (``deploykit table --measure``'s), as a CSV row."""
    from deploykit.protocol import Protocol
    from deploykit.results_table import measure_variants
    from deploykit.targets import load_target
    from deploykit.verify.rounds import RoundRobin

    load_before, started = os.getloadavg(), time.perf_counter()
    path = measure_variants([run], target=load_target(target_name), protocol=Protocol(), rounds=rounds,
                            out=work / f"latency-{mode}.json", paired=mode == "paired")
    wall = time.perf_counter() - started
    robin = RoundRobin.read(path)
    models = robin.models
    base, continued = models[BASELINE].median_ms, models[CONTINUED].median_ms
    faster_not_smaller = [name for name, m in models.items()
                          if name != BASELINE and (m.speedup or 0) > 1 and m.median_ms >= base]
    row = {"mode": mode, "paired": robin.paired, "rounds": rounds, "baseline_ms": base,
           "continued_ms": continued, "continued_gap": abs(continued / base - 1.0),
           "faster_not_smaller": len(faster_not_smaller), "variants": len(models),
           "settings": " ".join(f"{k}={v}" for k, v in robin.settings.items() if v is not None),
           "wall_s": round(wall, 1), "load_before": " ".join(f"{x:.2f}" for x in load_before),
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name, m in models.items():
        if name not in (BASELINE, CONTINUED):
            row[f"{name}_ms"], row[f"{name}_speedup"] = m.median_ms, m.speedup
    return row


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per mode: how far apart the same architecture measured, and the inconsistent rows."""
    return frame.groupby("mode", sort=False).agg(
        measurements=("continued_gap", "size"), gap_median=("continued_gap", "median"),
        gap_max=("continued_gap", "max"), within_5=("continued_gap", lambda g: float((g <= 0.05).mean())),
        faster_not_smaller=("faster_not_smaller", "sum"), baseline_ms_min=("baseline_ms", "min"),
        baseline_ms_max=("baseline_ms", "max"), wall_s=("wall_s", "median"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a `deploykit run` directory (with baseline/, "
                                                           "original-continued/ and budget-*/)")
    p.add_argument("--target", default="cpu-ort", help="the target to measure on (default: cpu-ort)")
    p.add_argument("--repeats", type=int, default=6, help="measurements per mode (default: 6)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per measurement (default: 3, as the run)")
    p.add_argument("--quick", action="store_true", help="1 repeat of 2 rounds, into bench/results/quick/")
    p.add_argument("--out", type=Path, default=None, help="CSV (default: bench/results/table_pairing.csv)")
    args = p.parse_args(argv)
    if not all((args.run / name / "model.onnx").is_file() for name in (BASELINE, CONTINUED)):
        raise SystemExit(f"{args.run} is not a finished `deploykit run` directory (no {BASELINE}/model.onnx "
                         f"and {CONTINUED}/model.onnx): run `deploykit run --out {args.run}` first")
    if args.quick:
        args.repeats, args.rounds = 1, 2
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS) / "table_pairing.csv"
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploykit-table-pairing-") as work:
        for repeat in range(args.repeats):
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
                row = measure_once(args.run, args.target, mode, args.rounds, Path(work))
                rows.append({"repeat": repeat + 1, **row, **environment(0)})
                print(f"{repeat + 1}/{args.repeats} {mode:<8}: baseline {row['baseline_ms']:.3f} ms, "
                      f"continued {row['continued_ms']:.3f} ms ({row['continued_gap']:.1%} apart), "
                      f"{row['faster_not_smaller']} faster-but-not-smaller [{row['wall_s']:.0f} s]",
                      file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    write_text_atomic(out, frame.to_csv(index=False, float_format="%.5f"))
    print(summary(frame).to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
