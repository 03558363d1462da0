"""Verifying an exported model on its target: numerics against PyTorch, latency, prediction, speed-up.

:func:`verify` runs one ONNX file on a target's runtime and writes a :class:`VerifyReport`:

- **numerics** (when a PyTorch module is given; :mod:`.numerics`): the ONNX file and the module run on
  the same ``n_inputs`` seeded random-normal inputs; the error of each output is
  ``max |y_onnx − y_torch|`` (``max_abs``) and that divided by ``max |y_torch|`` (``max_rel``, relative
  to the output's scale, which stays meaningful where single elements are near zero). It passes when
  ``max_rel`` is within the precision's tolerance (:data:`TOLERANCES`). The ONNX file runs **in this
  process** in a session of the target's runtime backend (``backend.session``), which refuses to run
  anywhere other than where the target says (onnxruntime's real providers checked, OpenVINO's
  ``INFERENCE_PRECISION_HINT`` read back, ...); any backend that can open a session here will do.
  With ``--device URL`` it runs on the device agent instead (a fresh worker there, the inputs drawn
  from the seed on both sides and checked by digest, the outputs sent back as arrays); PyTorch runs here.
- **latency** (:mod:`.timing`): end to end under the measurement protocol, each measurement in a fresh
  worker process (:class:`deploykit.measure.host.MeasureHost`: here, or on the device), interleaved
  with the reference when one is given (model, reference, model, reference, …). A file's
  ``median_ms`` is the median of its rounds' medians (p90, mean, cv and n come from all its samples
  pooled); the speed-up is the median over rounds of reference median / model median within the
  round, so that a burst of load on a shared machine, which slows one round, cancels out of the ratio.
- **prediction**: the latency table's prediction for the pruned set (``table.predict``), after the
  table is checked against the target, device, runtime version, batch and input size; prediction
  error = (predicted − measured) / measured × 100 %.
"""

from deploykit.verify.check import check_torch_options, verify, verify_files
from deploykit.verify.files import file_sha256, onnx_input_shape
from deploykit.verify.numerics import TOLERANCES, check_numerics, seeded_inputs
from deploykit.verify.report import VerifyReport
from deploykit.verify.timing import measure_interleaved

__all__ = ["TOLERANCES", "VerifyReport", "check_numerics", "check_torch_options", "file_sha256",
           "measure_interleaved", "onnx_input_shape", "seeded_inputs", "verify", "verify_files"]
