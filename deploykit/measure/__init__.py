"""The measuring service: one ONNX file timed (or run on seeded inputs) on a target, in a fresh process.

Below :mod:`deploykit.latency` (tables, fit, profile) and :mod:`deploykit.remote` (the device agent,
which serves these same measurements on its machine); above the runtimes, targets and protocol.
Modules:

- ``host``: :class:`MeasureHost`, the one measuring hook every stage uses, and :class:`LocalHost`
  (this machine); ``deploykit.remote.host.RemoteHost`` is the other kind;
- ``client``: :func:`measure_onnx`, :func:`measure_paired_onnx`, :func:`run_outputs`: each in a fresh
  ``python -m deploykit.measure.worker`` process;
- ``worker``: that process;
- ``outputs``: a file's outputs on seeded inputs (verify's numerics) and :class:`SeededOutputs`, the
  numbers that travel back from a worker or a device agent;
- ``fingerprint``: what makes latency comparable between two machines;
- ``contention``: the guard that waits for quiet before a measurement and flags what was not;
- ``processes``: what else runs on the machine (``/proc``), read by the guard and the sentinel.

Importing this package is cheap and needs neither torch nor pandas (a board's agent imports it): no
runtime SDK is loaded until something is measured.
"""

from deploykit.measure.client import measure_onnx, runtime_info
from deploykit.measure.host import LocalHost, MeasureHost

__all__ = ["LocalHost", "MeasureHost", "measure_onnx", "runtime_info"]
