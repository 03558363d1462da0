"""Time chosen subnets of a model again, in fresh processes, interleaved round by round.

For a subnet a profile measured far from its prediction: is it that subnet (a kernel or layout the
runtime picks for that merged structure, the same in every process) or was it the moment (a slow
window of the machine)? Each subnet is built with seeded random weights, merged at λ = 1, exported once
and timed ``--rounds`` times, all subnets in the same order every round.

    .venv/bin/python bench/subnet_recheck.py --target cpu-openvino --model mobilenetv2_100 --threads 1 \\
        --subnets "" 16 0,1,2,13 7,8,9 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploykit.errors import DeployKitError
from deploykit.latency.anchor import interleaved
from deploykit.latency.subnets import SubnetMeasurer
from deploykit.measure.host import LocalHost
from deploykit.protocol import Protocol
from deploykit.runsettings import RunSettings
from deploykit.subnet import parse_indices
from deploykit.targets import load_target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--subnets", nargs="+", required=True, metavar="BLOCKS",
                   help='pruned blocks per subnet, comma-separated ("" for the unpruned model)')
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    try:
        runs = recheck(args)
    except DeployKitError as error:
        p.exit(2, f"subnet_recheck: {error}\n")
    for name, results in runs.items():
        print(f"{name:>24}: " + " ".join(f"{r.median_ms:.2f}" for r in results) + " ms")
    return 0


def recheck(args) -> dict:
    target = load_target(args.target).with_settings(RunSettings(threads=args.threads))
    shape = (1, 3, args.input_size, args.input_size)
    host = LocalHost()
    with tempfile.TemporaryDirectory(prefix="deploykit-recheck-") as work:
        torch.manual_seed(0)
        builder = SubnetMeasurer(args.model, input_size=(args.input_size,) * 2, batch=1, work=Path(work))
        files = {text or "unpruned": builder.export(parse_indices(text.replace(",", ";")),
                                                   Path(work) / f"subnet{number}.onnx")
                 for number, text in enumerate(args.subnets)}
        return interleaved(files, rounds=args.rounds, time_onnx=lambda path: host.measure(
            path, target=target, protocol=Protocol(min_time_s=0.5), input_shape=shape))


if __name__ == "__main__":
    sys.exit(main())
