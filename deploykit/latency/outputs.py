"""An ONNX file's outputs on seeded inputs, on a target's runtime: what verify's numerics compare.

The inputs are drawn from a seed (:func:`seeded_inputs`), so the machine that runs the model and the one
that runs PyTorch draw the same ones without sending them; :attr:`SeededOutputs.inputs_sha256` proves
they did. The outputs travel between processes and machines as arrays of numbers
(:class:`deploykit.remote.wire.SeededOutputs`), never as a pickle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.remote.wire import SeededOutputs, check_run_request


def seeded_inputs(shape: Sequence[int], n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` standard-normal float32 inputs of ``shape`` from ``seed`` (the same on every machine with
    the same numpy stream; :func:`inputs_digest` checks that)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape), dtype=np.float32) for _ in range(n)]


def inputs_digest(inputs: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for x in inputs:
        digest.update(np.ascontiguousarray(x, dtype="<f4").tobytes())
    return digest.hexdigest()


def run_seeded(onnx_path: str | Path, *, target: Any, input_shape: Sequence[int], seed: int,
               n_inputs: int) -> SeededOutputs:
    """Open ``onnx_path`` in a session of ``target``'s runtime, in this process, and run it on the
    seeded inputs; the first output of each run."""
    from deploykit.runtimes import check_target

    check_run_request(n_inputs, seed, most=None)
    backend = check_target(target)
    inputs = seeded_inputs(input_shape, n_inputs, seed)
    with backend.session(onnx_path, target=target, input_shape=input_shape) as session:
        outputs = tuple(np.asarray(session.run(x)[0]) for x in inputs)
        how = f"{session.label}, {session.details}"
    return SeededOutputs(outputs=outputs, how=how, inputs_sha256=inputs_digest(inputs))
