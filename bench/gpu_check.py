"""One prepared device check for a GPU machine (issue 23): under 5 minutes, this repository and its
installed packages only, one CSV.

What it records, one row per check (status ok / fail / unavailable, the figure, and what it means):
  * what is importable: torch and CUDA (devices), onnxruntime and its providers, tensorrt;
  * the timing of one small model (a timm resnet18, random weights, batch 8, 224²) on GPU 0: the median
    of CUDA events around each run against the wall clock with a synchronize, both in ms;
  * numerics: fp32 on the GPU with TF32 off against the CPU (relative max error, expected ≤ 1e-4), fp16
    autocast against the same (expected ≤ 1e-2); then deploykit's own GPU sessions on the exported model
    (onnxruntime CUDA fp32, TensorRT fp32 and fp16) against the CPU reference, with what they report
    (providers, read-back precision, CPU nodes);
  * DDP on all GPUs (NCCL, torch.multiprocessing) for a few steps: the ranks' losses must agree.

On a machine without a GPU every check says what is not available and why; the script exits 0 either way
(a failing check is a row, not a crash). Run it with ``make gpu-check`` or
``python bench/gpu_check.py --out bench/results/gpu_check.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploykit.fileio import write_text_atomic

SHAPE = (8, 3, 224, 224)
TIMED_RUNS = 30
DDP_STEPS = 5
FIELDS = ("check", "status", "value", "detail")


def row(check: str, status: str, value="", detail: str = "") -> dict:
    print(f"{check:<28} {status:<12} {value!s:<14} {detail}", flush=True)
    return {"check": check, "status": status, "value": value, "detail": detail}


def guarded(check: str, fn) -> list[dict]:
    """``fn()``'s rows; a check that raises is one failing row (the last line of its traceback)."""
    try:
        return fn()
    except Exception as error:  # any failure on a device is a result to record
        lines = traceback.format_exception_only(type(error), error)
        return [row(check, "fail", "", lines[-1].strip()[:300])]


# --- what is importable ------------------------------------------------------------------------------

