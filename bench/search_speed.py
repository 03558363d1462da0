"""How long the subnet search takes: convnext_tiny's full space (18 prunable blocks: 2^18 subnets) and a
convnext_base-size chain (36 prunable blocks: 2^36 subnets, beyond any enumeration).

Times, in this process, ``deploykit.search.search`` (everything a `deploykit search` call does after
reading the table: the latency space from ``table.predict``, the exact dynamic programming along the
block chain, the result) on

- the shipped convnext_tiny table (``--table``), and
- a convnext_base-size table (``convnext_base (synthetic)``): convnext_base's stage depths 3, 3, 27, 3
  over the convnext_tiny table's rows (its third-stage entry shared by 27 blocks), with a fitted-style
  predictor carrying adjacent-pair terms (every within-stage neighbour pair, +3 % of the block's
  saving), so the DP works on the structure a profiled table has. The issue's bound: < 1 s.

Each

- the ``depth`` proxy (no data), and
- the ``sensitivity`` proxy's search, given per-block loss increases that were measured first with the
  real sensitivity code path (a random-weight 10-class convnext_tiny checkpoint on 64 digits val images
  at 64×64: the values mean nothing for accuracy, only the timing of the search matters here; the
  measuring time is reported separately), or seeded random scores when scikit-learn is absent,

for several budgets, ``--repeats`` times each (median and min), and once end to end through the CLI in
a fresh process (that wall time includes starting Python and importing torch). Writes
``bench/results/search_speed.csv`` with the machine, versions, command and times. The machine's cores
may be shared with other work, so times are noisy; the load average is recorded.

    .venv/bin/python bench/search_speed.py [--table latency_tables/cpu-ort/convnext_tiny_224_b1.csv]
    .venv/bin/python bench/search_speed.py --quick    # seeded random scores, one budget, one repeat, no
                                                      # CLI run, into bench/results/quick/
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit import __version__  # noqa: E402
from deploykit.clock import utc_now  # noqa: E402
from deploykit.latency.predictor import Predictor  # noqa: E402
from deploykit.latency.table import LatencyTable  # noqa: E402
from deploykit.progress import to_stderr  # noqa: E402
from deploykit.runtimes.hostinfo import cpu_name  # noqa: E402
from deploykit.search import BlockScoreProxy, DepthProxy, parse_budget, search  # noqa: E402
from deploykit.subnet import format_indices  # noqa: E402


def sensitivity_scores(table: LatencyTable, say) -> tuple[dict[int, float], str, float]:
    """Per-block scores from the real sensitivity proxy, or seeded random ones without scikit-learn."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        rng = np.random.default_rng(0)
        return ({i: -float(rng.random()) for i in table.prunable_indices},
                "seeded random per-block scores (scikit-learn absent)", 0.0)
    import timm
    import torch

    from deploykit.search import SensitivityProxy
    from deploykit.training import ProxyData

    with tempfile.TemporaryDirectory() as work:
        weights = Path(work) / "weights.pt"
        torch.manual_seed(0)
        torch.save(timm.create_model(table.meta.model, num_classes=10).state_dict(), weights)
        proxy = SensitivityProxy(weights, table, ProxyData("digits", val_limit=64, batch_size=64,
                                                           input_size=(64, 64)))
        started = time.perf_counter()
        proxy.prepare(table.prunable_indices, say)
        measured = time.perf_counter() - started
    return ({i: -proxy.increase[i] for i in table.prunable_indices},
            "per-block loss increases measured by SensitivityProxy (random-weight checkpoint, digits val 64 "
            "images at 64x64)", measured)


BASE_STAGES = (3, 3, 27, 3)   # convnext_base's blocks per stage
PAIR_SHARE = 0.03             # synthetic pair terms: +3 % of the block's saving per adjacent merged pair


def base_size_table(tiny: LatencyTable) -> LatencyTable:
    """convnext_base's stage depths over the convnext_tiny table's entries, with a predictor that has
    adjacent-pair terms (synthetic: for timing the search, not for predicting anything)."""
    rows = tiny.rows.copy()
    blocks = rows["kind"] == "block"
    stages = sorted({text for text in rows.loc[blocks, "indices"]}, key=lambda t: int(t.split(";")[0]))
    if len(stages) != len(BASE_STAGES):
        raise SystemExit(f"{tiny.path} does not have ConvNeXt's four stages")
    start, renumbered = 0, {}
    for text, depth in zip(stages, BASE_STAGES):
        renumbered[text] = format_indices(range(start, start + depth))
        start += depth
    rows.loc[blocks, "indices"] = rows.loc[blocks, "indices"].map(renumbered)
    rows.loc[blocks, "count"] = rows.loc[blocks, "indices"].map(lambda t: len(t.split(";")))
    meta = replace(tiny.meta, model="convnext_base (synthetic)", predictor=None, calibration=None,
                   fidelity=None, layout=None, complete=True)
    plain = LatencyTable(meta=meta, rows=rows)
    full = plain.isolated_sum(())
    deltas = {i: plain.isolated_sum((i,)) - full for i in plain.prunable_indices}
    same_stage = [(i, i + 1) for group in plain.groups for i in group[:-1]]
    pairs = {pair: -PAIR_SHARE * deltas[pair[0]] for pair in same_stage}
    predictor = Predictor(base_ms=full, merged_delta_ms=deltas, pair_delta_ms=pairs,
                          fit={"method": "synthetic, for timing the search"})
    return plain.with_meta(predictor=predictor.as_dict())


