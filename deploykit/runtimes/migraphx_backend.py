"""MIGraphX native (AMD GPUs): ``parse_onnx`` → ``quantize_fp16`` → ``compile(get_target("gpu"))``.

The program is compiled with ``offload_copy=False`` so that a timed run moves no data between host
and device: the input is copied to the GPU once (``to_gpu``), outputs get GPU buffers
(``allocate_gpu``), and one run is ``program.run(params)`` followed by ``gpu_sync()`` before the clock
stops. Parsing, quantizing and compiling are compile time; the first run is recorded apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from deploykit.errors import ModelError
from deploykit.runtimes import hostinfo
from deploykit.runtimes.base import (
    RuntimeBackend,
    one_line,
    random_input,
    single_input,
    time_and_measure,
    timed,
)
from deploykit.runtimes.onnxfile import input_names

if TYPE_CHECKING:
    from deploykit.protocol import Measurement, Protocol
    from deploykit.targets import Target

DEFAULT_DEVICE = "gpu"
_NUMPY_TYPES = {"float_type": "float32", "half_type": "float16", "double_type": "float64"}


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

    def _profile(self, onnx_path: Path, *, target: Target, protocol: Protocol,
                 input_shape: tuple[int, ...]) -> Measurement:
        import migraphx

        name = single_input(input_names(onnx_path), onnx_path)

        def build():
            try:
                program = migraphx.parse_onnx(str(onnx_path), map_input_dims={name: list(input_shape)})
                if target.precision == "fp16":
                    migraphx.quantize_fp16(program)
                program.compile(migraphx.get_target(DEFAULT_DEVICE), offload_copy=False)
            except RuntimeError as error:
                raise ModelError(f"MIGraphX cannot compile {onnx_path} with input {input_shape}: "
                                 f"{one_line(error)}") from None
            return program

        program, compile_s = timed(build)
        params = {}
        for param, shape in program.get_parameter_shapes().items():
            if param == name:
                x = random_input(shape.lens(), _NUMPY_TYPES.get(shape.type_string(), "float32"))
                params[param] = migraphx.to_gpu(migraphx.argument(x))
            else:  # with offload_copy=False the outputs are parameters too: GPU buffers for them
                params[param] = migraphx.allocate_gpu(shape)

        def run_once() -> None:
            program.run(params)
            migraphx.gpu_sync()

        return time_and_measure(run_once, protocol, compile_s=compile_s,
                                what=f"MIGraphX running {onnx_path.name} on input {input_shape}")
