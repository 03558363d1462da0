"""Numerics: the ONNX file on the target's runtime against the PyTorch module, on seeded inputs.

The file runs where the measuring host runs it (:meth:`deploykit.measure.host.MeasureHost.outputs`):
in this process, or on a device agent (``--device``), which draws the same inputs from the seed and
sends the outputs back as arrays; PyTorch always runs here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.errors import ConfigError, DeviceError, ModelError
from deploykit.measure.outputs import inputs_digest, seeded_inputs

TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2}  # precision → largest max_rel that passes

__all__ = ["TOLERANCES", "check_numerics", "output_errors", "seeded_inputs", "torch_output"]


def check_numerics(onnx_path: str | Path, module, *, target, input_shape: Sequence[int],
                   n_inputs: int = 4, seed: int = 0, host=None) -> dict[str, Any]:
    """Run ``onnx_path`` in a session of ``target``'s runtime (in this process, any backend; or on the
    device agent of ``host``) and ``module`` in PyTorch (fp32, here) on the same seeded inputs; the
    errors and the verdict as a dict (see :class:`~deploykit.verify.report.VerifyReport`)."""
    from deploykit.measure.host import host_or_local

    if target.precision not in TOLERANCES:
        raise ConfigError(f"no numerics tolerance for precision {target.precision} "
                          f"(known: {', '.join(TOLERANCES)})")
    if n_inputs < 1:
        raise ConfigError(f"--inputs must be ≥ 1, got {n_inputs}")
    host = host_or_local(host)
    ran = host.outputs(onnx_path, target=target, input_shape=input_shape, seed=seed, n_inputs=n_inputs)
    inputs = seeded_inputs(input_shape, n_inputs, seed)
    if ran.inputs_sha256 != inputs_digest(inputs) or len(ran.outputs) != len(inputs):
        raise DeviceError(f"{host.describe()} ran {Path(onnx_path).name} on other inputs than the seed gives "
                          "here (another numpy version draws another stream?): the outputs cannot be "
                          "compared; install the same numpy on both machines")
    max_abs = max_rel = 0.0
    for x, y in zip(inputs, ran.outputs):
        diff, rel = output_errors(np.asarray(y, dtype=np.float32), torch_output(module, x),
                                  what=Path(onnx_path))
        max_abs, max_rel = max(max_abs, diff), max(max_rel, rel)
    how = ran.how
    tolerance = TOLERANCES[target.precision]
    return {"max_abs": max_abs, "max_rel": max_rel, "tolerance": tolerance,
            "passed": bool(max_rel <= tolerance), "n_inputs": n_inputs, "seed": seed, "how": how}


def torch_output(module, x: np.ndarray) -> np.ndarray:
    """``module(x)`` in fp32 as an array (the first output of a module that returns several)."""
    import torch

    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    if isinstance(expected, (tuple, list)):
        expected = expected[0]
    return expected.float().numpy()


def output_errors(got: np.ndarray, expected: np.ndarray, *, what: Path) -> tuple[float, float]:
    """``max |got − expected|`` and that over ``max |expected|`` (inf where it cannot be scaled)."""
    if got.shape != expected.shape:
        raise ModelError(f"{what} gives an output of shape {list(got.shape)}, the PyTorch model "
                         f"{list(expected.shape)}: they are not the same model")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.isfinite(diff):
        diff = float("inf")
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
