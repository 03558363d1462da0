"""The runtime backend interface: say whether it can run here, compile an ONNX file, time it.

Every backend (a) says whether it can run here and exactly why not, (b) never runs silently on
something other than what the target asks for, (c) keeps compilation and the first run out of the
timings and records them separately. Vendor SDKs are imported inside methods, never at import time.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from deploykit.errors import ConfigError, ModelError, RuntimeUnavailableError
from deploykit.runtimes import hostinfo

if TYPE_CHECKING:
    import numpy as np

    from deploykit.protocol import Measurement, Protocol
    from deploykit.targets import Target

T = TypeVar("T")

INPUT_SEED = 0  # every backend feeds the same random-normal input for a given shape


class RuntimeBackend(ABC):
    """One runtime (onnxruntime, OpenVINO, TensorRT, MIGraphX). Instances are stateless."""

    name: ClassVar[str]
    install_hint: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    # --- what the backend can serve -------------------------------------------------------------

    def target_problem(self, target: Target) -> tuple[str, str] | None:
        """``(key, message)`` when this backend cannot serve ``target`` as written, else None.

        Checked when a target file is loaded, so a bad combination is a ConfigError naming the key.
        """
        if target.precision not in self.precisions:
            return "precision", (f"{self.name} backend supports precision {', '.join(self.precisions)}, "
                                 f"not {target.precision}")
        if target.provider is not None:
            return "provider", f"provider is only for runtime onnxruntime, not {self.name}"
        return None

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

    # --- measuring --------------------------------------------------------------------------------

    def profile(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                input_shape: Sequence[int]) -> Measurement:
        """Compile ``onnx_path`` for ``target`` and time it under ``protocol`` with one input of
        ``input_shape`` (batch included). Refuses (RuntimeUnavailableError) where it cannot run."""
        path = Path(onnx_path)
        if not path.is_file():
            raise ModelError(f"ONNX file not found: {path}")
        shape = check_input_shape(input_shape)
        if target.runtime != self.name:
            raise ConfigError(f"target {target.name} uses runtime {target.runtime}, not {self.name}")
        ok, reason = self.available(target)
        if not ok:
            raise RuntimeUnavailableError(f"cannot profile on target {target.name} here: {reason}")
        return self._profile(path, target=target, protocol=protocol, input_shape=shape)

    @abstractmethod
    def _profile(self, onnx_path: Path, *, target: Target, protocol: Protocol,
                 input_shape: tuple[int, ...]) -> Measurement:
        """Compile (timed → compile_s), run once (timed → first_run_ms), then ``measure(run_once)``."""

    def unavailable(self, reason: str) -> RuntimeUnavailableError:
        return RuntimeUnavailableError(f"{self.name}: {reason}")


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """A tuple of positive ints (batch first), else ConfigError."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input shape must be positive integers such as (1, 3, 224, 224), "
                          f"got {input_shape!r}")
    return shape


def random_input(shape: Sequence[int], dtype: str | np.dtype = "float32") -> np.ndarray:
    """Random-normal input with a fixed seed, in ``dtype`` (float32 unless the runtime needs fp16)."""
    import numpy as np

    values = np.random.default_rng(INPUT_SEED).standard_normal(tuple(shape), dtype=np.float32)
    return values.astype(dtype, copy=False)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def time_and_measure(run_once: Callable[[], None], protocol: Protocol, *, compile_s: float, what: str,
                     clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time the first run on its own, then measure under ``protocol``; record both apart.

    A failing first run (wrong input shape or type, a kernel the device lacks) is a ModelError
    naming ``what`` was run.
    """
    from deploykit.protocol import measure

    try:
        _, first_s = timed(run_once)
    except Exception as error:  # SDKs raise their own exception types
        raise ModelError(f"{what} failed: {one_line(error)}") from None
    result = measure(run_once, protocol, clock=clock)
    return replace(result, compile_s=compile_s, first_run_ms=first_s * 1000.0)


def one_line(error: BaseException, limit: int = 300) -> str:
    """An SDK exception as one short line (SDK messages are often multi-line dumps)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = " ".join(lines[:3]) if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
