"""MIGraphX native (AMD GPUs): ``parse_onnx`` → ``quantize_fp16`` → ``compile(get_target("gpu"))``.

fp32 is compiled with ``fast_math=False`` (the binding's default, True, lets MIGraphX use approximate
kernels). The program is compiled with ``offload_copy=False`` so that a timed run moves no data between host
and device: the input is copied to the GPU once (``to_gpu``), outputs get GPU buffers
(``allocate_gpu``), and one run is ``program.run(params)`` followed by ``gpu_sync()`` before the clock
stops. Parsing, quantizing and compiling are compile time; the first run is recorded apart.
:meth:`Session.run` copies its input to the GPU and the outputs back (``from_gpu``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from deploykit.errors import ModelError, one_line
from deploykit.runtimes import hostinfo
from deploykit.runtimes.base import RuntimeBackend, Session, single_input
from deploykit.runtimes.onnxfile import input_names
from deploykit.runtimes.registry import register_backend

if TYPE_CHECKING:
    import numpy as np

    from deploykit.targets import Target

DEFAULT_DEVICE = "gpu"
_NUMPY_TYPES = {"float_type": "float32", "half_type": "float16", "double_type": "float64"}


@register_backend
class MIGraphXBackend(RuntimeBackend):
    name: ClassVar[str] = "migraphx"
    install_hint: ClassVar[str] = ("MIGraphX ships with ROCm: apt install migraphx, with /opt/rocm/lib on "
                                   "PYTHONPATH; needs an AMD GPU")
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    def target_problem(self, target: Target) -> tuple[str, str] | None:
        problem = super().target_problem(target)
        if problem:
            return problem
        if (target.runtime_device or DEFAULT_DEVICE) != DEFAULT_DEVICE:
            return "runtime_device", f"MIGraphX targets only 'gpu' for timing, got {target.runtime_device!r}"
        return None

    def _unavailable_reason(self, target: Target) -> str | None:
        try:
            import migraphx
        except ImportError:
            return f"migraphx is not installed ({self.install_hint})"
        except Exception as error:  # a module whose ROCm libraries are missing raises OSError
            return f"migraphx is installed but cannot load: {error} ({self.install_hint})"
        if not hasattr(migraphx, "gpu_sync"):
            return "this migraphx build has no GPU support (no migraphx.gpu_sync); install ROCm's migraphx"
        if not hostinfo.amd_gpu_present():
            return "no AMD GPU / ROCm: /dev/kfd not found"
        return None

    def version(self) -> str:
        try:
            import migraphx
        except ImportError:
            raise self.unavailable(f"not installed ({self.install_hint})") from None
        return str(getattr(migraphx, "__version__", "unknown"))

    def device_string(self, target: Target) -> str:
        return hostinfo.amd_gpu_name(0) or "no AMD GPU"

    def _open_session(self, onnx_path: Path, *, target: Target, input_shape: tuple[int, ...],
                      threads: int | None) -> Session:
        import migraphx

        name = single_input(input_names(onnx_path), onnx_path)
        try:
            program = migraphx.parse_onnx(str(onnx_path), map_input_dims={name: list(input_shape)})
            if target.precision == "fp16":
                migraphx.quantize_fp16(program)
            program.compile(migraphx.get_target(DEFAULT_DEVICE), **compile_options(target.precision))
        except RuntimeError as error:
            raise ModelError(f"MIGraphX cannot compile {onnx_path} with input {input_shape}: "
                             f"{one_line(error)}") from None
        return MIGraphXSession(migraphx, program, name, path=onnx_path, input_shape=input_shape,
                               precision=target.precision)


def compile_options(precision: str) -> dict[str, bool]:
    """``program.compile`` keywords: buffers on the GPU, and no fast math for fp32."""
    return {"offload_copy": False, "fast_math": precision != "fp32"}


def _precision_note(precision: str) -> str:
    if precision == "fp16":
        return "fp16 by quantize_fp16 (fast_math on)"
    return f"{precision} (fast_math off)"


class MIGraphXSession(Session):
    """A program compiled for the GPU with ``offload_copy=False``: inputs and outputs live on the GPU."""

    def __init__(self, migraphx, program, input_name: str, *, path: Path, input_shape: tuple[int, ...],
                 precision: str):
        shapes = program.get_parameter_shapes()
        super().__init__(path=path, input_shape=input_shape,
                         input_dtype=_NUMPY_TYPES.get(shapes[input_name].type_string(), "float32"),
                         label="MIGraphX (gpu)", providers=(DEFAULT_DEVICE,), precision=precision,
                         details=_precision_note(precision))
        self._migraphx = migraphx
        self._program = program
        self._input = input_name
        # with offload_copy=False the outputs are parameters too: GPU buffers for them, made once
        self._params = {param: migraphx.allocate_gpu(shape) for param, shape in shapes.items()
                        if param != input_name}

    def _execute(self, params: dict) -> list:
        results = self._program.run(params)
        self._migraphx.gpu_sync()
        return results

    def _on_gpu(self, x: np.ndarray) -> dict:
        return {**self._params, self._input: self._migraphx.to_gpu(self._migraphx.argument(x))}

    def _run(self, x: np.ndarray) -> list:
        import numpy as np

        results = self._execute(self._on_gpu(x))
        return [np.array(self._migraphx.from_gpu(result), copy=True) for result in results]

    def _timed_runner(self, x: np.ndarray):
        params = self._on_gpu(x)

        def run_once(_keep=x) -> None:  # _keep: the host array the argument was made from
            self._execute(params)

        return run_once

    def _release(self) -> None:
        self._program = self._params = None
