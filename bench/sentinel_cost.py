"""What the sentinel's re-measurements cost a profile, and what they buy its held-out fidelity.

Profiles one model several times, alternating between variants of the ``deploykit profile`` arguments
(by default the defaults, and ``--max-drift 10``: a sentinel that never finds a drift, so no entry is
measured again), each in a fresh process as a user would run it (:func:`bench.profile_tables.profile_one`),
and records per profile the wall time, how many entries the sentinel had measured again, the settings
the probe chose, and the held-out fidelity the profile stored (ρ, share within ±5 %, MAPE) beside the
unpruned model's repeatability. Alternating keeps a slow stretch of the machine from landing on one
variant only. One row per profile goes to ``bench/results/sentinel_cost.csv`` as soon as it ends.

    .venv/bin/python bench/sentinel_cost.py                                  # the demo's table, 2 × 2
    .venv/bin/python bench/sentinel_cost.py --repeats 3 --model convnext_atto --input-size 32
    .venv/bin/python bench/sentinel_cost.py --variant "retries-free=--max-drift 10"
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.profile_tables import profile_one  # noqa: E402
from deploykit.fileio import write_text_atomic  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_VARIANTS = ("default=", "no-redo=--max-drift 10")


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, arguments = text.partition("=")
    if not name:
        raise SystemExit(f"--variant must be NAME=ARGUMENTS, got {text!r}")
    return name, shlex.split(arguments)


def remeasured(log: Path) -> int:
    """Entries the sentinel had measured again (each such line says "(again)")."""
    return len(re.findall(r"\(again\)", log.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--target", default="cpu-ort")
    parser.add_argument("--repeats", type=int, default=2, help="profiles per variant (default: 2)")
    parser.add_argument("--variant", action="append", metavar="NAME=ARGS",
                        help="a variant of the profile's arguments, repeatable (default: "
                             f"{' and '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--out", type=Path, default=RESULTS / "sentinel_cost.csv")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".sentinel-cost-") as work:
        for repeat in range(args.repeats):
            for name, extra in variants:
                out = Path(work) / f"{name}_{repeat}.csv"
                row = profile_one(args.target, args.model, args.input_size, print, out=out, extra=extra,
                                  logs=Path(work) / name / str(repeat))
                rows.append({"variant": name, "repeat": repeat, "extra": shlex.join(extra),
                             "remeasured": remeasured(ROOT / row["log"]), **row})
                frame = pd.DataFrame(rows).drop(columns=["table", "log"])
                write_text_atomic(args.out, frame.to_csv(index=False))
                print(f"  {name}: {row['wall_s']} s, {rows[-1]['remeasured']} entries measured again")
    print(frame.groupby("variant")[["wall_s", "remeasured", "spearman", "within_5", "mape_pct",
                                    "repeat_within_5"]].median().to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
