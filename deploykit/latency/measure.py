"""Measure an ONNX file on a target, each measurement in a fresh worker process; and *where* to measure.

Every model or block is timed in its own ``python -m deploykit.latency.worker`` process: no session,
allocator, thread pool or JIT cache carries over from one measurement to the next, and each runtime
lives in a process of its own (onnxruntime, OpenVINO, TensorRT and MIGraphX never share one).

:class:`MeasureHost` is the one measuring hook every stage uses (profile entries, the sentinel, the
anchors, the end-to-end phase, ``lut check``, ``lut anchor``, verify and the pipeline): it times a file,
runs it on seeded inputs, and says what the measurements must be labelled with (runtime, device,
machine fingerprint). :class:`LocalHost` measures on this machine (:func:`measure_onnx`);
``deploykit.remote.host.RemoteHost`` on a device agent (``deploykit serve``). The CLI chooses one
(``--device URL``) and passes it down.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deploykit import errors
from deploykit.errors import DeployKitError, ModelError
from deploykit.protocol import Measurement, Protocol
from deploykit.targets import Target

if TYPE_CHECKING:
    from deploykit.latency.fingerprint import Fingerprint
    from deploykit.latency.outputs import SeededOutputs

WORKER_MODULE = "deploykit.latency.worker"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds deploykit/


def measure_onnx(onnx_path: str | Path, *, target: Target, protocol: Protocol,
                 input_shape: Sequence[int], timeout_s: float | None = None) -> Measurement:
    """Time ``onnx_path`` on ``target`` under ``protocol`` with one input of ``input_shape`` (batch
    included), in a fresh subprocess. Any failure of the worker is a DeployKitError (the same
    subclass the worker raised, e.g. RuntimeUnavailableError) carrying its one-line message."""
    from deploykit.runtimes.base import check_input_shape

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    request = {"onnx_path": str(path.resolve()), "target": target.as_dict(),
               "protocol": protocol.as_dict(), "input_shape": list(check_input_shape(input_shape))}
    reply = _run_worker(request, what=f"{path.name} on {target.name}", timeout_s=timeout_s)
    return Measurement.from_dict(reply["measurement"])


def run_outputs(onnx_path: str | Path, *, target: Target, input_shape: Sequence[int], seed: int,
                n_inputs: int, timeout_s: float | None = None) -> SeededOutputs:
    """:func:`deploykit.latency.outputs.run_seeded` in a fresh worker process (what a device agent runs)."""
    from deploykit.latency.outputs import SeededOutputs, check_request
    from deploykit.runtimes.base import check_input_shape

    check_request(n_inputs, seed)
    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    request = {"action": "run", "onnx_path": str(path.resolve()), "target": target.as_dict(),
               "input_shape": list(check_input_shape(input_shape)), "seed": seed, "n_inputs": n_inputs}
    reply = _run_worker(request, what=f"{path.name} on {target.name}", timeout_s=timeout_s)
    return SeededOutputs.from_dict(reply, what="the latency worker")


def runtime_info(target: Target) -> dict[str, str]:
    """The runtime name, its version and the device string for ``target``, as a table records them."""
    from deploykit.runtimes import check_target

    backend = check_target(target)
    return {"runtime": backend.name, "runtime_version": backend.version(),
            "device": backend.device_string(target)}


# --- where it is measured ---------------------------------------------------------------------------

class MeasureHost(ABC):
    """Where ONNX files are timed and run: this machine, or a device agent. Chosen once, passed down.

    ``url`` is None for this machine, else the device agent's URL (tables and reports record it).
    """

    url: str | None = None

    @abstractmethod
    def describe(self) -> str:
        """``this machine`` or ``the device at URL``, for messages."""

    @property
    def where(self) -> str:
        """``here`` or ``on the device at URL``, for messages."""
        return "here" if self.url is None else f"on {self.describe()}"

    @abstractmethod
    def availability(self, target: Target) -> tuple[bool, str]:
        """``(True, "")`` when ``target`` can be measured there, else ``(False, why)``."""

    @abstractmethod
    def measure(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                input_shape: Sequence[int], timeout_s: float | None = None) -> Measurement:
        """Time ``onnx_path`` there, in a fresh worker process (:func:`measure_onnx`)."""

    @abstractmethod
    def outputs(self, onnx_path: str | Path, *, target: Target, input_shape: Sequence[int], seed: int,
                n_inputs: int) -> SeededOutputs:
        """The file's first output on each seeded input, run there (verify's numerics)."""

    @abstractmethod
    def runtime_info(self, target: Target) -> dict[str, str]:
        """The runtime, its version and the device string there (:func:`runtime_info`)."""

    @abstractmethod
    def fingerprint(self, target: Target, *, threads: int | None) -> Fingerprint:
        """The fingerprint of the machine that measures ``target`` with ``threads``."""

    def load_average(self) -> list[float] | None:
        """The measuring machine's 1-, 5- and 15-minute load averages, as last known (None: unknown)."""
        return None

    def load_1min(self) -> float:
        load = self.load_average()
        return float(load[0]) if load else math.nan

    def process_snapshot(self) -> dict:
        """Every process there (pid → name, parent, CPU ticks) for the sentinel; empty when unknown."""
        return {}

    def affinity(self, threads: int | None) -> list[int] | None:
        """The CPUs a measuring worker there pins itself to (None: unknown or not pinned)."""
        return None


