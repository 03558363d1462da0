"""How long the exact joint search takes over several latency tables, and whether it equals brute force.

Times ``deploykit.search.joint_search`` (the latency spaces from each ``table.predict``, the exact
multi-constraint dynamic programming along the block chain, the result) for

- convnext_tiny (18 prunable blocks: 2^18 subnets) on 2 tables — the shipped
  ``latency_tables/cpu-ort/convnext_tiny_224_b1.csv`` and ``latency_tables/cpu-openvino/…`` — and on 3
  tables: those two plus a *synthetic* third, the cpu-openvino table with every block's latency scaled
  by a seeded factor in [0.7, 1.3] (written to a temporary folder; it stands for a third target whose
  blocks rank differently, not for any real device);
- a convnext_base-size chain (36 prunable blocks: 2^36 subnets) on 2 and 3 tables: the same tables over
  convnext_base's stage depths, with synthetic adjacent-pair terms (``bench/search_speed.py``'s
  ``base_size_table``),

with the ``depth`` proxy and seeded random per-block scores (standing for sensitivity), over budget
pairs/triples, ``--repeats`` times each (median and min). Where the space is 2^18, brute force (every
subnet priced by ``table.predict``'s chain terms, vectorized, the engine's tie rule) checks the answer.
Writes ``bench/results/joint_search.csv`` with the machine, versions, command and times; the cores may
be shared with other work, so times are noisy (the load average is recorded). The bound: < 1 s.

    nice -n 19 .venv/bin/python bench/joint_search.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import load_average, package_version  # noqa: E402
from search_speed import base_size_table  # noqa: E402

from deploykit import __version__  # noqa: E402
from deploykit.clock import utc_now  # noqa: E402
from deploykit.latency.table import LatencyTable  # noqa: E402
from deploykit.runtimes.hostinfo import cpu_name  # noqa: E402
from deploykit.search import BlockScoreProxy, DepthProxy, LatencySpace, joint_search, parse_budget  # noqa: E402
from deploykit.search.engine import pick  # noqa: E402

TABLES = ("latency_tables/cpu-ort/convnext_tiny_224_b1.csv",
          "latency_tables/cpu-openvino/convnext_tiny_224_b1.csv")
BUDGETS = (("0.6", "0.6", "0.6"), ("0.8", "0.7", "0.75"), ("0.9", "0.85", "0.7"))


def scaled_copy(table: LatencyTable, folder: Path) -> LatencyTable:
    """The table with each block's rows (both forms) and predictor terms scaled by a seeded factor."""
    from dataclasses import replace

    from deploykit.latency.predictor import Predictor

    rng = np.random.default_rng(0)
    rows = table.rows.copy()
    keys = sorted(set(rows.loc[rows["kind"] == "block", "key"]))
    factor = {key: float(rng.uniform(0.7, 1.3)) for key in keys}
    for column in ("median_ms", "p90_ms", "mean_ms"):
        rows[column] = [v * factor.get(k, 1.0) for k, v in zip(rows["key"], rows[column])]
    predictor = table.predictor
    meta = table.meta
    if predictor is not None:
        scale = {i: float(rng.uniform(0.7, 1.3)) for i in predictor.merged_delta_ms}
        predictor = Predictor(base_ms=predictor.base_ms,
                              merged_delta_ms={i: d * scale[i] for i, d in predictor.merged_delta_ms.items()},
                              pair_delta_ms=dict(predictor.pair_delta_ms),
                              fit={"method": "scaled synthetic copy"})
        meta = replace(meta, predictor=predictor.as_dict())
    copy = LatencyTable(meta=replace(meta, target=meta.target + " (scaled copy)"), rows=rows)
    copy.write(folder / "scaled_copy.csv")
    return copy


def brute_force(tables, budgets, scores) -> tuple[int, ...]:
    """Every subnet priced by each table's chain terms (checked against table.predict by LatencySpace)."""
    spaces = [LatencySpace.from_table(t) for t in tables]
    limits = np.array([parse_budget(b).resolve(s.full_ms) for s, b in zip(spaces, budgets)]) * (1 + 1e-9)
    latency = np.array([s.full_ms - s.all_saved() for s in spaces])
    n = spaces[0].bits
    score = np.zeros(1 << n)
    for j in range(n):
        score[1 << j:2 << j] = score[:1 << j] + scores[j]
    fits = np.flatnonzero(np.all(latency <= limits[:, None], axis=0))
    best = int(fits[pick(score[fits], latency[0, fits], fits)])
    return spaces[0].pruned(best)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "joint_search.csv")
    args = parser.parse_args()
    common = {"machine": f"{platform.machine()} {cpu_name()}", "cpus": os.cpu_count(),
              "python": platform.python_version(), "numpy": package_version("numpy"),
              "deploykit": __version__}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        tiny = [LatencyTable.read(ROOT / path) for path in TABLES]
        tiny.append(scaled_copy(tiny[1], Path(work)))
        base = [base_size_table(t) for t in tiny]
        for label, tables in (("convnext_tiny", tiny), ("convnext_base-size synthetic", base)):
            n = len(tables[0].prunable_indices)
            rng = np.random.default_rng(1)
            random_scores = {i: -float(rng.random()) for i in tables[0].prunable_indices}
            proxies = (("depth", DepthProxy), ("sensitivity", lambda s=random_scores: BlockScoreProxy(s)))
            for count, (name, make), budgets in itertools.product((2, 3), proxies, BUDGETS):
                chosen, given = tables[:count], [parse_budget(b) for b in budgets[:count]]
                times, result = [], None
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    result = joint_search(chosen, given, make())
                    times.append(time.perf_counter() - started)
                scores = [-1.0] * n if name == "depth" else [random_scores[i] for i in range(n)]
                brute = brute_force(chosen, budgets[:count], scores) if n <= 20 else None
                rows.append({**common, "chain": label, "prunable_blocks": n, "tables": count,
                             "table_files": " + ".join(str(t.path) if t.path else f"{t.meta.target} synthetic"
                                                       for t in chosen),
                             "proxy": name, "budgets": " ".join(budgets[:count]), "method": result.method,
                             "pruned": len(result.subnet.pruned),
                             "binding": ";".join(map(str, result.binding)),
                             "search_median_s": statistics.median(times), "search_min_s": min(times),
                             "repeats": args.repeats,
                             "brute_force_equal": "" if brute is None else brute == result.subnet.pruned,
                             "load": load_average(),
                             "command": "nice -n 19 .venv/bin/python bench/joint_search.py "
                                        f"--repeats {args.repeats}",
                             "date": utc_now()})
                print(f"{label} {count} tables {name} {budgets[:count]}: median "
                      f"{statistics.median(times):.3f} s ({result.method}); brute force equal: "
                      f"{rows[-1]['brute_force_equal']}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False, float_format="%.4f")
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
