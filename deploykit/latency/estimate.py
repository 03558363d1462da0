"""Roofline estimates: the latency of an ONNX graph on a target from the target's peak figures.

For hardware that is not here (``deploykit profile --estimate``). Per op of the exported (and
simplified) graph::

    time = max(FLOPs / peak FLOP/s, bytes / bandwidth) + per-op overhead

with FLOPs counted from the op type and the inferred shapes, bytes = every input read (weights
included) + every output written, at the target's precision, and the overhead a kernel launch
(5 µs on an accelerator) or a CPU op dispatch (1 µs). Ops that only relabel a tensor (Reshape,
Flatten, Squeeze, ...) cost nothing. An estimate ignores fusion, caches and occupancy: it is a
clearly labelled first guess, never mixed with measured rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError, ModelError, one_line

GPU_OP_OVERHEAD_S = 5e-6
CPU_OP_OVERHEAD_S = 1e-6
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}

# Ops that only change how a tensor is viewed: no kernel runs.
FREE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant",
                      "Dropout", "Size", "ConstantOfShape"})
# FLOPs per output element of elementwise ops that are not one arithmetic instruction.
ELEMENTWISE_FLOPS = {"Erf": 8, "Gelu": 8, "Tanh": 8, "Sigmoid": 4, "HardSigmoid": 2, "HardSwish": 3,
                     "Exp": 4, "Log": 4, "Sqrt": 2, "Reciprocal": 2, "Pow": 4, "Softplus": 6,
                     "Mish": 10, "Elu": 4, "Clip": 2, "Softmax": 5, "LogSoftmax": 6,
                     "LayerNormalization": 8, "BatchNormalization": 2, "InstanceNormalization": 8,
                     "GroupNormalization": 8}
# FLOPs per *input* element of reductions.
REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2",
                        "ReduceSumSquare", "GlobalAveragePool", "GlobalMaxPool"})
# Data movement only: bytes, no FLOPs.
MOVEMENT_OPS = frozenset({"Transpose", "Concat", "Slice", "Gather", "GatherElements", "Split", "Pad",
                          "Expand", "Tile", "Cast", "DepthToSpace", "SpaceToDepth", "Resize", "Where"})


@dataclass(frozen=True)
class Roofline:
    """The figures an estimate uses; recorded in the table's metadata."""

    peak_flops: float        # FLOP/s at the target's precision
    bandwidth: float         # bytes/s
    op_overhead_s: float     # added to every op that runs a kernel
    bytes_per_element: int
    precision: str
    device_kind: str         # "cpu" or "accelerator": which default overhead applies
    source: str              # where the peak figures come from

    @classmethod
    def from_target(cls, target: Any, *, op_overhead_s: float | None = None) -> Roofline:
        """The roofline of ``target`` (a :class:`deploykit.targets.Target`)."""
        precision = target.precision
        if precision not in target.peak.flops:
            raise ConfigError(f"target {target.name} has no peak FLOP/s for its precision {precision}")
        kind = device_kind(target)
        overhead = op_overhead_s if op_overhead_s is not None else (
            CPU_OP_OVERHEAD_S if kind == "cpu" else GPU_OP_OVERHEAD_S)
        if not (isinstance(overhead, (int, float)) and math.isfinite(overhead) and overhead >= 0):
            raise ConfigError(f"per-op overhead must be a non-negative number of seconds, got {overhead!r}")
        return cls(peak_flops=float(target.peak.flops[precision]), bandwidth=float(target.peak.bandwidth),
                   op_overhead_s=float(overhead), bytes_per_element=BYTES_PER_ELEMENT[precision],
                   precision=precision, device_kind=kind, source=target.peak.source)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def op_time_s(self, flops: float, nbytes: float) -> float:
        return max(flops / self.peak_flops, nbytes / self.bandwidth) + self.op_overhead_s


def device_kind(target: Any) -> str:
    """``cpu`` when the target runs on a CPU (ORT's CPU provider, an OpenVINO/runtime device "CPU")."""
    on_cpu = target.provider == "CPUExecutionProvider" or (target.runtime_device or "").upper() == "CPU"
    return "cpu" if on_cpu else "accelerator"


@dataclass(frozen=True)
class OpCost:
    name: str
    op_type: str
    flops: float
    bytes: float
    time_s: float


@dataclass(frozen=True)
class Estimate:
    """The estimated latency of one graph and how it splits."""

    ms: float
    ops: tuple[OpCost, ...]

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)

    @property
    def bytes(self) -> float:
        return sum(op.bytes for op in self.ops)


def estimate_onnx(path: str | Path, roofline: Roofline) -> Estimate:
    """Estimate the latency of the ONNX file at ``path`` (static shapes, as :func:`export_onnx` writes)."""
    import onnx

    try:
        model = onnx.load(str(path))
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as error:  # onnx raises several types for unreadable or inconsistent files
        raise ModelError(f"cannot read {path} for an estimate: {one_line(error)}") from None
    shapes = _shapes(model)
    ops = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ModelError(f"{path}: cannot estimate op {node.domain}::{node.op_type}")
        if node.op_type in FREE_OPS:
            continue
        ins = [shapes.get(name) for name in node.input if name]
        outs = [shapes.get(name) for name in node.output if name]
        if any(shape is None for shape in (*ins, *outs)):
            raise ModelError(f"{path}: the shapes around op {node.name or node.op_type} are unknown; "
                             "estimates need a static-shape export")
        flops = float(_flops(node, ins, outs))
        elements = sum(math.prod(s) for s in ins) + sum(math.prod(s) for s in outs)
        nbytes = float(elements * roofline.bytes_per_element)
        ops.append(OpCost(node.name, node.op_type, flops, nbytes, roofline.op_time_s(flops, nbytes)))
    return Estimate(ms=sum(op.time_s for op in ops) * 1000.0, ops=tuple(ops))


def _shapes(model) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            if all(d >= 0 for d in dims):
                shapes[info.name] = dims
    for node in model.graph.node:  # Constant nodes: their value's shape
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _attr(node, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _conv(node, ins, outs) -> float:
    weight = ins[1]
    return 2 * math.prod(outs[0]) * math.prod(weight[1:])


def _matmul(node, ins, outs) -> float:
    return 2 * math.prod(outs[0]) * ins[0][-1]


def _gemm(node, ins, outs) -> float:
    a = ins[0]
    inner = a[0] if _attr(node, "transA", 0) else a[-1]
    return 2 * math.prod(outs[0]) * inner


def _pool(node, ins, outs) -> float:
    return math.prod(outs[0]) * math.prod(_attr(node, "kernel_shape", [1]))


_FLOP_RULES: dict[str, Callable[..., float]] = {
    "Conv": _conv, "ConvTranspose": lambda node, ins, outs: 2 * math.prod(ins[0]) * math.prod(ins[1][1:]),
    "MatMul": _matmul, "Gemm": _gemm, "AveragePool": _pool, "MaxPool": _pool,
}


def _flops(node, ins, outs) -> float:
    op = node.op_type
    if op in _FLOP_RULES:
        return _FLOP_RULES[op](node, ins, outs)
    if op in MOVEMENT_OPS:
        return 0.0
    if op in REDUCTIONS:
        return float(math.prod(ins[0]))
    return float(ELEMENTWISE_FLOPS.get(op, 1) * sum(math.prod(s) for s in outs))
