"""Exporting several subnets at once, in forked processes, while nothing is measured.

A profile's end-to-end phase exports each subnet to ONNX before timing it; torch's dynamo exporter spends
about 2 s on a small model (``convnext_atto`` at 32×32), mostly single-threaded Python, so on a 2-core
machine an export leaves a core idle. :func:`export_in_parallel` exports a batch of subnets in up to
:data:`MAX_PROCESSES` forked processes (each inherits the model, so nothing is pickled or rebuilt, and each
runs torch on one thread, like a DataLoader worker), and returns once every file is written. The phase then
times them one by one on a quiet machine: an export never overlaps a measurement.

Where ``fork`` is not available or safe (not Linux), or only one core is usable, the batch is exported
in this process, one subnet after another, as before.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

MAX_PROCESSES = 4  # each batch's files are on disk at once (a 224×224 ConvNeXt-T is ~110 MB)

Export = Callable[[tuple[int, ...], Path], Path]
_EXPORT: Export | None = None  # what a forked worker runs: set in this process just before the fork


def batch_size() -> int:
    """How many subnets one batch exports at once here (1: no parallel export)."""
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_PROCESSES, usable))


def export_batches(todo: Sequence[tuple[int, ...]], measure: Any) -> dict[tuple[int, ...], list]:
    """The first subnet of each batch → the batch (in ``todo``'s order), for a measurer that exports ahead
    (``measure.export_ahead``): the caller exports each batch when it reaches its first subnet, then times
    them one by one. {} where the measurer cannot, or this machine exports one at a time."""
    size = batch_size()
    if not hasattr(measure, "export_ahead") or size < 2:
        return {}
    return {todo[start]: list(todo[start:start + size]) for start in range(0, len(todo), size)}


def export_in_parallel(export: Export, jobs: Sequence[tuple[tuple[int, ...], Path]]) -> list[Path]:
    """``export(pruned, path)`` for every job, in parallel where :func:`batch_size` allows; the paths.
    A worker that dies (killed, out of memory) leaves its jobs to this process."""
    processes = min(len(jobs), batch_size())
    if processes < 2:
        return [export(pruned, path) for pruned, path in jobs]
    global _EXPORT
    _EXPORT = export
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_one_thread) as pool:
            futures = [pool.submit(_run, pruned, path) for pruned, path in jobs]
            return [_result(future, export, job) for future, job in zip(futures, jobs)]
    finally:
        _EXPORT = None


def _result(future, export: Export, job: tuple[tuple[int, ...], Path]) -> Path:
    try:
        return future.result()
    except BrokenProcessPool:
        return export(*job)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the batch's processes share the cores


def _run(pruned: tuple[int, ...], path: Path) -> Path:
    return _EXPORT(pruned, path)
