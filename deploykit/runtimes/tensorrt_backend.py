"""TensorRT native: build an engine from ONNX with the ``tensorrt`` Python API and time it.

Build: ``Builder`` → network from ``OnnxParser`` → ``BuilderConfig`` (``BuilderFlag.FP16`` for fp16 on
TensorRT ≤ 10; TensorRT 11 dropped weak typing, so there the ONNX model is converted to fp16 first and
the network is strongly typed) → ``build_serialized_network`` → ``Runtime.deserialize_cuda_engine`` →
execution context. Buffers are torch CUDA tensors bound with ``set_tensor_address``; one run is
``execute_async_v3`` on a dedicated stream followed by a stream sync before the clock stops.
Parsing, building and deserializing are compile time; the first run is recorded apart.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from deploykit.errors import ModelError
from deploykit.runtimes import hostinfo
from deploykit.runtimes.base import (
    RuntimeBackend,
    device_index,
    random_input,
    single_input,
    time_and_measure,
    timed,
)
from deploykit.runtimes.onnxfile import convert_to_fp16

if TYPE_CHECKING:
    from deploykit.protocol import Measurement, Protocol
    from deploykit.targets import Target

MIN_VERSION = (8, 6)  # named-tensor API: set_tensor_address, execute_async_v3


class TensorRTBackend(RuntimeBackend):
    name: ClassVar[str] = "tensorrt"
    install_hint: ClassVar[str] = "pip install tensorrt; needs an NVIDIA GPU"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    def target_problem(self, target: Target) -> tuple[str, str] | None:
        problem = super().target_problem(target)
        if problem:
            return problem
        if target.runtime_device is not None and not target.runtime_device.isdigit():
            return "runtime_device", (f"TensorRT expects a CUDA device index such as '0', "
                                      f"got {target.runtime_device!r}")
        return None

    def _unavailable_reason(self, target: Target) -> str | None:
        try:
            import tensorrt as trt
        except ImportError:
            return f"tensorrt is not installed ({self.install_hint})"
        except Exception as error:  # a wheel without its libnvinfer raises OSError and the like
            return f"tensorrt is installed but cannot load: {error} ({self.install_hint})"
        if _version_tuple(trt.__version__) < MIN_VERSION:
            return f"tensorrt {trt.__version__} is too old: deploykit needs ≥ 8.6 ({self.install_hint})"
        try:
            import torch
        except ImportError:
            return ("the tensorrt backend keeps its buffers in torch CUDA tensors: "
                    "pip install torch (a CUDA build)")
        if not torch.cuda.is_available():
            return ("no NVIDIA GPU / CUDA: torch.cuda.is_available() is False (TensorRT needs an NVIDIA GPU; "
                    "torch must be a CUDA build)")
        index = device_index(target)
        if index >= torch.cuda.device_count():
            return f"CUDA device {index} does not exist (this machine has {torch.cuda.device_count()})"
        return None

    def version(self) -> str:
        try:
            import tensorrt as trt
        except ImportError:
            raise self.unavailable(f"not installed ({self.install_hint})") from None
        return trt.__version__

    def device_string(self, target: Target) -> str:
        return hostinfo.nvidia_gpu_name(device_index(target)) or "no NVIDIA GPU"

    def _profile(self, onnx_path: Path, *, target: Target, protocol: Protocol,
                 input_shape: tuple[int, ...]) -> Measurement:
        import tensorrt as trt
        import torch

        device = torch.device("cuda", device_index(target))
        torch.cuda.set_device(device)
        logger = trt.Logger(trt.Logger.WARNING)
        with tempfile.TemporaryDirectory(prefix="deploykit-trt-") as scratch:
            (runtime, engine), compile_s = timed(
                lambda: build_engine(trt, logger, onnx_path, precision=target.precision,
                                     input_shape=input_shape, scratch=Path(scratch)))
        context = engine.create_execution_context()
        buffers = _bind_buffers(trt, torch, engine, context, input_shape, device)
        stream = torch.cuda.Stream(device)

        def run_once(_keep=(runtime, buffers)) -> None:  # _keep: engine memory and bound buffers
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("execute_async_v3 returned False (see the TensorRT log)")
            stream.synchronize()

        return time_and_measure(run_once, protocol, compile_s=compile_s,
                                what=f"TensorRT running {onnx_path.name} on input {input_shape}")


def build_engine(trt, logger, onnx_path: Path, *, precision: str, input_shape: tuple[int, ...],
                 scratch: Path):
    """Parse ``onnx_path`` and build a deserialized engine for one static ``input_shape``."""
    strongly_typed = not hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11 removed weak typing
    source = onnx_path
    if precision == "fp16" and strongly_typed:
        source = convert_to_fp16(onnx_path, scratch / "model_fp16.onnx")
    builder = trt.Builder(logger)
    flags = 0
    if _version_tuple(trt.__version__) < (10, 0):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors or 'unknown parser error'}")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    single_input([t.name for t in inputs], onnx_path)
    config = builder.create_builder_config()
    if precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    declared = tuple(inputs[0].shape)
    if any(d < 0 for d in declared):
        profile = builder.create_optimization_profile()
        profile.set_shape(inputs[0].name, input_shape, input_shape, input_shape)
        config.add_optimization_profile(profile)
    elif declared != input_shape:
        raise ModelError(f"{onnx_path} has a static input shape {declared}, not {input_shape}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build an engine for {onnx_path} (see the TensorRT log)")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise ModelError(f"TensorRT could not deserialize the engine built for {onnx_path}")
    return runtime, engine


def _bind_buffers(trt, torch, engine, context, input_shape: tuple[int, ...], device) -> dict:
    """Allocate every I/O tensor on the GPU (inputs random-normal) and bind it to ``context``."""
    import numpy as np

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
    for name in names:
        if is_input[name]:
            context.set_input_shape(name, input_shape)
    buffers = {}
    for name in names:
        shape = tuple(context.get_tensor_shape(name))
        np_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        if is_input[name]:
            tensor = torch.from_numpy(random_input(shape, np_dtype)).to(device)
        else:
            tensor = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, np_dtype)).dtype, device=device)
        context.set_tensor_address(name, tensor.data_ptr())
        buffers[name] = tensor
    return buffers



def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
