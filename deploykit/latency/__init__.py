"""Latency: measuring an ONNX file on a target in a fresh process, tables, profiles, identity.

Importing this package is cheap: no runtime SDK is loaded until something is measured. The measurement
protocol and its statistics live in :mod:`deploykit.protocol` (at the bottom of the import graph, since
the runtimes use them); they are re-exported here for convenience.
"""

from deploykit.latency.host import LocalHost, MeasureHost
from deploykit.latency.measure import measure_onnx, runtime_info
from deploykit.protocol import Measurement, Protocol

__all__ = ["LocalHost", "MeasureHost", "Measurement", "Protocol", "measure_onnx", "runtime_info"]
