"""export_onnx: a valid, simplified ONNX file that onnxruntime runs with the module's outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from family_checks import active_model
from torch import nn

from deploykit import prunable
from deploykit.errors import ModelError
from deploykit.export import export_onnx


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def conv_bn_relu() -> nn.Module:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
    with torch.no_grad():
        module[1].running_mean.uniform_(-0.5, 0.5)
        module[1].running_var.uniform_(0.5, 2.0)
    return module.train()  # export must switch to eval itself and restore train mode after


def test_export_is_valid_and_onnxruntime_reproduces_the_module(tmp_path):
    module = conv_bn_relu()
    path = export_onnx(module, (2, 3, 16, 16), tmp_path / "sub" / "m.onnx")
    assert path == tmp_path / "sub" / "m.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu"]  # simplified: BN folded
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 16, 16]
    assert module.training and module[1].training
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = module.eval()(x).numpy()
    np.testing.assert_allclose(run_onnx(path, x), expected, rtol=1e-5, atol=1e-5)
    assert [p.name for p in tmp_path.rglob("*")] == ["sub", "m.onnx"]  # no work files left


def test_merged_block_exports_and_matches(tmp_path):
    model = active_model("convnext_atto")  # its merged 1×1 conv is not ≈ 0 (γ = 1e-6 when fresh)
    net = prunable(model, input_size=(32, 32)).eval()
    info = net.blocks[4]
    with torch.no_grad():
        merged = net.wrapper(info.index).merged().eval()
    path = export_onnx(merged, (1, *info.in_shape), tmp_path / "merged.onnx")
    x = torch.randn(1, *info.in_shape)
    with torch.no_grad():
        expected = merged(x).numpy()
    np.testing.assert_allclose(run_onnx(path, x), expected, rtol=1e-4, atol=1e-4)


def test_simplifier_failure_keeps_the_unsimplified_graph(tmp_path, monkeypatch):
    import onnxsim

    def broken(model, *args, **kwargs):
        raise RuntimeError("simplifier crashed\nwith details")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    with pytest.warns(RuntimeWarning, match="onnxsim could not simplify .*simplifier crashed"):
        path = export_onnx(conv_bn_relu(), (1, 3, 8, 8), tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = torch.randn(1, 3, 8, 8)
    assert run_onnx(path, x).shape == (1, 8, 8, 8)


def test_bad_shapes_and_unexportable_modules_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="every dimension must be positive"):
        export_onnx(conv_bn_relu(), (1, 3, 0, 8), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="cannot export Sequential at input shape"):
        export_onnx(conv_bn_relu(), (1, 5, 8, 8), tmp_path / "m.onnx")  # 5 channels into a 3-channel conv
    assert not (tmp_path / "m.onnx").exists()
