"""Latency: the measurement protocol, measuring an ONNX file on a target in a fresh process.

Importing this package is cheap: no runtime SDK is loaded until something is measured. The protocol's
``measure`` function lives in :mod:`deploykit.latency.protocol` (not re-exported here, so that
``deploykit.latency.measure`` stays the module that holds :func:`measure_onnx`).
"""

from deploykit.latency.measure import measure_onnx, runtime_info
from deploykit.latency.protocol import Measurement, Protocol, add_protocol_arguments

__all__ = ["Measurement", "Protocol", "add_protocol_arguments", "measure_onnx", "runtime_info"]
