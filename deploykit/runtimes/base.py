"""The runtime backend interface: say whether it can run here, open a session on an ONNX file, time it.

Every backend (a) says whether it can run here and exactly why not, (b) never runs silently on
something other than what the target asks for, (c) keeps compilation and the first run out of the
timings and records them separately. Vendor SDKs are imported inside methods, never at import time.

One session API serves every caller: :meth:`RuntimeBackend.session` validates the request and opens a
:class:`Session` (the model compiled for the target, with what the runtime really gave: providers,
device, precision). Profiling, verification's numerics, fidelity checks and the device agent all go
through it; :meth:`RuntimeBackend.profile` is a session plus :func:`time_and_measure` on its timed
runner. A backend implements :meth:`RuntimeBackend._open_session` and a :class:`Session` subclass.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np

from deploykit.errors import ConfigError, DeployKitError, ModelError, RuntimeUnavailableError, one_line
from deploykit.runsettings import SETTING_KEYS
from deploykit.runtimes import hostinfo
from deploykit.shapes import check_input_shape

if TYPE_CHECKING:
    from deploykit.paired import PairedMeasurement
    from deploykit.protocol import Measurement, Protocol
    from deploykit.targets import Target

T = TypeVar("T")

INPUT_SEED = 0  # every backend feeds the same random-normal input for a given shape


class Session(ABC):
    """An ONNX file compiled for one target, ready to run; opened by :meth:`RuntimeBackend.session`.

    What the runtime really gave: ``providers`` (what executes the graph: onnxruntime's real execution
    providers, or the device the SDK compiled for), ``device`` (the hardware's name), ``precision``
    (the precision it runs at, read back where the runtime can say) and ``details`` (one line on
    how that was established). ``compile_s``: the seconds it took to open. A context manager;
    :meth:`close` is idempotent, and a closed session refuses to run.
    """

    def __init__(self, *, path: Path, input_shape: tuple[int, ...], input_dtype, label: str,
                 providers: Sequence[str], precision: str, details: str):
        self.path = path
        self.input_shape = tuple(input_shape)
        self.input_dtype = np.dtype(input_dtype)  # what the model takes: run() casts to it
        self.label = label  # e.g. "onnxruntime (CPUExecutionProvider)", for messages
        self.providers = tuple(providers)
        self.precision = precision
        self.details = details
        self.device = ""  # set by RuntimeBackend.session, like compile_s
        self.compile_s = 0.0
        self._closed = False

    @property
    def what(self) -> str:
        """What runs, for error messages: runtime, file and input shape."""
        return f"{self.label} running {self.path.name} on input {self.input_shape}"

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, x) -> list[np.ndarray]:
        """The model's outputs (host arrays, in graph order) for input ``x`` of the session's shape,
        cast to the dtype the model takes."""
        self._check_open()
        x = np.asarray(x)
        if tuple(x.shape) != self.input_shape:
            raise ModelError(f"{self.path.name} was opened for input {self.input_shape}, "
                             f"got an input of shape {tuple(x.shape)}")
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        return [np.asarray(y) for y in self._guarded(lambda: self._run(x))]

    def timed_runner(self) -> Callable[[], None]:
        """A callable that runs the model once on :func:`random_input` of the session's shape, bound
        beforehand (no allocation or copy per call), and returns once the device has finished."""
        self._check_open()
        return self._guarded(lambda: self._timed_runner(random_input(self.input_shape, self.input_dtype)))

    def close(self) -> None:
        """Release the compiled model and its buffers; a second call does nothing."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def _run(self, x: np.ndarray) -> Sequence:
        """Run on ``x`` (already of the right shape and dtype); the outputs as arrays."""

    @abstractmethod
    def _timed_runner(self, x: np.ndarray) -> Callable[[], None]:
        """Bind ``x`` once and return the no-argument run (syncing the device before it returns)."""

    @abstractmethod
    def _release(self) -> None:
        """Drop the SDK objects (compiled model, buffers, scratch files)."""

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the session on {self.path.name} is closed")

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except DeployKitError:
            raise
        except Exception as error:  # SDKs raise their own exception types
            raise ModelError(f"{self.what} failed: {one_line(error)}") from None


class RuntimeBackend(ABC):
    """One runtime (onnxruntime, OpenVINO, TensorRT, MIGraphX). Instances hold no per-model state."""

    name: ClassVar[str]
    install_hint: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    # --- what the backend can serve -------------------------------------------------------------

    def target_problem(self, target: Target) -> tuple[str, str] | None:
        """``(key, message)`` when this backend cannot serve ``target`` as written, else None."""
        if target.precision not in self.precisions:
            return "precision", (f"{self.name} backend supports precision {', '.join(self.precisions)}, "
                                 f"not {target.precision}")
        if target.provider is not None:
            return "provider", f"provider is only for runtime onnxruntime, not {self.name}"
        return None

    def setting_keys(self, target: Target) -> tuple[str, ...]:
        """The run settings (:mod:`deploykit.runsettings`) this backend applies for ``target``; a target
        that sets another one is refused. ``threads`` is taken everywhere (GPU runtimes ignore it)."""
        return ("threads",)

    def runs_on_cpu_threads(self, target: Target) -> bool:
        """Whether ``target`` runs on this machine's CPU threads (a thread pool whose placement and wait
        policy differ from process to process); False for accelerators."""
        return False

    def settings_problem(self, target: Target) -> tuple[str, str] | None:
        """``(key, message)`` for a run setting ``target`` sets (or leaves to ``auto``) that this
        backend does not apply, else None."""
        takes = self.setting_keys(target)
        for key in SETTING_KEYS:
            if key not in takes and (getattr(target, key) is not None or key in target.auto_settings):
                return key, (f"{self.name} does not apply {key} for this target (it takes "
                             f"{', '.join(takes)}); leave {key} out or null")
        return None

    def validate_target(self, target: Target) -> None:
        """ConfigError naming the target's file and key when this backend cannot serve it as written."""
        problem = self.target_problem(target) or self.settings_problem(target)
        if problem:
            raise target.error(*problem)

    def available(self, target: Target) -> tuple[bool, str]:
        """``(True, "")`` when ``target`` can be profiled on this machine, else ``(False, why)``."""
        if target.host_arch and hostinfo.machine_arch() != target.host_arch:
            return False, (f"this machine is {hostinfo.machine_arch()}, not {target.host_arch}: "
                           f"{target.name} must be profiled on the {target.host_arch} machine it stands "
                           f"for, {target.device}")
        reason = self._unavailable_reason(target)
        if reason:
            return False, reason
        if target.device_match:
            here = self.device_string(target)
            if target.device_match.lower() not in here.lower():
                return False, (f"this machine's device is {here!r}, not a {target.device_match} "
                               f"({target.name} stands for {target.device})")
        return True, ""

    @abstractmethod
    def _unavailable_reason(self, target: Target) -> str | None:
        """Why the SDK, execution provider or device is missing (with an install hint), or None."""

    @abstractmethod
    def version(self) -> str:
        """The runtime's version string; RuntimeUnavailableError when it is not installed."""

    @abstractmethod
    def device_string(self, target: Target) -> str:
        """The device a measurement runs on: CPU model name or GPU name."""

    def clock(self) -> float:
        """Seconds, for the compile and run timings (a scripted backend in the tests replaces it)."""
        return time.perf_counter()

    # --- sessions and measuring -------------------------------------------------------------------

    def session(self, onnx_path: str | Path, *, target: Target, input_shape: Sequence[int],
                threads: int | None = None) -> Session:
        """Open ``onnx_path`` compiled for ``target`` with one input of ``input_shape`` (batch
        included); ``threads`` (CPU runtimes) defaults to the target's. Refuses a missing file or a
        bad shape, a target of another runtime or one this backend cannot serve as written
        (ConfigError), and a target that cannot run here (RuntimeUnavailableError)."""
        path, shape = self._check_request(onnx_path, target, input_shape, doing="run")
        return self._open(path, target, shape, threads)

    def profile(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                input_shape: Sequence[int]) -> Measurement:
        """Open a session (timed → ``compile_s``), time its first run apart (``first_run_ms``), then
        measure its timed runner under ``protocol``. Refuses what :meth:`session` refuses."""
        target = protocol.apply_settings(target)
        path, shape = self._check_request(onnx_path, target, input_shape, doing="profile")
        with self._open(path, target, shape, target.threads) as session:
            return time_and_measure(session.timed_runner(), protocol, compile_s=session.compile_s,
                                    what=session.what, clock=self.clock)

    def profile_paired(self, onnx_path: str | Path, reference_path: str | Path, *, target: Target,
                       protocol: Protocol, input_shape: Sequence[int]) -> PairedMeasurement:
        """Both files open at once in this process, each first run timed apart, then timed alternately in
        short slices (:func:`deploykit.paired.measure_paired`). Refuses what :meth:`session` does."""
        from deploykit.paired import measure_paired

        target = protocol.apply_settings(target)
        path, shape = self._check_request(onnx_path, target, input_shape, doing="profile")
        ref_path, _ = self._check_request(reference_path, target, input_shape, doing="profile")
        with self._open(path, target, shape, target.threads) as model, \
                self._open(ref_path, target, shape, target.threads) as reference:
            runners = [_first_run(s, clock=self.clock) for s in (model, reference)]
            paired = measure_paired(runners[0][0], runners[1][0], protocol, clock=self.clock)
        return replace(paired,
                       model=replace(paired.model, compile_s=model.compile_s, first_run_ms=runners[0][1]),
                       reference=replace(paired.reference, compile_s=reference.compile_s,
                                         first_run_ms=runners[1][1]))

    @abstractmethod
    def _open_session(self, onnx_path: Path, *, target: Target, input_shape: tuple[int, ...],
                      threads: int | None) -> Session:
        """Compile ``onnx_path`` for ``target`` (arguments already validated) into a Session."""

    def _check_request(self, onnx_path: str | Path, target: Target, input_shape: Sequence[int], *,
                       doing: str) -> tuple[Path, tuple[int, ...]]:
        path = Path(onnx_path)
        if not path.is_file():
            raise ModelError(f"ONNX file not found: {path}")
        shape = check_input_shape(input_shape)
        if target.runtime != self.name:
            raise ConfigError(f"target {target.name} uses runtime {target.runtime}, not {self.name}")
        self.validate_target(target)
        ok, reason = self.available(target)
        if not ok:
            raise RuntimeUnavailableError(f"cannot {doing} on target {target.name} here: {reason}")
        return path, shape

    def _open(self, path: Path, target: Target, shape: tuple[int, ...], threads: int | None) -> Session:
        threads = threads if threads is not None else target.threads
        device = self.device_string(target)  # asked before the clock starts: it may query the driver
        session, seconds = timed(lambda: self._open_session(path, target=target, input_shape=shape,
                                                            threads=threads), clock=self.clock)
        session.compile_s, session.device = seconds, device
        return session

    def unavailable(self, reason: str) -> RuntimeUnavailableError:
        return RuntimeUnavailableError(f"{self.name}: {reason}")


def random_input(shape: Sequence[int], dtype: str | np.dtype = "float32") -> np.ndarray:
    """Random-normal input with a fixed seed, in ``dtype`` (float32 unless the runtime needs fp16)."""
    values = np.random.default_rng(INPUT_SEED).standard_normal(tuple(shape), dtype=np.float32)
    return values.astype(dtype, copy=False)


def timed(fn: Callable[[], T], *, clock: Callable[[], float] = time.perf_counter) -> tuple[T, float]:
    """``fn()`` and the seconds it took by ``clock``."""
    start = clock()
    result = fn()
    return result, clock() - start


def _first_run(session: Session, *, clock: Callable[[], float]) -> tuple[Callable[[], None], float]:
    """The session's timed runner and its first run's milliseconds (a failing first run: ModelError)."""
    run_once = session.timed_runner()
    try:
        _, first_s = timed(run_once, clock=clock)
    except Exception as error:  # SDKs raise their own exception types
        raise ModelError(f"{session.what} failed: {one_line(error)}") from None
    return run_once, first_s * 1000.0


def time_and_measure(run_once: Callable[[], None], protocol: Protocol, *, compile_s: float, what: str,
                     clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time the first run on its own, then measure under ``protocol``; record both apart.

    A failing first run (wrong input shape or type, a kernel the device lacks) is a ModelError
    naming ``what`` was run.
    """
    from deploykit.protocol import measure

    try:
        _, first_s = timed(run_once, clock=clock)
    except Exception as error:  # SDKs raise their own exception types
        raise ModelError(f"{what} failed: {one_line(error)}") from None
    result = measure(run_once, protocol, clock=clock)
    return replace(result, compile_s=compile_s, first_run_ms=first_s * 1000.0)


def device_index(target: Target) -> int:
    """The GPU index a target's ``runtime_device`` names (``"1"`` → 1); 0 by default."""
    device = target.runtime_device
    return int(device) if device and device.isdigit() else 0


def single_input(names: Sequence[str], path: Path) -> str:
    """The model's one input name; deploykit times blocks and models that take one tensor."""
    if len(names) != 1:
        raise ModelError(f"{path} has {len(names)} inputs ({', '.join(names) or 'none'}); "
                         "deploykit times models with exactly one input")
    return names[0]
