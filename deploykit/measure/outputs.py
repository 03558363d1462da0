"""An ONNX file's outputs on seeded inputs, on a target's runtime: what verify's numerics compare.

The inputs are drawn from a seed (:func:`seeded_inputs`), so the machine that runs the model and the one
that runs PyTorch draw the same ones without sending them; :attr:`SeededOutputs.inputs_sha256` proves
they did. The outputs travel between processes and machines as arrays of numbers
(:class:`SeededOutputs`, :func:`encode_array`), never as a pickle: from a measuring worker to its caller,
and from a device agent to its client (:mod:`deploykit.remote.wire` sends them as they are here).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.checks import require_int
from deploykit.errors import ConfigError, DeviceError

# The dtypes an output may travel as; anything else is refused rather than reinterpreted.
_DTYPES = ("float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool")
MAX_INPUTS = 64


@dataclass(frozen=True)
class SeededOutputs:
    """The first output of the model for each of ``n_inputs`` seeded inputs, and how they were run."""

    outputs: tuple[np.ndarray, ...]
    how: str                 # the session's label and details, and where it ran
    inputs_sha256: str       # of the inputs the runtime was fed (both sides must have drawn the same)

    def as_dict(self) -> dict[str, Any]:
        return {"outputs": [encode_array(y) for y in self.outputs], "how": self.how,
                "inputs_sha256": self.inputs_sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, what: str) -> SeededOutputs:
        try:
            outputs = tuple(decode_array(item) for item in data["outputs"])
            return cls(outputs=outputs, how=str(data["how"]), inputs_sha256=str(data["inputs_sha256"]))
        except (KeyError, TypeError) as error:
            raise DeviceError(f"{what} sent malformed outputs ({error!r})") from None


def check_run_request(n_inputs: Any, seed: Any, *, most: int | None = MAX_INPUTS) -> None:
    """A ConfigError for an input count or seed that cannot be used (``most``: the largest count, for
    a run whose outputs travel back; None: no bound)."""
    require_int("--inputs", n_inputs, least=1, most=most)
    require_int("--seed", seed, least=0)


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}``: the array's little-endian bytes in base64."""
    array = np.asarray(array)
    if array.dtype.name not in _DTYPES:
        raise ConfigError(f"an output of dtype {array.dtype} cannot be sent (known: {', '.join(_DTYPES)})")
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": base64.b64encode(data).decode()}


def decode_array(item: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`; a TypeError for anything that is not one."""
    if not isinstance(item, Mapping) or item.get("dtype") not in _DTYPES:
        raise TypeError("not an encoded array")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise TypeError("bad array shape")
    try:
        raw = base64.b64decode(str(item.get("data", "")), validate=True)
    except ValueError as error:
        raise TypeError(f"bad array data: {error}") from None
    dtype = np.dtype(item["dtype"]).newbyteorder("<")
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise TypeError("array data does not fit its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


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
