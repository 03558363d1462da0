"""`deploykit export`: a valid ONNX file from a model file, a timm name (+ weights) or, only with
--unsafe-pickle, a whole-module pickle, with a summary; a crafted pickle runs nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from onnx_fixtures import tiny_onnx

from deploykit.cli import main
from deploykit.modelfile import ModelRecord, save_model
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


def test_export_whole_module_pickle_only_with_unsafe_pickle_and_dynamic_batch(tmp_path, capsys):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
    torch.save(module.eval(), tmp_path / "whole.pt")
    out = tmp_path / "dyn.onnx"
    assert main(["export", str(tmp_path / "whole.pt"), "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "is a pickled torch.nn.modules.container.Sequential" in err and "--unsafe-pickle" in err
    assert "weights_only" not in err and not out.exists()
    assert main(["export", str(tmp_path / "whole.pt"), "--input-size", "16", "--dynamic-batch",
                 "--unsafe-pickle", "--out", str(out)]) == 0
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
    assert "holds weights, not a model: pass the timm model name with --weights" in one_line_error(capsys)


def _onnx_classes(path) -> int:
    return onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim[-1].dim_value


def test_export_takes_the_class_count_from_the_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    torch.save({"format": "deploykit-train/1", "kind": "baseline-weights", "state_dict": model.state_dict()},
               tmp_path / "model.pt")
    out = tmp_path / "r18.onnx"
    assert main(["export", "resnet18", "--weights", str(tmp_path / "model.pt"), "--input-size", "32",
                 "--out", str(out)]) == 0
    assert "note: classifier built for 10 classes, as in model.pt" in capsys.readouterr().err
    assert _onnx_classes(out) == 10
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0],
                                   model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


def test_export_a_model_file_at_its_own_input_size(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3).eval()
    path = save_model(model, tmp_path / "plain.safetensors", ModelRecord("resnet18", 3, (40, 48)))
    out = tmp_path / "plain.onnx"
    assert main(["export", str(path), "--out", str(out)]) == 0
    assert "input x [1, 3, 40, 48]" in capsys.readouterr().out and _onnx_classes(out) == 3
    assert main(["export", str(path), "--weights", str(path), "--out", str(out)]) == 2
    assert "--weights goes with a timm model name" in one_line_error(capsys)


class _Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["export", "verify"])
def test_a_crafted_pickle_runs_no_code_in_export_or_verify(tmp_path, command):
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.pt")
    args = {"export": ["export", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "x.onnx")],
            "verify": ["verify", str(tiny_onnx(tmp_path / "m.onnx")), "--target", "cpu-ort", "--torch",
                       str(tmp_path / "evil.pt"), "--numerics-only"]}[command]
    result = subprocess.run([sys.executable, "-m", "deploykit.cli", *args], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"deploykit {command}: error:"), result.stderr
    assert "is a pickled" in lines[0] and "deploykit convert" in lines[0] and "weights_only" not in lines[0]
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()
