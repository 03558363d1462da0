"""The ONNX file under test: its content hash and the input shape it runs with."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploykit.errors import ConfigError, ModelError
from deploykit.shapes import check_input_size


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_input_shape(path: str | Path, *, batch: int | None = None,
                     input_size: tuple[int, int] | None = None,
                     default_batch: int = 1, default_size: tuple[int, int] = (224, 224)) -> tuple[int, ...]:
    """The input shape to run ``path`` with: its static dims, dynamic ones from ``batch`` /
    ``input_size`` or the defaults; a given value that contradicts a static dim is a ConfigError."""
    from deploykit.export import onnx_summary
    from deploykit.runtimes.base import single_input

    inputs = onnx_summary(path)["inputs"]
    dims = inputs[single_input(list(inputs), Path(path))]
    if len(dims) != 4:
        raise ModelError(f"{path}: expected an image input (batch, channels, height, width), got {dims}")
    input_size = check_input_size(input_size) if input_size is not None else None
    asked = [batch, None, *(input_size or (None, None))]
    defaults = [default_batch, None, *default_size]
    shape = []
    for axis, (dim, want, default) in enumerate(zip(dims, asked, defaults)):
        if isinstance(dim, int) and dim > 0:
            if want is not None and want != dim:
                what = "batch" if axis == 0 else "input size"
                raise ConfigError(f"{path} has a fixed {what} ({dims}); it cannot run with "
                                  f"{what} {batch if axis == 0 else list(input_size)}")
            shape.append(dim)
        elif want is not None or default is not None:
            shape.append(want if want is not None else default)
        else:
            raise ModelError(f"{path}: the channel dimension of the input is not fixed ({dims})")
    return tuple(shape)
