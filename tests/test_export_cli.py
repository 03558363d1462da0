"""`deploykit export`: a valid ONNX file from a timm name or a whole-module checkpoint, with a summary."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deploykit.cli import main
from deploykit.models import create_model


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_export_timm_name_writes_checked_onnx_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "atto.onnx"
    assert main(["export", "convnext_atto", "--input-size", "64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    assert f"nodes {len(model.graph.node)}" in text
    params = sum(p.numel() for p in create_model("convnext_atto").parameters())
    assert f"({params} in PyTorch" in text and "MACs" in text and "file size" in text
    assert str(out) in text
    assert not list(tmp_path.glob(".export-*"))  # no temporary left behind


def test_export_whole_module_checkpoint_with_dynamic_batch(tmp_path, capsys):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
    torch.save(module.eval(), tmp_path / "whole.pt")
    out = tmp_path / "dyn.onnx"
    assert main(["export", str(tmp_path / "whole.pt"), "--input-size", "16", "--dynamic-batch",
                 "--out", str(out)]) == 0
    assert "['batch', 3, 16, 16]" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 16), dtype=np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, module(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("missing/merged.pt", "checkpoint file not found"),
    ("convnext_attoo", "unknown model 'convnext_attoo'"),
])
def test_export_bad_input_is_one_line_exit_2(tmp_path, capsys, spec, message):
    assert main(["export", spec, "--out", str(tmp_path / "x.onnx")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "x.onnx").exists()


def test_export_refuses_a_state_dict_file(tmp_path, capsys):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
    assert main(["export", str(tmp_path / "sd.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "not a whole nn.Module" in one_line_error(capsys)
