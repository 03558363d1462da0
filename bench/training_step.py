"""What skipping padding-only kernel taps saves a training step (``deploykit/training/padding_taps.py``).

Times full training steps (forward, cross-entropy, backward, AdamW) of a timm model with its own
convolutions and with :func:`~deploykit.training.padding_taps.skip_padding_taps`, alternating blocks of
``--steps`` steps so that a change of the machine hits both alike, ``--rounds`` blocks each, in one
process on the CPU. Records per variant the median ms per step and the range over the blocks, their
ratio, and the largest difference of the loss between the two (same weights, same batch). Writes one
row per variant to ``bench/results/training_step.csv`` with the machine's load and versions.

    .venv/bin/python bench/training_step.py                       # the demo: convnext_atto at 32×32
    .venv/bin/python bench/training_step.py --model resnet18 --input-size 64
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import load_average, package_version  # noqa: E402
from deploykit.clock import utc_now  # noqa: E402
from deploykit.fileio import write_text_atomic  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    import torch

    from deploykit.models import create_model
    from deploykit.training.padding_taps import skip_padding_taps

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="the demo's batch size (default: 64)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block (default: 5)")
    parser.add_argument("--rounds", type=int, default=8, help="blocks per variant (default: 8)")
    parser.add_argument("--out", type=Path, default=RESULTS / "training_step.csv")
    args = parser.parse_args(argv)
    load_before = load_average()
    torch.manual_seed(0)
    size = (args.input_size, args.input_size)
    model = create_model(args.model, input_size=size, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, labels = torch.randn(args.batch, 3, *size), torch.randint(0, 10, (args.batch,))

    def step() -> float:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    variants = {"own convolutions": contextlib.nullcontext,
                "padding taps skipped": lambda: skip_padding_taps(model)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    loss_gap = 0.0
    for _ in range(args.rounds):
        with torch.no_grad():
            plain = float(torch.nn.functional.cross_entropy(model(images), labels))
            with skip_padding_taps(model):
                skipped = float(torch.nn.functional.cross_entropy(model(images), labels))
            loss_gap = max(loss_gap, abs(skipped - plain))
        for name, context in variants.items():
            with context():
                step()  # warm
                began = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[name].append((time.perf_counter() - began) / args.steps * 1000)
    plain_ms = statistics.median(times["own convolutions"])
    rows = [{"model": args.model, "input_size": args.input_size, "batch": args.batch, "variant": name,
             "ms_per_step": round(statistics.median(values), 2), "min_ms": round(min(values), 2),
             "max_ms": round(max(values), 2), "ratio": round(statistics.median(values) / plain_ms, 3),
             "max_loss_gap": loss_gap, "steps": args.steps, "rounds": args.rounds,
             "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
             "load_before": load_before, "load_after": load_average(), "torch": package_version("torch"),
             "date": utc_now(), "command": shlex.join(["bench/training_step.py", *(argv or sys.argv[1:])])}
            for name, values in times.items()]
    write_text_atomic(args.out, pd.DataFrame(rows).to_csv(index=False))
    for row in rows:
        print(f"{row['variant']:<22} {row['ms_per_step']:8.1f} ms/step ({row['min_ms']}–{row['max_ms']}), "
              f"{row['ratio']:.3f}×")
    print(f"largest loss difference between the two: {loss_gap:.2e}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
