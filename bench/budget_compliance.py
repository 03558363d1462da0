"""Budget compliance, measured: does the subnet the search picks for a budget meet it on the target?

For every shipped table (``latency_tables/<target>/*.csv``, or ``--tables``) and every budget — the
fractions 0.5, 0.6, 0.7, 0.8, 0.9 of the unpruned model's predicted latency and two millisecond budgets
per table (the table's prediction at 0.65 and 0.85 of the unpruned one, rounded to 0.1 ms, given as
``Xms`` like a user would) — this runs exactly what ``deploykit search --table T --budget B`` runs
(the depth proxy: fewest pruned blocks, then the lowest predicted latency), builds that subnet with
seeded random weights (latency does not depend on them), merges it at λ = 1, exports it to ONNX
(:class:`deploykit.latency.subnets.SubnetMeasurer`) and times it on the table's own target under the
table's own protocol, interleaved with the unpruned original (S R S R …, ``--rounds`` each, every
measurement in a fresh worker process: :func:`deploykit.verify.measure_interleaved`).

Per subnet it records the budget in ms, the prediction, the measured latency (median of the rounds), the
original measured in the same rounds, and

- ``within_budget``: measured ≤ 1.03 × budget (ms) — the issue's compliance criterion;
- ``unused_pct``: (budget − measured) / budget × 100 — latency the search left on the table (negative:
  over budget);
- for fraction budgets also ``within_relative``: measured / original-measured ≤ 1.03 × fraction, which
  does not depend on the machine being exactly as fast as when the table was profiled.

``--anchor`` first re-anchors a temporary copy of each table for the machine as it is now (what
``deploykit lut anchor`` does: the unpruned and the all-merged model measured interleaved — for a paired
table, the all-merged model as a ratio to the unpruned one in each fresh process — the affine map
stored for this machine's fingerprint) and searches on that copy: a table's milliseconds are those of the
machine's state when it was profiled, and a VM that has since become 25 % slower misses every millisecond
budget of an otherwise faithful table. The shipped table is never touched; the map goes into the rows.

A table whose end-to-end phase was paired (its fidelity says ``paired``; ``--paired on|off`` overrides)
is checked the same way: each round is one fresh process timing the subnet as a ratio to the original
in alternating short slices (:mod:`deploykit.paired`), and measured = the median ratio × the original's
median over the rounds — the figure the table's predictor was fitted to.

Writes ``bench/results/budget_compliance.csv`` (one row per table and budget, with the machine, the load
average before and after, versions, protocol, the command and the UTC time) and prints the shares per
table. ``--quick`` is a smoke test: one table (convnext_tiny on cpu-ort), one budget (0.7), a tiny
protocol, 1 round, into ``bench/results/quick/``.

    .venv/bin/python bench/budget_compliance.py                 # every shipped table (about an hour)
    .venv/bin/python bench/budget_compliance.py --quick         # a smoke test (about a minute)
    .venv/bin/python bench/budget_compliance.py --tables latency_tables/cpu-ort/resnet34_224_b1.csv
    .venv/bin/python bench/budget_compliance.py --anchor --fractions --out bench/results/budget_anchored.csv
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import load_average, package_version  # noqa: E402
from deploykit import __version__  # noqa: E402
from deploykit.clock import utc_now  # noqa: E402
from deploykit.errors import ConfigError  # noqa: E402
from deploykit.fileio import write_text_atomic  # noqa: E402
from deploykit.latency.anchor import anchor_table  # noqa: E402
from deploykit.latency.identity import open_table, with_table_settings  # noqa: E402
from deploykit.latency.subnets import SubnetMeasurer  # noqa: E402
from deploykit.latency.table import LatencyTable  # noqa: E402
from deploykit.measure.host import LocalHost  # noqa: E402
from deploykit.progress import to_stderr  # noqa: E402
from deploykit.protocol import Protocol  # noqa: E402
from deploykit.runtimes import availability  # noqa: E402
from deploykit.runtimes.hostinfo import cpu_name  # noqa: E402
from deploykit.search import DepthProxy, parse_budget, search  # noqa: E402
from deploykit.targets import load_target  # noqa: E402
from deploykit.verify import measure_interleaved  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FRACTIONS = ("0.5", "0.6", "0.7", "0.8", "0.9")
MS_AT = (0.65, 0.85)                 # millisecond budgets: the table's prediction at these fractions
TOLERANCE = 1.03                     # compliant: measured ≤ 1.03 × budget
QUICK_TABLE = "latency_tables/cpu-ort/convnext_tiny_224_b1.csv"
QUICK_PROTOCOL = Protocol(warmup_s=0.05, warmup_iters=2, min_time_s=0.1, min_iters=5, max_ci=10.0,
                          max_repeats=1)


def shipped_tables() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "latency_tables").glob("*/*.csv")
                  if not p.name.endswith(".fit.csv"))


def budgets_for(table: LatencyTable, fractions: list[str], with_ms: bool) -> list[str]:
    full = table.predict(())
    return [*fractions, *([f"{round(full * f, 1):.1f}ms" for f in MS_AT] if with_ms else [])]


def environment(seed: int) -> dict[str, Any]:
    shown = Path(sys.argv[0]).resolve()
    script = str(shown.relative_to(ROOT)) if shown.is_relative_to(ROOT) else str(shown)
    return {"machine": f"{platform.machine()} {cpu_name()}", "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": package_version("torch"),
            "onnxruntime": package_version("onnxruntime"), "openvino": package_version("openvino"),
            "deploykit": __version__, "weights": f"random, torch.manual_seed({seed})",
            "command": shlex.join(["python", script, *sys.argv[1:]])}


def measure_paired_rounds(subnet: Path, original: Path, *, target, protocol: Protocol, shape,
                          rounds: int) -> dict[str, Any]:
    """``rounds`` fresh processes, each timing the subnet as a ratio to the original: the subnet's ms is
    the median ratio × the original's median over the rounds (as the paired end-to-end phase does)."""
    host = LocalHost()
    pairs = [host.measure_paired(subnet, original, target=target, protocol=protocol, input_shape=shape)
             for _ in range(rounds)]
    reference = statistics.median(pair.reference.median_ms for pair in pairs)
    ratio = statistics.median(r for pair in pairs for r in pair.ratios)
    return {"model": {"median_ms": ratio * reference,
                      "round_medians_ms": [pair.ratio * reference for pair in pairs]},
            "reference": {"median_ms": reference}, "ratio": ratio}


