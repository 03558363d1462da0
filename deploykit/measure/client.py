"""Measure an ONNX file on a target, each measurement in a fresh worker process.

Every model or block is timed in its own ``python -m deploykit.measure.worker`` process: no session,
allocator, thread pool or JIT cache carries over from one measurement to the next, and each runtime
lives in a process of its own (onnxruntime, OpenVINO, TensorRT and MIGraphX never share one). The
stages do not call this module directly: they measure through a
:class:`deploykit.measure.host.MeasureHost` (this machine, or a device agent), whose local kind calls
:func:`measure_onnx`, as the device agent does on its machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from deploykit.errors import ConfigError, DeployKitError, ModelError, error_class, last_line
from deploykit.fileio import parse_json
from deploykit.measure.outputs import SeededOutputs, check_run_request
from deploykit.paired import PairedMeasurement
from deploykit.protocol import Measurement, Protocol
from deploykit.targets import Target

WORKER_MODULE = "deploykit.measure.worker"
CANCEL_POLL_S = 0.2  # how often a cancellable worker's caller is asked whether it still wants the result
WORKER_REPLY_BYTES = 2**31  # a run's outputs travel in the reply; the worker is ours, the bound a backstop
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds deploykit/


def measure_onnx(onnx_path: str | Path, *, target: Target, protocol: Protocol,
                 input_shape: Sequence[int], timeout_s: float | None = None,
                 cancel: threading.Event | None = None, workdir: Path | None = None) -> Measurement:
    """Time ``onnx_path`` on ``target`` under ``protocol`` with one input of ``input_shape`` (batch
    included), in a fresh subprocess (working in ``workdir``, if given). Any failure of the worker is a
    DeployKitError (the same subclass the worker raised, e.g. RuntimeUnavailableError) carrying its
    one-line message; ``cancel`` set while it runs kills it (:class:`WorkerCancelled`)."""
    from deploykit.shapes import check_input_shape

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    request = {"onnx_path": str(path.resolve()), "target": target.as_dict(),
               "protocol": protocol.as_dict(), "input_shape": list(check_input_shape(input_shape))}
    reply = _run_worker(request, what=f"{path.name} on {target.name}", timeout_s=timeout_s, cancel=cancel,
                        workdir=workdir)
    return Measurement.from_dict(reply["measurement"])


def measure_paired_onnx(onnx_path: str | Path, reference_path: str | Path, *, target: Target,
                        protocol: Protocol, input_shape: Sequence[int], timeout_s: float | None = None,
                        workdir: Path | None = None) -> PairedMeasurement:
    """Time ``onnx_path`` as a ratio to ``reference_path``, both in one fresh worker process
    (:mod:`deploykit.paired`); refuses what :func:`measure_onnx` refuses."""
    from deploykit.shapes import check_input_shape

    paths = [Path(p) for p in (onnx_path, reference_path)]
    for path in paths:
        if not path.is_file():
            raise ModelError(f"ONNX file not found: {path}")
    request = {"onnx_path": str(paths[0].resolve()), "reference_path": str(paths[1].resolve()),
               "target": target.as_dict(), "protocol": protocol.as_dict(),
               "input_shape": list(check_input_shape(input_shape))}
    reply = _run_worker(request, what=f"{paths[0].name} paired with {paths[1].name} on {target.name}",
                        timeout_s=timeout_s, workdir=workdir)
    return PairedMeasurement.from_dict(reply["paired"])


def run_outputs(onnx_path: str | Path, *, target: Target, input_shape: Sequence[int], seed: int,
                n_inputs: int, timeout_s: float | None = None, cancel: threading.Event | None = None,
                workdir: Path | None = None) -> SeededOutputs:
    """:func:`deploykit.measure.outputs.run_seeded` in a fresh worker process (what a device agent runs)."""
    from deploykit.runtimes.base import check_input_shape

    check_run_request(n_inputs, seed)
    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    request = {"action": "run", "onnx_path": str(path.resolve()), "target": target.as_dict(),
               "input_shape": list(check_input_shape(input_shape)), "seed": seed, "n_inputs": n_inputs}
    reply = _run_worker(request, what=f"{path.name} on {target.name}", timeout_s=timeout_s, cancel=cancel,
                        workdir=workdir)
    return SeededOutputs.from_dict(reply, what="the latency worker")


def runtime_info(target: Target) -> dict[str, str]:
    """The runtime name, its version and the device string for ``target``, as a table records them."""
    from deploykit.runtimes import check_target

    backend = check_target(target)
    return {"runtime": backend.name, "runtime_version": backend.version(),
            "device": backend.device_string(target)}


class WorkerCancelled(DeployKitError):
    """The worker was killed because its caller no longer wants the result (a client went away)."""


def _run_worker(request: dict, *, what: str, timeout_s: float | None, cancel: threading.Event | None = None,
                workdir: Path | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    payload: str | None = json.dumps(request)
    with subprocess.Popen([sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=workdir) as worker:
        while True:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if cancel is not None:
                wait = CANCEL_POLL_S if wait is None else min(wait, CANCEL_POLL_S)
            try:  # communicate() may be called again after a timeout, without its input (sent once)
                stdout, stderr = worker.communicate(payload, timeout=wait)
                break
            except subprocess.TimeoutExpired:
                payload = None
                if deadline is not None and time.monotonic() >= deadline:
                    _kill(worker)
                    raise DeployKitError(f"measuring {what} did not finish within {timeout_s:g} s") from None
                if cancel is not None and cancel.is_set():
                    _kill(worker)
                    raise WorkerCancelled(f"measuring {what} was cancelled; the worker was killed") from None
    reply = _parse_reply(stdout)
    if reply is None:
        raise DeployKitError(f"the latency worker measuring {what} gave no reply "
                             f"({_exit(worker.returncode)}): {last_line(stderr) or 'no message'}")
    if not reply.get("ok"):
        raise error_class(reply.get("type"))(str(reply.get("error", "unknown worker error")))
    return reply


def _kill(worker: subprocess.Popen) -> None:
    worker.kill()
    worker.communicate()


def _parse_reply(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        return parse_json(lines[-1], what="the latency worker's reply", max_bytes=WORKER_REPLY_BYTES)
    except ConfigError:
        return None


def _exit(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


