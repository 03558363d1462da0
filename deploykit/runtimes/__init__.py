"""Runtime backends, registered by name. Importing this package loads no vendor SDK.

``get_backend("onnxruntime")`` etc. returns the backend that compiles and times an ONNX file for a
target; see :class:`deploykit.runtimes.base.RuntimeBackend` for what every backend guarantees.
"""

from __future__ import annotations

from deploykit.errors import ConfigError
from deploykit.runtimes.base import RuntimeBackend
from deploykit.runtimes.migraphx_backend import MIGraphXBackend
from deploykit.runtimes.onnxruntime_backend import OnnxRuntimeBackend
from deploykit.runtimes.openvino_backend import OpenVINOBackend
from deploykit.runtimes.tensorrt_backend import TensorRTBackend

_REGISTRY: dict[str, RuntimeBackend] = {}


def register(backend: RuntimeBackend) -> RuntimeBackend:
    """Add a backend under its ``name`` (a second backend of the same name is a bug)."""
    if backend.name in _REGISTRY:
        raise ValueError(f"runtime backend {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend
    return backend


for _backend in (OnnxRuntimeBackend(), OpenVINOBackend(), TensorRTBackend(), MIGraphXBackend()):
    register(_backend)


def backends() -> dict[str, RuntimeBackend]:
    """Every registered backend by name."""
    return dict(_REGISTRY)


def get_backend(name: str) -> RuntimeBackend:
    """The backend called ``name``; ConfigError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown runtime {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


__all__ = ["RuntimeBackend", "backends", "get_backend", "register"]
