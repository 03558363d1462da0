"""Runtime backends, registered by name. Importing this package loads no vendor SDK.

Each backend module registers its backend with :func:`register_backend`; importing this package
imports them. ``get_backend("onnxruntime")`` returns the backend, ``backend.session(...)`` opens an
ONNX file compiled for a target (see :class:`deploykit.runtimes.base.RuntimeBackend` for what every
backend guarantees). :func:`check_target` and :func:`availability` say whether a target can be served
as written and whether it can run here.
"""

from __future__ import annotations

from deploykit.runtimes import (  # noqa: F401  (imported to register their backends)
    migraphx_backend,
    onnxruntime_backend,
    openvino_backend,
    tensorrt_backend,
)
from deploykit.runtimes.base import RuntimeBackend, Session
from deploykit.runtimes.registry import backends, get_backend, register, register_backend, unregister
from deploykit.runtimes.targetcheck import availability, check_target, describe, format_targets

__all__ = ["RuntimeBackend", "Session", "availability", "backends", "check_target", "describe",
           "format_targets", "get_backend", "register", "register_backend", "unregister"]
