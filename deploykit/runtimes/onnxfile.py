"""Small ONNX-file helpers shared by backends: the graph's real inputs, fp16 conversion."""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import ModelError, one_line


def load(path: Path, *, with_weights: bool = True):
    """``onnx.load``; a corrupt or unreadable file is a ModelError."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=with_weights)
    except Exception as error:  # onnx raises DecodeError and friends for a corrupt file
        raise ModelError(f"cannot read ONNX file {path}: {one_line(error)}") from None


def input_names(path: Path) -> list[str]:
    """The graph inputs that are not initializers (the tensors a caller must feed)."""
    graph = load(path, with_weights=False).graph
    initializers = {init.name for init in graph.initializer}
    return [value.name for value in graph.input if value.name not in initializers]


def convert_to_fp16(src: Path, dst: Path) -> Path:
    """Convert a model's float weights and compute to fp16, keeping fp32 inputs and outputs.

    For runtimes with no fp16 switch of their own (onnxruntime's CUDA/ROCm/DirectML providers,
    TensorRT ≥ 11 whose networks are strongly typed). Uses onnxruntime's converter.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(load(src), keep_io_types=True), str(dst))
    return dst
