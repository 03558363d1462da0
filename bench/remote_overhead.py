"""Overhead of measuring through the device agent (`deploykit serve`) against measuring locally.

On one machine, a `deploykit serve` is started on localhost (a subprocess, a fresh token) and every entry
of a model's latency table (each block signature in original and merged form, the fixed parts and the
whole model, exported to ONNX once, as `deploykit profile` does) is measured both ways, through the
measuring hook every stage uses (:class:`deploykit.measure.host.MeasureHost`): locally with
:class:`~deploykit.measure.host.LocalHost` and remotely with
:class:`deploykit.remote.host.RemoteHost` (what ``--device URL`` gives; the agent measures with
``measure_onnx`` itself, and every reply's fingerprint is checked against the first). The two are
interleaved, entry by entry and round by round, alternating which goes first, so the machine's drift hits
both alike. Per entry it records the median of each side's medians over ``--rounds``, their ratio, and
the wall time of each call (worker start, compile, warm-up and sampling; remote adds the upload and HTTP).

Goal: the medians agree within 2 % (the sum over the table's entries, and per entry), and measuring
remotely costs at most 1.2 x the wall time of measuring locally.

Writes, in ``--results`` (default ``bench/results``), ``remote_overhead.csv`` (one row per entry, with the
machine, versions, load average, protocol and command) and ``remote_overhead_summary.json``; ``--quick``
writes ``*_quick.*`` instead. The CSV is rewritten atomically after each entry, and a rerun with the same
settings skips the entries already there (``--fresh`` starts over).

    .venv/bin/python bench/remote_overhead.py                 # convnext_tiny 224 b1, every entry, cpu-ort
    .venv/bin/python bench/remote_overhead.py --quick         # smoke test: convnext_atto 32x32, 4 entries
    .venv/bin/python bench/remote_overhead.py --models resnet18,mobilenetv2_100 --entries model --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import package_version  # noqa: E402
from deploykit import __version__  # noqa: E402
from deploykit.cli.args import add_protocol_arguments, protocol_from_args  # noqa: E402
from deploykit.fileio import write_json_atomic, write_text_atomic  # noqa: E402
from deploykit.measure.host import LocalHost  # noqa: E402
from deploykit.progress import to_stderr as say  # noqa: E402
from deploykit.protocol import Protocol  # noqa: E402
from deploykit.runtimes.hostinfo import cpu_name  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUICK_PROTOCOL = Protocol(warmup_s=0.05, warmup_iters=3, min_time_s=0.1, min_iters=10, max_repeats=1)
GOAL_RATIO, GOAL_WALL = 0.02, 1.2
KEY = ("model", "key", "form")


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploykit.remote.host import RemoteHost
    from deploykit.remote.local import LocalAgent
    from deploykit.targets import load_target

    target = load_target(args.target)
    protocol = QUICK_PROTOCOL if args.quick else protocol_from_args(args)
    suffix = "_quick" if args.quick else ""
    csv_path = args.results / f"remote_overhead{suffix}.csv"
    rows = [] if args.fresh or not csv_path.is_file() else pd.read_csv(csv_path).to_dict("records")
    settings = {"target": target.name, "batch": args.batch, "input_size": "x".join(map(str, args.input_size)),
                "rounds": args.rounds, "protocol": json.dumps(protocol.as_dict(), sort_keys=True)}
    rows = [row for row in rows if all(str(row.get(k)) == str(v) for k, v in settings.items())]
    say(f"target {target.name}, protocol {protocol.as_dict()}, {args.rounds} round(s) per entry")
    with tempfile.TemporaryDirectory(prefix="deploykit-bench-remote-") as work, \
            LocalAgent(Path(work) / "agent", "--targets", target.name) as agent:
        hosts = {"local": LocalHost(), "remote": RemoteHost(agent.client())}
        say(f"agent at {agent.url}")
        for model_name in args.models:
            for number, (entry, onnx_file) in enumerate(export_entries(model_name, args, Path(work)), 1):
                key = {"model": model_name, "key": entry.key, "form": entry.form}
                if any(all(str(row[k]) == str(v) for k, v in key.items()) for row in rows):
                    say(f"[{number}] {entry.label()}: already measured")
                    continue
                shape = (args.batch, *entry.in_shape)
                sides = {name: lambda host=host, path=onnx_file, shape=shape: host.measure(
                             path, target=target, protocol=protocol, input_shape=shape)
                         for name, host in hosts.items()}
                figures = interleaved(sides, rounds=args.rounds, offset=number)
                row = {**key, "label": entry.label(), **settings, **figures, **environment()}
                rows.append(row)
                write_text_atomic(csv_path, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
                say(f"[{number}] {entry.label()}: local {row['local_median_ms']:.4f} ms, remote "
                    f"{row['remote_median_ms']:.4f} ms (ratio {row['ratio']:.4f}); wall "
                    f"{row['local_wall_s']:.1f} s vs {row['remote_wall_s']:.1f} s")
    summary = summarize(rows)
    summary.update(settings=settings, machine=environment(), csv=str(csv_path.relative_to(ROOT))
                   if csv_path.is_relative_to(ROOT) else str(csv_path))
    write_json_atomic(args.results / f"remote_overhead{suffix}_summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("settings", "machine")}, indent=2))
    say(f"wrote {csv_path} and its summary")
    return 0


def parse_args(argv) -> argparse.Namespace:
    from deploykit.cli.args import size_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="convnext_tiny",
                   help="comma-separated timm models (default: convnext_tiny)")
    p.add_argument("--entries", choices=("all", "model"), default="all",
                   help="all: every entry of each model's table; model: the whole model only (default: all)")
    p.add_argument("--target", default="cpu-ort", help="target measured both ways (default: cpu-ort)")
    p.add_argument("--input-size", type=size_argument, default=(224, 224), metavar="SIZE",
                   help="default: 224")
    p.add_argument("--batch", type=int, default=1, help="default: 1")
    p.add_argument("--rounds", type=int, default=3, help="measurements per side and entry (default: 3)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="measure only the first N entries")
    p.add_argument("--results", type=Path, default=RESULTS, help="output directory (default: bench/results)")
    p.add_argument("--fresh", action="store_true", help="measure every entry again")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: convnext_atto at 32x32, 4 entries, a short protocol, 1 round, "
                        "*_quick files")
    add_protocol_arguments(p)
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.input_size, args.rounds = "convnext_atto", (32, 32), 1
        args.limit = min(args.limit or 4, 4)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    return args


def export_entries(model_name: str, args: argparse.Namespace, work: Path):
    """(entry, ONNX file) for each entry to measure, exported as `deploykit profile` exports them."""
    from deploykit.export import export_onnx
    from deploykit.latency.profile import find_entries
    from deploykit.models import create_model

    model = create_model(model_name, input_size=args.input_size).eval()
    entries = find_entries(model, model_name=model_name, input_size=args.input_size)
    if args.entries == "model":
        entries = [entry for entry in entries if entry.kind == "model"]
    for number, entry in enumerate(entries[: args.limit] if args.limit else entries, 1):
        path = work / f"{model_name}_{number}.onnx"
        yield entry, export_onnx(entry.module, (args.batch, *entry.in_shape), path)


def interleaved(sides: dict[str, Any], *, rounds: int, offset: int) -> dict[str, float]:
    """Each side ``rounds`` times, alternating which goes first; medians of medians and wall times."""
    medians: dict[str, list[float]] = {name: [] for name in sides}
    walls: dict[str, float] = dict.fromkeys(sides, 0.0)
    names = list(sides)
    for r in range(rounds):
        for name in names if (r + offset) % 2 == 0 else names[::-1]:
            began = time.perf_counter()
            medians[name].append(sides[name]().median_ms)
            walls[name] += time.perf_counter() - began
    local, remote = statistics.median(medians["local"]), statistics.median(medians["remote"])
    return {"local_median_ms": local, "remote_median_ms": remote, "ratio": remote / local,
            "local_medians_ms": " ".join(f"{v:.5f}" for v in medians["local"]),
            "remote_medians_ms": " ".join(f"{v:.5f}" for v in medians["remote"]),
            "local_wall_s": walls["local"], "remote_wall_s": walls["remote"],
            "wall_ratio": walls["remote"] / walls["local"]}


def summarize(rows: list[dict]) -> dict:
    if not rows:
        return {"entries": 0}
    frame = pd.DataFrame(rows)
    deviation = (frame["ratio"] - 1).abs()
    total_ratio = frame["remote_median_ms"].sum() / frame["local_median_ms"].sum()
    wall_ratio = frame["remote_wall_s"].sum() / frame["local_wall_s"].sum()
    return {"entries": len(frame), "total_median_ratio": total_ratio,
            "median_entry_ratio": float(frame["ratio"].median()),
            "share_entries_within_2pct": float((deviation <= GOAL_RATIO).mean()),
            "max_entry_deviation": float(deviation.max()), "wall_ratio": wall_ratio,
            "local_wall_s": float(frame["local_wall_s"].sum()),
            "remote_wall_s": float(frame["remote_wall_s"].sum()),
            "goal_medians_within_2pct": bool(abs(total_ratio - 1) <= GOAL_RATIO),
            "goal_wall_at_most_1.2x": bool(wall_ratio <= GOAL_WALL)}


def environment() -> dict[str, Any]:
    shown = Path(sys.argv[0]).resolve()
    script = str(shown.relative_to(ROOT)) if shown.is_relative_to(ROOT) else str(shown)
    return {"machine": f"{platform.machine()} {cpu_name()}", "cpus": os.cpu_count(),
            "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(), "onnxruntime": package_version("onnxruntime"),
            "deploykit": __version__, "command": shlex.join(["python", script, *sys.argv[1:]])}



if __name__ == "__main__":
    sys.exit(main())
