"""How long the subnet search takes on convnext_tiny's full space (18 prunable blocks: 2^18 subnets).

Times, in this process, ``deploykit.search.search`` (everything a `deploykit search` call does after
reading the table: the latency space from ``table.predict``, the exhaustive vectorized search, the
result) with

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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit import __version__  # noqa: E402
from deploykit.latency.table import LatencyTable  # noqa: E402
from deploykit.runtimes.hostinfo import cpu_name  # noqa: E402
from deploykit.search import BlockScoreProxy, DepthProxy, parse_budget, search  # noqa: E402


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

    from deploykit.search import ProxyData, SensitivityProxy

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="latency_tables/cpu-ort/convnext_tiny_224_b1.csv")
    parser.add_argument("--budgets", nargs="+", default=["0.5", "0.7", "0.9"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_speed.csv")
    args = parser.parse_args()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    table = LatencyTable.read(ROOT / args.table)
    scores, scores_note, measuring_s = sensitivity_scores(table, say)
    proxies = {"depth": (DepthProxy, "no data"),
               "sensitivity": (lambda: BlockScoreProxy(scores), scores_note)}
    common = {"machine": f"{platform.machine()} {cpu_name()}", "cpus": os.cpu_count(),
              "python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
              "deploykit": __version__, "table": args.table, "model": table.meta.model,
              "prunable_blocks": len(table.prunable_indices), "space": 2 ** len(table.prunable_indices)}
    rows = []
    for name, (make, note) in proxies.items():
        for budget in args.budgets:
            times, result = [], None
            for _ in range(args.repeats):
                started = time.perf_counter()
                result = search(table, parse_budget(budget), make())
                times.append(time.perf_counter() - started)
            command = f"deploykit search --table {args.table} --budget {budget} --proxy {name}"
            rows.append({**common, "proxy": name, "proxy_note": note, "budget": budget,
                         "method": result.method, "pruned": len(result.subnet.pruned),
                         "predicted_ms": round(result.predicted_ms, 3),
                         "search_median_s": statistics.median(times), "search_min_s": min(times),
                         "repeats": args.repeats, "cli_wall_s": None,
                         "sensitivity_measure_s": round(measuring_s, 2) if name == "sensitivity" else None,
                         "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "command": command,
                         "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            say(f"{name} budget {budget}: median {statistics.median(times):.3f} s, min {min(times):.3f} s "
                f"({result.method}; {len(result.subnet.pruned)} pruned)")
    with tempfile.TemporaryDirectory() as work:
        cli = [sys.executable, "-m", "deploykit.cli", "search", "--table", args.table, "--budget",
               args.budgets[0], "--out", str(Path(work) / "subnet.json")]
        started = time.perf_counter()
        subprocess.run(cli, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - started
    rows.append({**common, "proxy": "depth", "proxy_note": "whole CLI call in a fresh process (Python start, "
                 "imports, reading the table, search, writing subnet.json)", "budget": args.budgets[0],
                 "method": rows[0]["method"], "pruned": rows[0]["pruned"],
                 "predicted_ms": rows[0]["predicted_ms"],
                 "search_median_s": None, "search_min_s": None, "repeats": 1, "cli_wall_s": wall,
                 "sensitivity_measure_s": None, "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                 "command": "deploykit " + shlex.join(cli[3:-2]),
                 "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    say(f"CLI end to end: {wall:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False, float_format="%.4f")
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
