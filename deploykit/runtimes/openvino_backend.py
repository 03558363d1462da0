"""OpenVINO native: ``Core().compile_model`` with a latency hint, fixed threads and precision.

The model is read, reshaped to the static input shape asked for, and compiled with
``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_PRECISION_HINT`` and ``INFERENCE_NUM_THREADS``. No silent
fallback: the precision the compiled model really uses is read back (OpenVINO's CPU plugin quietly
runs an fp16 hint as bf16 on CPUs without native fp16) and a mismatch is refused, as is ``AUTO``,
which picks a device by itself. A timed run is ``infer()`` on an infer request whose input tensor was
set once; :meth:`Session.run` uses a request of its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from deploykit.errors import ModelError, RuntimeUnavailableError, one_line
from deploykit.runtimes import hostinfo
from deploykit.runtimes.base import RuntimeBackend, Session, single_input
from deploykit.runtimes.onnxfile import input_names
from deploykit.runtimes.registry import register_backend

if TYPE_CHECKING:
    import numpy as np

    from deploykit.targets import Target

DEFAULT_DEVICE = "CPU"
PRECISION_HINT = {"fp32": "f32", "fp16": "f16"}  # deploykit precision → OpenVINO element type
_PRECISION_OF_HINT = {hint: precision for precision, hint in PRECISION_HINT.items()}
_DEVICE_PATTERN = re.compile(r"^(CPU|GPU|NPU)(\.\d+)?$")


@register_backend
class OpenVINOBackend(RuntimeBackend):
    name: ClassVar[str] = "openvino"
    install_hint: ClassVar[str] = "pip install 'deploykit[openvino]'"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    def target_problem(self, target: Target) -> tuple[str, str] | None:
        problem = super().target_problem(target)
        if problem:
            return problem
        device = target.runtime_device or DEFAULT_DEVICE
        if not _DEVICE_PATTERN.match(device):
            return "runtime_device", (f"OpenVINO device must be one device such as CPU, GPU, GPU.1 or NPU, "
                                      f"got {device!r} (AUTO/MULTI/HETERO would choose the device silently)")
        return None

    def setting_keys(self, target: Target) -> tuple[str, ...]:
        return ("threads", "streams", "pinning") if self.runs_on_cpu_threads(target) else ("threads",)

    def runs_on_cpu_threads(self, target: Target) -> bool:
        return _device(target).startswith("CPU")

    def _unavailable_reason(self, target: Target) -> str | None:
        try:
            import openvino as ov
        except ImportError:
            return f"openvino is not installed ({self.install_hint})"
        device = _device(target)
        found = ov.Core().available_devices
        if not any(d == device or d.startswith(f"{device}.") for d in found):
            return (f"OpenVINO device {device} not found here (available: {', '.join(found) or 'none'}); "
                    f"needs the hardware and its OpenVINO driver")
        return None

    def version(self) -> str:
        try:
            import openvino as ov
        except ImportError:
            raise self.unavailable(f"not installed ({self.install_hint})") from None
        return ov.__version__.split("-")[0]

    def device_string(self, target: Target) -> str:
        import openvino as ov

        try:
            return ov.Core().get_property(_device(target), "FULL_DEVICE_NAME")
        except RuntimeError:
            return hostinfo.cpu_name() if _device(target).startswith("CPU") else _device(target)

    def _open_session(self, onnx_path: Path, *, target: Target, input_shape: tuple[int, ...],
                      threads: int | None) -> Session:
        import openvino as ov

        device = _device(target)
        single_input(input_names(onnx_path), onnx_path)  # a corrupt file fails here, fast and clearly
        config = compile_config(target, threads=threads)
        core = ov.Core()
        try:
            model = core.read_model(str(onnx_path))
        except RuntimeError as error:
            raise ModelError(f"OpenVINO cannot read {onnx_path}: {_last_line(error)}") from None
        try:
            model.reshape({model.inputs[0]: ov.PartialShape(list(input_shape))})
            compiled = core.compile_model(model, device, config)
        except RuntimeError as error:
            raise ModelError(f"OpenVINO cannot compile {onnx_path} for {device} with input "
                             f"{input_shape}: {_last_line(error)}") from None
        hint = check_precision(compiled, target.precision, device)
        return OpenVINOSession(compiled, path=onnx_path, input_shape=input_shape, device=device, hint=hint)


def compile_config(target: Target, *, threads: int | None) -> dict:
    """``compile_model``'s properties for ``target``: the latency hint, the precision, and the run
    settings (threads, streams, pinning) on a CPU device."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISION_HINT[target.precision]}
    if _device(target).startswith("CPU"):
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if target.streams is not None:
            config["NUM_STREAMS"] = target.streams
        if target.pinning is not None:
            config["ENABLE_CPU_PINNING"] = target.pinning
    return config


class OpenVINOSession(Session):
    """A compiled model; ``precision`` is the one read back from ``INFERENCE_PRECISION_HINT``."""

    def __init__(self, compiled, *, path: Path, input_shape: tuple[int, ...], device: str, hint: str):
        super().__init__(path=path, input_shape=input_shape,
                         input_dtype=compiled.input(0).element_type.to_dtype(), label=f"OpenVINO ({device})",
                         providers=(device,), precision=_PRECISION_OF_HINT[hint],
                         details=f"INFERENCE_PRECISION_HINT {hint} (read back), PERFORMANCE_HINT LATENCY")
        self._compiled = compiled
        self._request = None  # run()'s own request, made on first use

    def _run(self, x: np.ndarray) -> list:
        if self._request is None:
            self._request = self._compiled.create_infer_request()
        result = self._request.infer({0: x})
        return [result[output].copy() for output in self._compiled.outputs]

    def _timed_runner(self, x: np.ndarray):
        import openvino as ov

        request = self._compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(x))

        def run_once(_keep=x) -> None:  # _keep: the tensor shares x's memory
            request.infer()

        return run_once

    def _release(self) -> None:
        self._request = self._compiled = None


def check_precision(compiled, precision: str, device: str) -> str:
    """The inference precision the compiled model really uses (OpenVINO's name, e.g. ``f32``); a
    RuntimeUnavailableError when it is not the one asked for."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    actual = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    if actual != PRECISION_HINT[precision]:
        raise RuntimeUnavailableError(
            f"OpenVINO {device} silently runs {precision} as {actual} here (the device has no native "
            f"{precision}); refusing to time it as {precision}")
    return actual


def _device(target: Target) -> str:
    return target.runtime_device or DEFAULT_DEVICE


def _last_line(error: BaseException) -> str:
    """OpenVINO errors are a stack of 'Exception from file:line' lines; the last ones say what."""
    lines = [ln.strip() for ln in str(error).splitlines()
             if ln.strip() and not ln.strip().startswith("Exception from")]
    return one_line(Exception(" ".join(lines[-2:]))) if lines else one_line(error)
