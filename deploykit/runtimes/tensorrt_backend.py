"""TensorRT native: build an engine from ONNX with the ``tensorrt`` Python API and time it.

Build: ``Builder`` → network from ``OnnxParser`` → ``BuilderConfig`` (``BuilderFlag.FP16`` for fp16 on
TensorRT ≤ 10; TensorRT 11 removed weak typing and every network is strongly typed, so there the ONNX
model is converted to fp16 first; fp32 clears ``BuilderFlag.TF32``, which TensorRT sets by default) →
``build_serialized_network`` → ``Runtime.deserialize_cuda_engine`` → execution context. The built
engine's layer precisions are read back with the engine inspector (``ProfilingVerbosity.DETAILED``)
into the session's ``precision`` and ``details``. Buffers are torch CUDA tensors bound with
``set_tensor_address`` (a False from it or ``set_input_shape`` is an error); one run is
``execute_async_v3`` on a dedicated stream followed by a stream sync before the clock stops.
Parsing, building and deserializing are compile time; the first run is recorded apart.
:meth:`Session.run` copies its input into the bound input buffer and the outputs back to the host.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from deploykit.errors import ModelError
from deploykit.runtimes import hostinfo
from deploykit.runtimes.base import RuntimeBackend, Session, device_index, single_input
from deploykit.runtimes.onnxfile import convert_to_fp16
from deploykit.runtimes.registry import register_backend

if TYPE_CHECKING:
    import numpy as np

    from deploykit.targets import Target

MIN_VERSION = (8, 6)  # named-tensor API: set_tensor_address, execute_async_v3


@register_backend
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

    def _open_session(self, onnx_path: Path, *, target: Target, input_shape: tuple[int, ...],
                      threads: int | None) -> Session:
        import tensorrt as trt
        import torch

        device = torch.device("cuda", device_index(target))
        torch.cuda.set_device(device)
        logger = trt.Logger(trt.Logger.WARNING)
        with tempfile.TemporaryDirectory(prefix="deploykit-trt-") as scratch:
            runtime, engine = build_engine(trt, logger, onnx_path, precision=target.precision,
                                           input_shape=input_shape, scratch=Path(scratch))
        return TensorRTSession(trt, torch, runtime, engine, path=onnx_path, input_shape=input_shape,
                               device=device, requested=target.precision)


class TensorRTSession(Session):
    """An engine and its execution context with every I/O tensor bound to a GPU buffer."""

    def __init__(self, trt, torch, runtime, engine, *, path: Path, input_shape: tuple[int, ...], device,
                 requested: str):
        import numpy as np

        context = engine.create_execution_context()
        buffers, input_name = _bind_buffers(trt, torch, engine, context, input_shape, device)
        layers = layer_precisions(engine_information(trt, engine))
        super().__init__(path=path, input_shape=input_shape,
                         input_dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(input_name))),
                         label=f"TensorRT {trt.__version__} ({device})", providers=(str(device),),
                         precision=read_back_precision(layers) or requested,
                         details=f"{_precision_note(trt, requested)}; {_layers_note(layers)}")
        self._torch = torch
        self._keep = (runtime, engine)  # the context needs its engine and runtime alive
        self._context = context
        self._buffers = buffers
        self._input = input_name
        self._stream = torch.cuda.Stream(device)

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("execute_async_v3 returned False (see the TensorRT log)")
        self._stream.synchronize()

    def _run(self, x: np.ndarray) -> list:
        self._fill_input(x)
        self._execute()
        return [t.cpu().numpy() for name, t in self._buffers.items() if name != self._input]

    def _timed_runner(self, x: np.ndarray):
        self._fill_input(x)
        return self._execute

    def _fill_input(self, x: np.ndarray) -> None:
        # one input buffer for both: a timed runner times whatever input was copied in last
        self._buffers[self._input].copy_(self._torch.from_numpy(x))
        self._torch.cuda.synchronize(self._buffers[self._input].device)

    def _release(self) -> None:
        self._context = self._buffers = self._keep = self._stream = None


def build_engine(trt, logger, onnx_path: Path, *, precision: str, input_shape: tuple[int, ...],
                 scratch: Path):
    """Parse ``onnx_path`` and build a deserialized engine for one static ``input_shape``."""
    strongly_typed = not hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11: every network is strongly typed
    source = onnx_path
    if precision == "fp16" and strongly_typed:
        source = convert_to_fp16(onnx_path, scratch / "model_fp16.onnx")
    builder = trt.Builder(logger)
    flags = 0
    if _version_tuple(trt.__version__) < (10, 0):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors or 'unknown parser error'}")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    single_input([t.name for t in inputs], onnx_path)
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for the inspector
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: fp32 layers would run in TF32 on Ampere+
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


def _bind_buffers(trt, torch, engine, context, input_shape: tuple[int, ...], device) -> tuple[dict, str]:
    """Allocate every I/O tensor on the GPU (zeros; runs copy their input in) and bind it to
    ``context``; the buffers by name in engine order, and the input's name."""
    import numpy as np

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for name in inputs:
        if not context.set_input_shape(name, input_shape):
            raise ModelError(f"TensorRT refused input shape {input_shape} for {name!r} "
                             "(see the TensorRT log)")
    buffers = {}
    for name in names:
        shape = tuple(context.get_tensor_shape(name))
        np_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        dtype = torch.from_numpy(np.empty(0, np_dtype)).dtype
        buffers[name] = torch.zeros(shape, dtype=dtype, device=device)
        if not context.set_tensor_address(name, buffers[name].data_ptr()):
            raise ModelError(f"TensorRT refused the buffer bound to {name!r} (see the TensorRT log)")
    return buffers, inputs[0]


