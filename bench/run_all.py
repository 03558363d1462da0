"""Rerun every benchmark behind BENCHMARKS.md, one after another (never two at once: timings would mix).

    .venv/bin/python bench/run_all.py            # everything (`make bench`; hours on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # each script's smoke mode (`make bench-quick`, < 10 min)
    .venv/bin/python bench/run_all.py --only fidelity speedup

Each step is a script in bench/ run in a fresh process; each writes its raw results with the machine,
versions and command into bench/results/ (quick mode: bench/results/quick/, or *_quick files), and
most resume where they stopped when rerun. The order puts the table re-profiling (which fits each
table's predictor and stores its held-out fidelity) before the checks that use those tables.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name → (full arguments, quick arguments); None: the step is skipped in that mode.
STEPS: dict[str, tuple[list[str] | None, list[str] | None]] = {
    "profile": (["bench/profile_tables.py", "--extra", "convnext_atto:32"],
                ["bench/profile_tables.py", "--quick"]),
    "fidelity": (["bench/lut_fidelity.py", "--samples", "30"], ["bench/lut_fidelity.py", "--quick"]),
    "speedup": (["bench/speedup_depth.py"], ["bench/speedup_depth.py", "--quick"]),
    "accuracy": (["bench/accuracy_latency.py"], ["bench/accuracy_latency.py", "--quick"]),
    "compliance": (["bench/budget_compliance.py"], ["bench/budget_compliance.py", "--quick"]),
    "recovery": (["bench/recovery.py"], ["bench/recovery.py", "--quick"]),
    "search": (["bench/search_speed.py"], ["bench/search_speed.py", "--quick"]),
    "run": (["bench/costs.py", "--run"], ["bench/costs.py", "--run", "--quick"]),
    "remote": (["bench/remote_overhead.py"], ["bench/remote_overhead.py", "--quick"]),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="every step in its smoke mode (< 10 minutes)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), default=list(STEPS), metavar="STEP",
                   help=f"steps to run, in this order: {', '.join(STEPS)} (default: all)")
    args = p.parse_args(argv)
    failed = []
    started = time.perf_counter()
    for name in args.only:
        command = STEPS[name][1 if args.quick else 0]
        if command is None:
            print(f"== {name}: no quick mode, skipped", file=sys.stderr, flush=True)
            continue
        print(f"== {name}: python {' '.join(command)}", file=sys.stderr, flush=True)
        began = time.perf_counter()
        code = subprocess.run([sys.executable, *command], cwd=ROOT, check=False).returncode
        spent = time.perf_counter() - began
        print(f"== {name}: exit {code} after {spent:.0f} s", file=sys.stderr, flush=True)
        if code != 0:
            failed.append(name)
    print(f"== all done in {time.perf_counter() - started:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
