"""Joint budget compliance, measured: does one subnet chosen for several targets meet its budget on each?

On the shipped tables of convnext_tiny and mobilenetv2_100 for cpu-ort and cpu-openvino, for each budget
(the fractions 0.6, 0.7, 0.8, 0.9, each held on *both* targets) this runs the joint search
(``deploykit.search.joint_search``, the depth proxy: fewest pruned blocks, exact), builds the joint subnet
with seeded random weights (latency does not depend on them), merges and exports it once, and times it on
*each* runtime under that table's own run settings and protocol, interleaved with the unpruned original —
exactly as ``bench/budget_compliance.py`` measures one target (its settings, tolerance and environment
record are reused from there).

Per (model, budget, target): the budget in ms, the prediction, the measured latency, measured / budget,
``compliant`` (measured ≤ 1.03 × budget, the rule of budget_compliance.py), ``compliant_relative``
(measured / the original measured alongside ≤ 1.03 × the fraction: what does not depend on the machine
being exactly as fast as when the table was profiled), whether that target's budget
binds, and the accuracy proxy lost against the best single-target subnet for that target and budget
(depth proxy: the blocks the joint subnet prunes beyond it; 0 = nothing lost by serving both targets).

Writes ``bench/results/joint_compliance.csv`` and ``.md`` (atomically) and prints the table. ``--quick``:
one model (convnext_tiny), one budget (0.7), a tiny protocol, 1 round, into ``bench/results/quick/``.
Measure on a quiet machine: other work on the cores moves the figures.

    .venv/bin/python bench/joint_compliance.py                # both models, 4 budgets
    .venv/bin/python bench/joint_compliance.py --quick        # a smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.budget_compliance import QUICK_PROTOCOL, TOLERANCE, environment  # noqa: E402
from bench.machine import load_average  # noqa: E402
from deploykit.errors import ConfigError  # noqa: E402
from deploykit.fileio import write_text_atomic  # noqa: E402
from deploykit.latency.identity import with_table_settings  # noqa: E402
from deploykit.latency.subnets import SubnetMeasurer  # noqa: E402
from deploykit.latency.table import LatencyTable  # noqa: E402
from deploykit.progress import to_stderr  # noqa: E402
from deploykit.protocol import Protocol  # noqa: E402
from deploykit.results_table import format_markdown  # noqa: E402
from deploykit.runtimes import availability  # noqa: E402
from deploykit.search import DepthProxy, joint_search, parse_budget, search  # noqa: E402
from deploykit.targets import load_target  # noqa: E402
from deploykit.verify import measure_interleaved  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGETS = ("cpu-ort", "cpu-openvino")
MODELS = ("convnext_tiny", "mobilenetv2_100")
BUDGETS = ("0.6", "0.7", "0.8", "0.9")
SHOWN = ("model", "budget", "target", "budget_ms", "predicted_ms", "measured_ms", "measured_over_budget",
         "compliant", "ratio_to_original", "compliant_relative", "binding", "joint_k", "single_k",
         "proxy_lost")


def shipped_tables(model: str) -> list[LatencyTable]:
    return [LatencyTable.read(ROOT / "latency_tables" / target / f"{model}_224_b1.csv") for target in TARGETS]


def check_model(model: str, *, budgets: list[str], rounds: int, protocol: Protocol | None, seed: int,
                say) -> list[dict[str, Any]]:
    """Each budget's joint subnet for ``model``, measured on each target (no rows if a target is absent)."""
    tables = shipped_tables(model)
    targets = [with_table_settings(load_target(t.meta.target), t) for t in tables]  # each table's settings
    for target in targets:
        ok, reason = availability(target)
        if not ok:
            say(f"skipping {model}: target {target.name} is not available here ({reason})")
            return []
    meta = tables[0].meta
    shape = (meta.batch, 3, *meta.input_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploykit-joint-compliance-") as work:
        torch.manual_seed(seed)
        builder = SubnetMeasurer(model, input_size=meta.input_size, batch=meta.batch, work=Path(work))
        original = builder.export((), Path(work) / "original.onnx")
        for text in budgets:
            budget = parse_budget(text)
            try:
                joint = joint_search(tables, [budget] * len(tables), DepthProxy())
            except ConfigError as error:  # no subnet meets the budget on every target: nothing to measure
                say(f"  {model}, budget {text}: not reachable on every target ({error})")
                continue
            singles = [search(table, budget, DepthProxy()) for table in tables]
            subnet = builder.export(joint.subnet.pruned, Path(work) / "subnet.onnx")
            for table, target, check, single in zip(tables, targets, joint.checks, singles):
                rows.append(measure_row(model, text, table, target, check, joint, single, subnet, original,
                                        shape=shape, rounds=rounds, protocol=protocol, say=say))
            subnet.unlink(missing_ok=True)
    return rows


def measure_row(model, text, table, target, check, joint, single, subnet, original, *, shape, rounds,
                protocol, say) -> dict[str, Any]:
    """The joint subnet on one target, interleaved with the original, under that table's protocol."""
    used = protocol or Protocol.from_dict(table.meta.protocol)
    load_before, began = load_average(), time.perf_counter()
    timing = measure_interleaved(subnet, original, target=target, protocol=used, input_shape=shape,
                                 rounds=rounds)
    measured, original_ms = timing["model"]["median_ms"], timing["reference"]["median_ms"]
    fraction = parse_budget(text).value
    joint_k, single_k = len(joint.subnet.pruned), len(single.subnet.pruned)
    row = {"model": model, "budget": text, "target": target.name, "table": str(table.path.relative_to(ROOT)),
           "budget_ms": check.budget_ms, "predicted_ms": check.predicted_ms, "measured_ms": measured,
           "measured_over_budget": measured / check.budget_ms,
           "compliant": measured <= TOLERANCE * check.budget_ms, "ratio_to_original": measured / original_ms,
           "compliant_relative": measured / original_ms <= TOLERANCE * fraction, "binding": check.binding,
           "joint_k": joint_k, "joint_pruned": ";".join(map(str, joint.subnet.pruned)),
           "single_k": single_k, "single_pruned": ";".join(map(str, single.subnet.pruned)),
           "proxy_lost": joint_k - single_k,  # depth proxy: score −k, so the loss is the extra blocks pruned
           "original_measured_ms": timing["reference"]["median_ms"], "rounds": rounds,
           "round_medians_ms": " ".join(f"{v:.4f}" for v in timing["model"]["round_medians_ms"]),
           "settings": target.settings.describe(), "protocol": used.as_dict(), "load_before": load_before,
           "load_after": load_average(), "wall_s": round(time.perf_counter() - began, 1),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    say(f"  {model}, budget {text} on {target.name} = {check.budget_ms:.3f} ms: joint prunes {joint_k} "
        f"(alone {single_k}), predicted {check.predicted_ms:.3f} ms, measured {measured:.3f} ms "
        f"({'within' if row['compliant'] else 'OVER'} 1.03 × budget){'; binds' if check.binding else ''}")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL",
                   help=f"models with shipped tables on both targets (default: {' '.join(MODELS)})")
    p.add_argument("--budgets", nargs="+", default=list(BUDGETS), metavar="F",
                   help=f"fraction budgets, each held on every target (default: {' '.join(BUDGETS)})")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurements per model (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: the first model, budget 0.7, tiny protocol, 1 round, into "
                        "bench/results/quick/")
    p.add_argument("--out", type=Path, default=None, help="CSV (default: bench/results/joint_compliance.csv)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.budgets, args.rounds = args.models[:1], ["0.7"], 1
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS) / "joint_compliance.csv"
    common = environment(args.seed)
    rows = []
    for model in args.models:
        to_stderr(f"== {model} on {' + '.join(TARGETS)}")
        rows += [{**row, **common} for row in check_model(
            model, budgets=args.budgets, rounds=args.rounds, protocol=QUICK_PROTOCOL if args.quick else None,
            seed=args.seed, say=to_stderr)]
    if not rows:
        to_stderr("nothing was measured")
        return 1
    frame = pd.DataFrame(rows)
    table = format_markdown(frame[list(SHOWN)].round(4))
    head = (f"Joint budget compliance ({common['command']}; {common['machine']}, {common['cpus']} CPUs; "
            f"{frame['date'].iloc[0]}): {frame['compliant'].mean():.0%} of {len(frame)} measurements within "
            f"1.03 × budget ({frame['compliant_relative'].mean():.0%} relative to the original measured "
            "alongside); proxy lost: blocks pruned beyond the best single-target subnet")
    write_text_atomic(out, frame.to_csv(index=False, float_format="%.4f"))
    markdown = write_text_atomic(out.with_suffix(".md"), f"{head}\n\n{table}\n")
    print(f"{head}\n\n{table}\n\nwrote {out} and {markdown} ({len(frame)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