def engine_information(trt, engine) -> dict | None:
    """The engine inspector's JSON description of ``engine`` (None when this TensorRT has no inspector)."""
    if not hasattr(engine, "create_engine_inspector"):
        return None
    text = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


# the inspector's type names: "DataType" in TensorRT 11, inside "Format/Datatype" before
# (bf16 first: its name contains "Float")
_TYPE_WORDS = (("bf16", ("BFloat16", "BF16")), ("fp16", ("Half", "FP16")), ("fp32", ("Float", "FP32")),
               ("int8", ("Int8", "INT8")), ("fp8", ("FP8",)))


def layer_precisions(information: dict | None) -> Counter:
    """How many of the engine's layers produce each precision (their first output's type), from the
    inspector's detailed JSON; empty when the layers were not described in detail."""
    counts: Counter = Counter()
    for layer in (information or {}).get("Layers", []):
        outputs = layer.get("Outputs") if isinstance(layer, dict) else None
        if not outputs or not isinstance(outputs[0], dict):
            continue
        text = str(outputs[0].get("DataType") or outputs[0].get("Format/Datatype") or "")
        kind = next((name for name, words in _TYPE_WORDS if any(w in text for w in words)), None)
        if kind:
            counts[kind] += 1
    return counts


def read_back_precision(counts: Counter) -> str | None:
    """The precision most layers run at, or None when nothing was read back."""
    return counts.most_common(1)[0][0] if counts else None


def _layers_note(counts: Counter) -> str:
    if not counts:
        return "layer precisions not read back (the engine inspector gave no detailed layer information)"
    shares = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    return f"layer outputs read back with the engine inspector: {shares}"


def _precision_note(trt, precision: str) -> str:
    if precision != "fp16":
        return f"{precision} (BuilderFlag.TF32 cleared)"
    if not hasattr(trt.BuilderFlag, "FP16"):
        return "fp16 (model converted to fp16, strongly typed network)"
    return "fp16 (BuilderFlag.FP16: TensorRT may keep a layer in fp32 where that is faster)"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