def importable() -> list[dict]:
    import torch

    rows = [row("torch", "ok", torch.__version__, f"CUDA build {torch.version.cuda or 'none'}")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(row("torch.cuda", "ok", torch.cuda.device_count(), names))
    else:
        rows.append(row("torch.cuda", "unavailable", 0, "torch.cuda.is_available() is False"))
    rows += guarded("onnxruntime", _onnxruntime_row)
    rows += guarded("tensorrt", _tensorrt_row)
    return rows


def _onnxruntime_row() -> list[dict]:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    gpu = "CUDAExecutionProvider" in providers
    prefix = "providers: " if gpu else "no CUDAExecutionProvider (onnxruntime-gpu): "
    status = "ok" if gpu else "unavailable"
    return [row("onnxruntime", status, ort.__version__, prefix + ", ".join(providers))]


def _tensorrt_row() -> list[dict]:
    try:
        import tensorrt as trt
    except ImportError:
        return [row("tensorrt", "unavailable", "", "tensorrt is not installed (pip install tensorrt)")]
    return [row("tensorrt", "ok", trt.__version__, "")]


# --- one model: timing and numerics --------------------------------------------------------------------

def small_model():
    import timm

    return timm.create_model("resnet18", pretrained=False, num_classes=1000).eval()


def timing() -> list[dict]:
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        return [row("timing", "unavailable", "", "no CUDA device")]
    model = small_model().cuda()
    x = torch.randn(SHAPE, device="cuda")
    events, wall = [], []
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        for _ in range(TIMED_RUNS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            wall.append((time.perf_counter() - t0) * 1e3)
            events.append(start.elapsed_time(end))
    event_ms, wall_ms = float(np.median(events)), float(np.median(wall))
    return [row("timing.cuda_events_ms", "ok", f"{event_ms:.3f}",
                f"resnet18 {SHAPE}, median of {TIMED_RUNS}"),
            row("timing.wall_clock_ms", "ok", f"{wall_ms:.3f}",
                f"synchronize before the clock stops; wall - events = {wall_ms - event_ms:.3f} ms")]


def _relative(got, expected) -> float:
    import numpy as np

    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def torch_numerics() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return [row("numerics.torch", "unavailable", "", "no CUDA device")]
    torch.manual_seed(0)
    model, x = small_model(), torch.randn(SHAPE)
    with torch.inference_mode():
        expected = model(x).numpy()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        fp32 = model.cuda()(x.cuda()).float().cpu().numpy()
        with torch.autocast("cuda", dtype=torch.float16):
            fp16 = model(x.cuda()).float().cpu().numpy()
    e32, e16 = _relative(fp32, expected), _relative(fp16, expected)
    return [row("numerics.torch_fp32", "ok" if e32 <= 1e-4 else "fail", f"{e32:.2e}", "TF32 off, ≤ 1e-4"),
            row("numerics.torch_fp16", "ok" if e16 <= 1e-2 else "fail", f"{e16:.2e}", "autocast, ≤ 1e-2")]


def deploykit_sessions(scratch: Path) -> list[dict]:
    """deploykit's GPU sessions on the exported model against onnxruntime on the CPU."""
    import dataclasses

    import numpy as np
    import torch

    from deploykit.export import export_onnx
    from deploykit.runtimes import get_backend
    from deploykit.targets import load_target

    torch.manual_seed(0)
    path = export_onnx(small_model(), SHAPE, scratch / "resnet18.onnx")
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    cpu = load_target("cpu-ort")
    with get_backend("onnxruntime").session(path, target=cpu, input_shape=SHAPE) as session:
        expected = session.run(x)[0]
    ort_cuda = dataclasses.replace(cpu, provider="CUDAExecutionProvider", runtime_device="0", host_arch=None)
    trt = dataclasses.replace(load_target("nvidia-a100"), device_match=None, batch=SHAPE[0])
    cases = [("ort_cuda_fp32", "onnxruntime", ort_cuda, 1e-4),
             ("tensorrt_fp32", "tensorrt", dataclasses.replace(trt, precision="fp32"), 1e-4),
             ("tensorrt_fp16", "tensorrt", trt, 1e-2)]
    return [r for case in cases for r in guarded(f"session.{case[0]}", lambda c=case: _session_row(
        *c, path=path, x=x, expected=expected))]


def _session_row(name, runtime, target, tolerance, *, path, x, expected) -> list[dict]:
    from deploykit.runtimes import get_backend

    backend = get_backend(runtime)
    ok, reason = backend.available(target)
    if not ok:
        return [row(f"session.{name}", "unavailable", "", reason)]
    with backend.session(path, target=target, input_shape=x.shape) as session:
        error = _relative(session.run(x)[0], expected)
        detail = f"precision {session.precision}; {session.details}"
    return [row(f"session.{name}", "ok" if error <= tolerance else "fail", f"{error:.2e}",
                f"≤ {tolerance:g}; {detail}")]


# --- DDP on all GPUs -------------------------------------------------------------------------------

def ddp() -> list[dict]:
    import torch
    import torch.multiprocessing as mp

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 1:
        return [row("ddp", "unavailable", "", "no CUDA device")]
    with tempfile.TemporaryDirectory(prefix="deploykit-ddp-") as scratch:
        losses = mp.get_context("spawn").Manager().dict()
        start = time.perf_counter()
        mp.spawn(_ddp_rank, args=(count, scratch, losses), nprocs=count, join=True)
        seconds = time.perf_counter() - start
        finals = [losses[rank] for rank in range(count)]
    agree = max(finals) - min(finals) <= 1e-6 * max(1.0, abs(finals[0]))
    return [row("ddp", "ok" if agree else "fail", count,
                f"{DDP_STEPS} steps on {count} GPU(s), NCCL, {seconds:.1f} s; final losses "
                + ", ".join(f"{v:.6f}" for v in finals))]


def _ddp_rank(rank: int, world: int, scratch: str, losses) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{scratch}/rendezvous", rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank))
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(small_model().cuda(), device_ids=[rank])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        generator = torch.Generator().manual_seed(rank)
        for _ in range(DDP_STEPS):
            x = torch.randn((4, 3, 128, 128), generator=generator).cuda()
            y = torch.randint(0, 1000, (4,), generator=generator).cuda()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        loss = loss.detach()
        dist.all_reduce(loss)  # the mean loss over ranks: every rank must hold the same figure
        losses[rank] = float(loss) / world
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/gpu_check.csv", help="the CSV to write")
    args = parser.parse_args(argv)
    rows = importable()
    for check, fn in (("timing", timing), ("numerics.torch", torch_numerics), ("ddp", ddp)):
        rows += guarded(check, fn)
    with tempfile.TemporaryDirectory(prefix="deploykit-gpu-check-") as scratch:
        rows += guarded("session", lambda: deploykit_sessions(Path(scratch)))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(args.out, text.getvalue())
    print(f"wrote {args.out} ({sum(r['status'] == 'ok' for r in rows)} ok, "
          f"{sum(r['status'] == 'fail' for r in rows)} failed, "
          f"{sum(r['status'] == 'unavailable' for r in rows)} unavailable)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "4")
    sys.exit(main())
