"""Where ONNX files are measured: the one measuring hook every stage uses.

:class:`MeasureHost` times a file, runs it on seeded inputs, and says what the measurements must be
labelled with (runtime, device, machine fingerprint). Profile entries, the sentinel, the speed anchors,
the end-to-end phase, ``lut check``, ``lut anchor``, verify and the pipeline all measure through one.
:class:`LocalHost` measures on this machine (:func:`deploykit.measure.client.measure_onnx`: a fresh
worker process per measurement); ``deploykit.remote.host.RemoteHost`` on a device agent (``deploykit
serve``). The CLI chooses one (``--device URL``) and passes it down; every stage defaults to this
machine (:func:`host_or_local`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploykit.measure.contention import ContentionGuard, GuardPolicy
    from deploykit.measure.fingerprint import Fingerprint
    from deploykit.measure.outputs import SeededOutputs
    from deploykit.paired import PairedMeasurement
    from deploykit.protocol import Measurement, Protocol
    from deploykit.targets import Target


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

    def measure_paired(self, onnx_path: str | Path, reference_path: str | Path, *, target: Target,
                       protocol: Protocol, input_shape: Sequence[int],
                       timeout_s: float | None = None) -> PairedMeasurement:
        """Time ``onnx_path`` as a ratio to ``reference_path`` in one fresh worker process there
        (:mod:`deploykit.paired`). Hosts whose protocol carries one file per request refuse."""
        from deploykit.errors import ConfigError

        raise ConfigError("paired measurement needs both files in one worker process, which "
                          f"{self.describe()} "
                          "does not offer (a device agent measures one uploaded file per request); "
                          "measure without pairing")

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
    """This machine: every measurement in a fresh worker process here, behind the contention guard
    (:mod:`deploykit.measure.contention`: wait for quiet, flag what was not); outputs in this process.
    ``guard``: a guard policy (default: :func:`deploykit.measure.contention.policy_from_env`)."""

    def __init__(self, guard: GuardPolicy | None = None):
        self._policy = guard
        self._guard: ContentionGuard | None = None

    @property
    def guard(self) -> ContentionGuard:
        if self._guard is None:
            from deploykit.measure.contention import ContentionGuard, policy_from_env

            self._guard = ContentionGuard(self._policy or policy_from_env())
        return self._guard

    def describe(self) -> str:
        return "this machine"

    def availability(self, target: Target) -> tuple[bool, str]:
        from deploykit.runtimes import availability

        return availability(target)

    def measure(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                input_shape: Sequence[int], timeout_s: float | None = None) -> Measurement:
        from deploykit.measure.client import measure_onnx

        threads = protocol.apply_settings(target).threads
        return self.guard.measure(
            lambda: measure_onnx(onnx_path, target=target, protocol=protocol, input_shape=input_shape,
                                 timeout_s=timeout_s),
            threads=threads, what=Path(onnx_path).name)

    def measure_paired(self, onnx_path: str | Path, reference_path: str | Path, *, target: Target,
                       protocol: Protocol, input_shape: Sequence[int],
                       timeout_s: float | None = None) -> PairedMeasurement:
        from dataclasses import replace

        from deploykit.measure.client import measure_paired_onnx

        threads = protocol.apply_settings(target).threads
        paired, others_cpu, contended = self.guard.watch(
            lambda: measure_paired_onnx(onnx_path, reference_path, target=target, protocol=protocol,
                                        input_shape=input_shape, timeout_s=timeout_s),
            threads=threads, what=Path(onnx_path).name)
        return replace(paired, model=replace(paired.model, others_cpu=others_cpu, contended=contended),
                       reference=replace(paired.reference, others_cpu=others_cpu, contended=contended))

    def outputs(self, onnx_path: str | Path, *, target: Target, input_shape: Sequence[int], seed: int,
                n_inputs: int) -> SeededOutputs:
        from dataclasses import replace

        from deploykit.measure.outputs import run_seeded

        result = run_seeded(onnx_path, target=target, input_shape=input_shape, seed=seed, n_inputs=n_inputs)
        return replace(result, how=f"{result.how}, in-process")

    def runtime_info(self, target: Target) -> dict[str, str]:
        from deploykit.measure import client

        return client.runtime_info(target)

    def fingerprint(self, target: Target, *, threads: int | None) -> Fingerprint:
        from deploykit.measure.fingerprint import for_target

        return for_target(target, threads=threads)

    def load_average(self) -> list[float] | None:
        from deploykit.measure.processes import load_average

        return load_average()

    def process_snapshot(self) -> dict:
        from deploykit.measure.processes import process_snapshot

        return process_snapshot()

    def affinity(self, threads: int | None) -> list[int] | None:
        from deploykit.runtimes.hostinfo import pinned_cores

        cores = pinned_cores(threads)
        return list(cores) if cores else None


def host_or_local(host: MeasureHost | None) -> MeasureHost:
    """``host``, or this machine when None (the default of every stage that measures)."""
    return LocalHost() if host is None else host