def time_searches(table: LatencyTable, label: str, proxies: dict, budgets: list[str], repeats: int,
                  common: dict, say) -> list[dict]:
    rows = []
    for name, (make, note) in proxies.items():
        for budget in budgets:
            times, result = [], None
            for _ in range(repeats):
                started = time.perf_counter()
                result = search(table, parse_budget(budget), make())
                times.append(time.perf_counter() - started)
            rows.append({**common, "table": label, "model": table.meta.model,
                         "prunable_blocks": len(table.prunable_indices),
                         "space": 2 ** len(table.prunable_indices), "proxy": name, "proxy_note": note,
                         "budget": budget, "method": result.method, "pruned": len(result.subnet.pruned),
                         "predicted_ms": round(result.predicted_ms, 3),
                         "search_median_s": statistics.median(times), "search_min_s": min(times),
                         "repeats": repeats, "cli_wall_s": None, "sensitivity_measure_s": None,
                         "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                         "command": f"deploykit search --table {label} --budget {budget} --proxy {name}",
                         "date": utc_now()})
            say(f"{table.meta.model} {name} budget {budget}: median {statistics.median(times):.4f} s, "
                f"min {min(times):.4f} s ({result.method}; {len(result.subnet.pruned)} pruned)")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="latency_tables/cpu-ort/convnext_tiny_224_b1.csv")
    parser.add_argument("--budgets", nargs="+", default=["0.5", "0.7", "0.9"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seeded random scores, budget 0.7, one repeat, no CLI run, "
                             "into bench/results/quick/")
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV (default: bench/results/search_speed.csv)")
    args = parser.parse_args()
    if args.quick:
        args.budgets, args.repeats = ["0.7"], 1
    out = args.out or ROOT / "bench" / "results" / ("quick" if args.quick else "") / "search_speed.csv"

    say = to_stderr

    table = LatencyTable.read(ROOT / args.table)
    common = {"machine": f"{platform.machine()} {cpu_name()}", "cpus": os.cpu_count(),
              "python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
              "deploykit": __version__}
    base = base_size_table(table)
    rng = np.random.default_rng(0)
    random_base = {i: -float(rng.random()) for i in base.prunable_indices}
    rows = time_searches(base, f"convnext_base-size synthetic from {args.table}",
                         {"depth": (DepthProxy, "no data"),
                          "sensitivity": (lambda: BlockScoreProxy(random_base),
                                          "seeded random per-block scores")},
                         args.budgets, args.repeats, common, say)
    if args.quick:
        scores = {i: -float(rng.random()) for i in table.prunable_indices}
        scores_note, measuring_s = "seeded random per-block scores (--quick)", 0.0
    else:
        scores, scores_note, measuring_s = sensitivity_scores(table, say)
    proxies = {"depth": (DepthProxy, "no data"),
               "sensitivity": (lambda: BlockScoreProxy(scores), scores_note)}
    tiny_rows = time_searches(table, args.table, proxies, args.budgets, args.repeats, common, say)
    for row in tiny_rows:
        if row["proxy"] == "sensitivity":
            row["sensitivity_measure_s"] = round(measuring_s, 2)
    rows += tiny_rows
    if not args.quick:
        rows.append(cli_row(args, tiny_rows[0], say))
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False, float_format="%.4f")
    print(f"wrote {out} ({len(rows)} rows)")
    return 0


def cli_row(args, first: dict, say) -> dict:
    """The whole CLI call in a fresh process (Python start, imports, the table, the search, the file)."""
    with tempfile.TemporaryDirectory() as work:
        cli = [sys.executable, "-m", "deploykit.cli", "search", "--table", args.table, "--budget",
               args.budgets[0], "--out", str(Path(work) / "subnet.json")]
        started = time.perf_counter()
        subprocess.run(cli, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - started
    row = {**first, "proxy": "depth", "proxy_note": "whole CLI call in a fresh process (Python start, "
           "imports, reading the table, search, writing subnet.json)", "budget": args.budgets[0],
           "search_median_s": None, "search_min_s": None, "repeats": 1, "cli_wall_s": wall,
           "sensitivity_measure_s": None, "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
           "command": "deploykit " + shlex.join(cli[3:-2]),
           "date": utc_now()}
    say(f"CLI end to end: {wall:.2f} s")
    return row


if __name__ == "__main__":
    sys.exit(main())
