"""Exporting a module to one ONNX file: torch.onnx (dynamo) → onnxsim → onnx.checker.

Used for every latency-table entry (a block, a fixed part, the whole model) and for the final
merged subnet. The input shape is fixed (batch included): runtimes time static shapes best and the
latency table is per batch size and input size anyway.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from deploykit.errors import ModelError, one_line
from deploykit.fileio import check_output_file, replace_file, scratch_dir
from deploykit.macs import eval_mode


def export_onnx(module: nn.Module, input_shape: Sequence[int], path: str | Path, *,
                opset: int | None = None, simplify: bool = True, dynamic_batch: bool = False) -> Path:
    """Export ``module`` in eval mode at ``input_shape`` (batch included) to ``path`` and return it.

    The graph is simplified with onnxsim (if that fails, the unsimplified graph is kept and a
    RuntimeWarning says why) and validated with ``onnx.checker``. The file is written atomically.

    ``dynamic_batch`` makes the first input dimension a named dynamic dimension ``batch`` (through the
    dynamo exporter's ``dynamic_shapes``; the example input then has batch ≥ 2, since torch.export
    specializes a size of 1). A simplified graph that lost the dynamic batch is not used: the
    unsimplified graph is kept and a RuntimeWarning says so.
    """
    import onnx

    path = Path(path)
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) <= 0:
        raise ModelError(f"cannot export with input shape {shape}: every dimension must be positive")
    check_output_file(path)
    param = next(module.parameters(), None)
    if dynamic_batch:
        shape = (max(shape[0], 2), *shape[1:])
    x = torch.zeros(shape, dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    name = type(module).__name__
    with scratch_dir(path) as work:
        raw = work / "raw.onnx"
        _torch_export(module, x, raw, opset=opset, name=name, dynamic_batch=dynamic_batch)
        model = onnx.load(str(raw))
        if simplify:
            simplified = _simplify(model, name)
            if dynamic_batch and not _batch_is_dynamic(simplified):
                warnings.warn(f"onnxsim fixed the dynamic batch of the export of {name}; "
                              "using the unsimplified graph", RuntimeWarning, stacklevel=2)
            else:
                model = simplified
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
            raise ModelError(f"the ONNX export of {name} is invalid: {one_line(error)}") from None
        final = work / "final.onnx"
        onnx.save(model, str(final))
        replace_file(final, path)
    return path


def _torch_export(module: nn.Module, x: torch.Tensor, path: Path, *, opset: int | None, name: str,
                  dynamic_batch: bool = False) -> None:
    # The dynamo exporter reports progress and internal warnings that mean nothing to a user of
    # deploykit; a failure still surfaces as an exception, turned into a one-line ModelError.
    quiet = io.StringIO()
    try:
        with torch.no_grad(), eval_mode(module), warnings.catch_warnings(), \
                contextlib.redirect_stdout(quiet), _reused_torchlib_registry():
            warnings.simplefilter("ignore")
            dynamic = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=opset,
                              external_data=False, verbose=False, dynamic_shapes=dynamic)
    except Exception as error:  # the exporter raises many types; all mean "cannot export"
        raise ModelError(f"cannot export {name} at input shape {tuple(x.shape)} to ONNX: "
                         f"{one_line(error)}") from None


_REGISTRIES: dict[tuple[type, int | None], object] = {}


@contextlib.contextmanager
def _reused_torchlib_registry() -> Iterator[None]:
    """Build the exporter's aten → ONNX function registry once per process instead of once per export.

    ``torch.onnx.export(dynamo=True)`` rebuilds that registry (parsing ~500 onnxscript functions,
    about a second) on every call; a profile exports dozens of blocks. The registry is only read
    during an export unless ``custom_translation_table`` is given, which deploykit never does. This
    reaches into torch's exporter internals, so it is skipped when they are not as expected.
    """
    try:
        from torch.onnx._internal.exporter import _registration

        registry_class = _registration.ONNXRegistry
        original = registry_class.__dict__["from_torchlib"]
        build = original.__func__
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def reused(cls, *args, **kwargs):
        key = (cls, *args, *sorted(kwargs.items()))
        if key not in _REGISTRIES:
            _REGISTRIES[key] = build(cls, *args, **kwargs)
        return _REGISTRIES[key]

    registry_class.from_torchlib = classmethod(reused)
    try:
        yield
    finally:
        registry_class.from_torchlib = original


def _simplify(model, name: str):
    try:
        import onnxsim

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            simplified, ok = onnxsim.simplify(model)
    except Exception as error:  # onnxsim fails in many ways on graphs it does not know
        ok, reason = False, one_line(error)
    else:
        reason = "its check of the simplified graph against the original failed"
    if not ok:
        warnings.warn(f"onnxsim could not simplify the export of {name} ({reason}); "
                      "using the unsimplified graph", RuntimeWarning, stacklevel=3)
        return model
    return simplified


def _batch_is_dynamic(model) -> bool:
    """Whether the model's first input has a symbolic (not fixed) first dimension."""
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else ()
    return bool(dims) and not dims[0].HasField("dim_value")


def onnx_summary(path: str | Path) -> dict:
    """What an exported file holds: node count, initializer values, file size, opsets, input and
    output shapes (a dynamic dimension by its name)."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and others for a file that is not ONNX
        raise ModelError(f"cannot read ONNX file {path}: {one_line(error)}") from None

    def shape(value) -> list:
        return [d.dim_param if not d.HasField("dim_value") else int(d.dim_value)
                for d in value.type.tensor_type.shape.dim]

    initializers = {i.name for i in model.graph.initializer}
    return {
        "path": str(path),
        "nodes": len(model.graph.node),
        "initializer_values": sum(int(math.prod(i.dims)) for i in model.graph.initializer),
        "size_bytes": path.stat().st_size,
        "opset": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
        "inputs": {v.name: shape(v) for v in model.graph.input if v.name not in initializers},
        "outputs": {v.name: shape(v) for v in model.graph.output},
    }