class LocalHost(MeasureHost):
    """This machine: every measurement in a fresh worker process here; outputs in this process."""

    def describe(self) -> str:
        return "this machine"

    def availability(self, target: Target) -> tuple[bool, str]:
        from deploykit.runtimes import availability

        return availability(target)

    def measure(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                input_shape: Sequence[int], timeout_s: float | None = None) -> Measurement:
        return measure_onnx(onnx_path, target=target, protocol=protocol, input_shape=input_shape,
                            timeout_s=timeout_s)

    def outputs(self, onnx_path: str | Path, *, target: Target, input_shape: Sequence[int], seed: int,
                n_inputs: int) -> SeededOutputs:
        from dataclasses import replace

        from deploykit.latency.outputs import run_seeded

        result = run_seeded(onnx_path, target=target, input_shape=input_shape, seed=seed, n_inputs=n_inputs)
        return replace(result, how=f"{result.how}, in-process")

    def runtime_info(self, target: Target) -> dict[str, str]:
        return runtime_info(target)

    def fingerprint(self, target: Target, *, threads: int | None) -> Fingerprint:
        from deploykit.latency.fingerprint import for_target

        return for_target(target, threads=threads)

    def load_average(self) -> list[float] | None:
        from deploykit.latency.sentinel import load_average

        return load_average()

    def process_snapshot(self) -> dict:
        from deploykit.latency.sentinel import process_snapshot

        return process_snapshot()

    def affinity(self, threads: int | None) -> list[int] | None:
        from deploykit.runtimes.hostinfo import pinned_cores

        cores = pinned_cores(threads)
        return list(cores) if cores else None


def host_or_local(host: MeasureHost | None) -> MeasureHost:
    """``host``, or this machine when None (the default of every stage that measures)."""
    return LocalHost() if host is None else host


def _run_worker(request: dict, *, what: str, timeout_s: float | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run([sys.executable, "-m", WORKER_MODULE], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise DeployKitError(f"measuring {what} did not finish within {timeout_s:g} s") from None
    reply = _parse_reply(done.stdout)
    if reply is None:
        raise DeployKitError(f"the latency worker measuring {what} gave no reply "
                             f"({_exit(done.returncode)}): {_last_line(done.stderr) or 'no message'}")
    if not reply.get("ok"):
        cls = getattr(errors, str(reply.get("type")), DeployKitError)
        if not (isinstance(cls, type) and issubclass(cls, DeployKitError)):
            cls = DeployKitError
        raise cls(str(reply.get("error", "unknown worker error")))
    return reply


def _parse_reply(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return reply if isinstance(reply, dict) else None


def _exit(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
