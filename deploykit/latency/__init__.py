"""Latency: tables, the predictor fitted to end-to-end measurements, profiles, estimates, identity.

Everything here measures through :mod:`deploykit.measure` (an ONNX file timed on a target in a fresh
process, this machine or a device agent). Importing this package is cheap: no runtime SDK is loaded
until something is measured. The measurement protocol and its statistics live in
:mod:`deploykit.protocol` (at the bottom of the import graph, since the runtimes use them); they are
re-exported here for convenience.
"""

from deploykit.protocol import Measurement, Protocol

__all__ = ["Measurement", "Protocol"]
