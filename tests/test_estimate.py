"""Roofline estimates: per-op arithmetic on hand-built graphs, and `profile --estimate` tables."""

from __future__ import annotations

import math

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from timm.models.convnext import ConvNeXtBlock
from torch import nn

from deploykit.errors import ConfigError, TableError
from deploykit.latency.estimate import Roofline, estimate_onnx
from deploykit.latency.profile import profile
from deploykit.latency.table import LatencyTable, TableMeta
from deploykit.measure.host import LocalHost
from deploykit.targets import load_target

UNIT = Roofline(peak_flops=1e9, bandwidth=1e9, op_overhead_s=1e-6, bytes_per_element=4, precision="fp32",
                device_kind="cpu", source="test figures")


def save(tmp_path, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    return path


def test_conv_relu_reshape_by_hand(tmp_path):
    weight = numpy_helper.from_array(torch.randn(4, 3, 3, 3).numpy(), "w")
    shape = numpy_helper.from_array(torch.tensor([1, 256]).numpy(), "shape")
    path = save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["y"], ["z"]),
                           helper.make_node("Reshape", ["z", "shape"], ["out"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 256])], [weight, shape])
    estimate = estimate_onnx(path, UNIT)
    assert [op.op_type for op in estimate.ops] == ["Conv", "Relu"]  # Reshape runs no kernel
    conv, relu = estimate.ops
    assert conv.flops == 2 * (4 * 8 * 8) * (3 * 3 * 3)
    assert conv.bytes == 4 * (3 * 8 * 8 + 4 * 3 * 3 * 3 + 4 * 8 * 8)  # input + weights + output
    assert relu.flops == 256 and relu.bytes == 4 * 512
    expected_s = (max(13824e-9, 2224e-9) + 1e-6) + (max(256e-9, 2048e-9) + 1e-6)
    assert estimate.ms == pytest.approx(expected_s * 1000)


def test_gemm_and_matmul_count_the_inner_dimension(tmp_path):
    b = numpy_helper.from_array(torch.randn(8, 16).numpy(), "b")
    path = save(tmp_path, [helper.make_node("Gemm", ["a", "b"], ["c"], transB=1),
                           helper.make_node("MatMul", ["c", "m"], ["d"])],
                [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 16])],
                [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 4])],
                [b, numpy_helper.from_array(torch.randn(8, 4).numpy(), "m")])
    gemm, matmul = estimate_onnx(path, UNIT).ops
    assert gemm.flops == 2 * 2 * 8 * 16
    assert matmul.flops == 2 * 2 * 4 * 8


def test_roofline_comes_from_the_target():
    mi100 = Roofline.from_target(load_target("amd-mi100"))
    assert (mi100.precision, mi100.bytes_per_element, mi100.device_kind) == ("fp16", 2, "accelerator")
    assert mi100.peak_flops == load_target("amd-mi100").peak.flops["fp16"]
    assert mi100.op_overhead_s == pytest.approx(5e-6)
    cpu = Roofline.from_target(load_target("cpu-ort"))
    assert (cpu.device_kind, cpu.op_overhead_s) == ("cpu", pytest.approx(1e-6))
    with pytest.raises(ConfigError, match="non-negative"):
        Roofline.from_target(load_target("cpu-ort"), op_overhead_s=-1.0)


class TinyConvNeXt(nn.Module):
    """stem → two identical ConvNeXt blocks → pool → (functional flatten) → dropout → fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.BatchNorm2d(8))
        self.blocks = nn.Sequential(ConvNeXtBlock(8), ConvNeXtBlock(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.drop(self.pool(self.blocks(self.stem(x))).flatten(1)))


def tiny_convnext() -> nn.Module:
    torch.manual_seed(0)
    return TinyConvNeXt().eval()


def test_estimated_table_for_a_gpu_target(tmp_path, monkeypatch):
    def no_measuring(*args, **kwargs):
        raise AssertionError("an estimate must not measure anything")

    monkeypatch.setattr(LocalHost, "measure", no_measuring)
    target = load_target("amd-mi100")
    result = profile("tiny_convnext", target, input_size=32, batch=2, estimate=True,
                     out=tmp_path / "est.csv", model=tiny_convnext())
    table = LatencyTable.read(tmp_path / "est.csv")
    assert table.equals(result.table)
    assert table.meta.mode == "estimated" and table.meta.complete
    assert table.meta.estimate["peak_flops"] == target.peak.flops["fp16"]
    assert table.meta.device_string == "roofline estimate for AMD Instinct MI100"
    assert (table.meta.batch, table.meta.input_size) == (2, (32, 32))
    assert set(table.rows["source"]) == {"estimated"}
    assert set(table.rows["kind"]) == {"fixed", "block", "model"}
    assert (table.rows["median_ms"] >= 5e-3).all()  # at least one 5 µs kernel launch each
    assert table.rows["compile_s"].isna().all() and (table.rows["n"] == 0).all()
    assert math.isfinite(table.predict(table.prunable_indices))


def write_table(path, mode: str, target: str = "cpu-ort") -> None:
    meta = TableMeta(model="tiny_convnext", target=target, device="the local CPU (any)",
                     device_string="x", runtime="onnxruntime", runtime_version="1", provider=None,
                     precision="fp32", batch=1, input_size=(32, 32), threads=None, protocol={},
                     mode=mode, date="2026-01-01T00:00:00+00:00", deploykit_version="0.1.0")
    LatencyTable(meta=meta).write(path)


def test_estimating_into_a_measured_table_is_refused(tmp_path):
    write_table(tmp_path / "t.csv", "measured")
    with pytest.raises(TableError, match=r"measured table and this run is estimated.*never mix"):
        profile("tiny_convnext", load_target("cpu-ort"), input_size=32, estimate=True,
                out=tmp_path / "t.csv", model=tiny_convnext())


def test_measuring_into_an_estimated_table_is_refused(tmp_path):
    write_table(tmp_path / "t.csv", "estimated")
    with pytest.raises(TableError, match=r"estimated table and this run is measured.*never mix"):
        profile("tiny_convnext", load_target("cpu-ort"), input_size=32, out=tmp_path / "t.csv",
                model=tiny_convnext())