def anchored_copy(path: Path, work: Path, say) -> tuple[Path, dict[str, Any]]:
    """A copy of the table at ``path`` in ``work``, re-anchored for this machine now; the stored map."""
    for part in path.parent.glob(path.name[:-len(".csv")] + ".*"):
        shutil.copy2(part, work / part.name)
    copy = work / path.name
    result = anchor_table(copy, progress=lambda line: say(f"  anchor: {line}"))
    say(f"  {result.summary().splitlines()[0]}")
    return copy, result.record


def paired_mode(table: LatencyTable, asked: str) -> bool:
    """``--paired auto``: as the table's end-to-end phase was measured."""
    return asked == "on" or (asked == "auto" and bool((table.meta.fidelity or {}).get("paired")))


def check_table(path: str, *, fractions: list[str], with_ms: bool, rounds: int, protocol: Protocol | None,
                seed: int, say, paired: str = "auto", anchor: bool = False) -> list[dict[str, Any]]:
    shipped = LatencyTable.read(ROOT / path)
    meta = shipped.meta
    target = with_table_settings(load_target(meta.target), shipped)  # the settings the table measured with
    ok, reason = availability(target)
    if not ok:
        say(f"skipping {path}: target {meta.target} is not available here ({reason})")
        return []
    used = protocol or Protocol.from_dict(meta.protocol)
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploykit-compliance-") as work:
        source, rescale = ROOT / path, None
        if anchor:
            source, rescale = anchored_copy(source, Path(work), say)
        table = open_table(source, budget_unit="ms", say=say)  # as `deploykit search` opens it
        torch.manual_seed(seed)
        builder = SubnetMeasurer(meta.model, input_size=meta.input_size, batch=meta.batch, work=Path(work))
        original = builder.export((), Path(work) / "original.onnx")
        shape = (meta.batch, 3, *meta.input_size)
        for text in budgets_for(shipped, fractions, with_ms):  # the same budgets, anchored or not
            budget = parse_budget(text)
            try:
                result = search(table, budget, DepthProxy())
            except ConfigError as error:  # a budget below what any subnet reaches: nothing to measure
                say(f"  {meta.model} on {meta.target}, budget {text}: not reachable ({error})")
                continue
            pruned = result.subnet.pruned
            subnet = builder.export(pruned, Path(work) / "subnet.onnx")
            load_before, began = load_average(), time.perf_counter()
            if paired_mode(table, paired):
                timing = measure_paired_rounds(subnet, original, target=target, protocol=used, shape=shape,
                                               rounds=rounds)
            else:
                timing = measure_interleaved(subnet, original, target=target, protocol=used,
                                             input_shape=shape, rounds=rounds)
            measured, reference = timing["model"]["median_ms"], timing["reference"]["median_ms"]
            row = {"table": path, "model": meta.model, "target": meta.target, "table_date": meta.date,
                   "predictor": "fitted" if meta.predictor is not None else "isolated sum",
                   "budget": text, "budget_ms": result.budget_ms, "k": len(pruned),
                   "pruned": ";".join(map(str, pruned)), "predicted_ms": result.predicted_ms,
                   "measured_ms": measured, "original_measured_ms": reference,
                   "original_predicted_ms": result.reference_ms,
                   "within_budget": measured <= TOLERANCE * result.budget_ms,
                   "unused_pct": (result.budget_ms - measured) / result.budget_ms * 100,
                   "within_relative": (measured / reference <= TOLERANCE * budget.value)
                   if budget.unit == "fraction" else None,
                   "prediction_error_pct": (result.predicted_ms - measured) / measured * 100,
                   "paired": "ratio" in timing, "rounds": rounds,
                   "anchored": "" if rescale is None else f"{rescale['a']:.4f} x + {rescale['b']:.4f} ms",
                   "round_medians_ms": " ".join(f"{v:.4f}" for v in timing["model"]["round_medians_ms"]),
                   "protocol": used.as_dict(), "load_before": load_before, "load_after": load_average(),
                   "wall_s": round(time.perf_counter() - began, 1),
                   "date": utc_now()}
            rows.append(row)
            verdict = "within" if row["within_budget"] else "OVER"
            say(f"  {meta.model} on {meta.target}, budget {text} = {result.budget_ms:.3f} ms: prune "
                f"{len(pruned)}, predicted {result.predicted_ms:.3f} ms, measured {measured:.3f} ms "
                f"({verdict} 1.03 × budget; {row['unused_pct']:+.1f}% unused)")
            subnet.unlink(missing_ok=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", nargs="+", default=None, metavar="PATH",
                   help="tables to check (default: every shipped table)")
    p.add_argument("--fractions", nargs="*", default=list(FRACTIONS), metavar="F",
                   help=f"fraction budgets (default: {' '.join(FRACTIONS)}; none: only the millisecond ones)")
    p.add_argument("--no-ms", action="store_true", help="leave out the two millisecond budgets")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurements per model (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--paired", choices=("auto", "on", "off"), default="auto",
                   help="time each subnet as a ratio to the original in one process per round (auto: where "
                        "the table's end-to-end phase was paired)")
    p.add_argument("--anchor", action="store_true",
                   help="re-anchor a copy of each table for this machine now (`deploykit lut anchor`) before "
                        "searching; the shipped table is not changed")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: convnext_tiny on cpu-ort, budget 0.7, tiny protocol, 1 round, "
                        "into bench/results/quick/")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV (default: bench/results/budget_compliance.csv)")
    args = p.parse_args(argv)
    if args.quick:
        args.tables, args.fractions, args.no_ms, args.rounds = args.tables or [QUICK_TABLE], ["0.7"], True, 1
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS) / "budget_compliance.csv"

    say = to_stderr

    common = environment(args.seed)
    rows = []
    for path in args.tables or shipped_tables():
        say(f"== {path}")
        for row in check_table(path, fractions=args.fractions, with_ms=not args.no_ms, rounds=args.rounds,
                               protocol=QUICK_PROTOCOL if args.quick else None, seed=args.seed, say=say,
                               paired=args.paired, anchor=args.anchor):
            rows.append({**row, **common})
    if not rows:
        say("nothing was measured")
        return 1
    frame = pd.DataFrame(rows)
    write_text_atomic(out, frame.to_csv(index=False, float_format="%.4f"))
    for table, group in frame.groupby("table", sort=False):
        relative = group["within_relative"].dropna()
        alongside = (f" (relative to the original measured alongside: {relative.astype(bool).mean():.0%} of "
                     f"{len(relative)})" if len(relative) else "")
        say(f"{table}: {group['within_budget'].mean():.0%} of {len(group)} subnets within 1.03 × budget"
            f"{alongside}; unused latency median {group['unused_pct'].median():+.1f}%")
    print(f"wrote {out} ({len(frame)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
