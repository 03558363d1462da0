"""Two onnxruntime sessions in one process, timed alternately: a pool per session or one shared pool?

A paired measurement (:mod:`deploykit.paired`) opens a subnet and the unpruned model in one process and
times them in alternating slices. This times a model against an identical copy of itself that way —
the ratio should be 1 — in fresh processes, three ways, interleaved: ``per-session`` (each session its
own intra-op pool, spinning on: onnxruntime's default), ``shared`` (both on the process's global pool,
``set_global_thread_pool_sizes`` + ``use_per_session_threads = False``; spinning on) and ``no-spin``
(a pool per session, spinning off). Per process it records the median ratio, the 95 % interval of that
median (relative half-width) and each session's median ms; writes ``bench/results/paired_pool.csv``.

    .venv/bin/python bench/paired_pool.py                       # resnet34 224, 2 threads, 4 rounds
    .venv/bin/python bench/paired_pool.py --model convnext_atto --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("per-session", "shared", "no-spin")


def time_in_this_process(path: str, mode: str, threads: int, size: int) -> dict:
    """One fresh process: the file against its copy, alternating slices under the default protocol."""
    import numpy as np
    import onnxruntime as ort

    from deploykit.paired import measure_paired
    from deploykit.protocol import Protocol

    if mode == "shared":
        ort.set_global_thread_pool_sizes(threads, 1)

    def session():
        so = ort.SessionOptions()
        if mode == "shared":
            so.use_per_session_threads = False
        else:
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if mode == "no-spin" else "1")
        return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])

    a, b = session(), session()
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    name = a.get_inputs()[0].name
    paired = measure_paired(lambda: a.run(None, {name: x}), lambda: b.run(None, {name: x}), Protocol())
    return {"ratio": paired.ratio, "ratio_ci": paired.ratio_ci, "pairs": len(paired.ratios),
            "a_ms": paired.model.median_ms, "b_ms": paired.reference.median_ms}


def export(model: str, size: int, out: Path) -> str:
    import timm
    import torch

    torch.manual_seed(0)
    module = timm.create_model(model, pretrained=False).eval()
    path = out / f"{model}.onnx"
    torch.onnx.export(module, torch.rand(1, 3, size, size), str(path), dynamo=False)
    return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet34")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4, help="fresh processes per mode (default: 4)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "paired_pool.csv")
    p.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(time_in_this_process(args.child[0], args.child[1], args.threads, args.size)))
        return 0
    import pandas as pd

    from bench.budget_compliance import environment
    from deploykit.fileio import write_text_atomic

    rows = []
    with tempfile.TemporaryDirectory(prefix="deploykit-pool-") as work:
        path = export(args.model, args.size, Path(work))
        for number in range(args.rounds):
            for mode in MODES:
                done = subprocess.run([sys.executable, __file__, "--child", path, mode, "--threads",
                                       str(args.threads), "--size", str(args.size)],
                                      capture_output=True, text=True, check=True)
                row = {"model": args.model, "size": args.size, "threads": args.threads, "round": number,
                       "mode": mode, **json.loads(done.stdout.strip().splitlines()[-1]),
                       "load_1min": os.getloadavg()[0], **environment(0)}
                rows.append(row)
                print(f"{mode:12s} ratio {row['ratio']:.4f} (±{row['ratio_ci']:.1%}), {row['a_ms']:.2f} / "
                      f"{row['b_ms']:.2f} ms", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    write_text_atomic(args.out, frame.to_csv(index=False, float_format="%.4f"))
    summary = frame.groupby("mode", sort=False).agg(ratio_min=("ratio", "min"), ratio_max=("ratio", "max"),
                                                    ci_median=("ratio_ci", "median"), ms=("b_ms", "median"))
    print(summary.to_string())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
