"""`deploykit verify`: numerics against PyTorch, interleaved latency, table prediction, refusals.

Numerics run through the target's backend session: onnxruntime and OpenVINO for real, and the test
suite's fake backend (any backend with a session will do).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fake_backend import FakeBackend, fake_target_yaml, registered
from family_checks import active_model
from onnx import numpy_helper

from deploykit import prunable
from deploykit.cli import main
from deploykit.export import export_onnx
from deploykit.latency.table import LatencyTable
from deploykit.modelfile import ModelRecord, save_model
from deploykit.models import create_model
from deploykit.verify import VerifyReport

TINY = ["--min-time", "0.05", "--warmup-time", "0.01", "--min-iters", "5", "--warmup-iters", "2"]
# The run settings given: no settings probe (24 timed processes) before the check; the probe has tests of
# its own, and none of these claims depends on which settings verify runs with.
THREADS = ["--threads", "1"]
ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TABLE = "latency_tables/cpu-ort/convnext_tiny_224_b1.csv"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A merged convnext_atto (blocks 0, 3, 5 pruned) as a model file and m.onnx, the original as ref.onnx."""
    folder = tmp_path_factory.mktemp("verify")
    original = active_model("convnext_atto").eval()  # merged blocks that are not ≈ identities
    merged = prunable(original, input_size=64).prune([0, 3, 5]).set_progress(1.0).eval().merge()
    save_model(merged, folder / "merged.safetensors", ModelRecord("convnext_atto", 1000, (64, 64), (0, 3, 5)))
    export_onnx(merged, (1, 3, 64, 64), folder / "m.onnx")
    export_onnx(create_model("convnext_atto").eval(), (1, 3, 64, 64), folder / "ref.onnx")
    return folder


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_verify_passes_on_a_correct_export(models, capsys):
    report_path = models / "report.json"
    code = main(["verify", str(models / "m.onnx"), "--target", "cpu-ort",
                 "--torch", str(models / "merged.safetensors"), "--reference", str(models / "ref.onnx"),
                 "--inputs", "2", "--rounds", "2", "--out", str(report_path), "--no-paired", *TINY, *THREADS])
    out = capsys.readouterr().out
    assert code == 0, out
    report = VerifyReport.read(report_path)
    assert "paired" not in report.latency
    assert report.passed is True and report.numerics["passed"] and report.numerics["n_inputs"] == 2
    assert report.numerics["max_rel"] <= 1e-4 and report.numerics["tolerance"] == 1e-4
    assert report.runtime == "onnxruntime" and report.provider == "CPUExecutionProvider"
    assert report.input_shape == (1, 3, 64, 64) and len(report.model_sha256) == 64
    assert "real providers checked: CPUExecutionProvider" in report.numerics["how"]
    model, reference = report.latency["model"], report.latency["reference"]
    assert report.latency["rounds"] == 2 and len(model["round_medians_ms"]) == 2
    assert model["n"] >= 10 and reference["n"] >= 10
    ratios = [r / m for m, r in zip(model["round_medians_ms"], reference["round_medians_ms"])]
    assert report.latency["round_speedups"] == pytest.approx(ratios)
    assert report.speedup == pytest.approx(sum(ratios) / 2)  # the median of two
    assert model["median_ms"] == pytest.approx(sum(model["round_medians_ms"]) / 2)
    assert "numerics: PASS" in out and "speed-up vs reference" in out and "verdict: PASSED" in out
    assert VerifyReport.from_dict(json.loads(report_path.read_text())) == report
    assert not list(models.glob(".report.json.*"))


def test_verify_on_this_machines_cpu_pairs_the_model_with_its_reference(models, capsys):
    report_path = models / "paired.json"
    code = main(["verify", str(models / "m.onnx"), "--target", "cpu-ort", "--reference",
                 str(models / "ref.onnx"), "--rounds", "2", "--out", str(report_path), *TINY, *THREADS])
    assert code == 0, capsys.readouterr().out
    report = VerifyReport.read(report_path)
    latency = report.latency
    ratios, reference = latency["round_ratios"], latency["reference"]
    assert latency["paired"] and len(ratios) == 2 and len(reference["round_medians_ms"]) == 2
    # one process per round: the model's ms is its ratio × the reference's median over the rounds
    assert latency["model"]["round_medians_ms"] == pytest.approx([r * reference["median_ms"] for r in ratios])
    assert latency["model"]["median_ms"] == pytest.approx(sum(ratios) / 2 * reference["median_ms"])
    assert report.speedup == pytest.approx((1 / ratios[0] + 1 / ratios[1]) / 2)
    assert any(note.startswith("latency paired") for note in report.notes)


def test_verify_fails_on_a_tampered_onnx(models, capsys):
    model = onnx.load(str(models / "m.onnx"))
    # the classifier's weight: with timm's layer-scale init (1e-6) a block's weights barely reach the output
    head_inputs = set(model.graph.node[-1].input)
    largest = max((t for t in model.graph.initializer if t.name in head_inputs),
                  key=lambda t: int(np.prod(t.dims)))
    largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * 1.5, largest.name))
    onnx.save(model, str(models / "tampered.onnx"))
    report_path = models / "tampered.json"
    code = main(["verify", str(models / "tampered.onnx"), "--target", "cpu-ort", "--torch",
                 str(models / "merged.safetensors"), "--numerics-only", "--out", str(report_path), *THREADS])
    assert code == 1
    assert "numerics: FAIL" in capsys.readouterr().out
    report = VerifyReport.read(report_path)
    assert report.passed is False and report.numerics["max_rel"] > 1e-4 and report.latency is None


def test_verify_numerics_on_openvino_cpu_in_fp32(models, capsys):
    code = main(["verify", str(models / "m.onnx"), "--target", "cpu-openvino", "--torch",
                 str(models / "merged.safetensors"), "--numerics-only", "--inputs", "1", "--format", "json",
                 *THREADS])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"] is True and report["runtime"] == "openvino"
    assert "INFERENCE_PRECISION_HINT f32" in report["numerics"]["how"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small conv net (its outputs depend on every weight) as tiny.pt (a whole-module pickle this test
    wrote itself, so loading it with --unsafe-pickle is safe) and tiny.onnx, input 1x3x16x16."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    torch.save(net, folder / "tiny.pt")
    export_onnx(net, (1, 3, 16, 16), folder / "tiny.onnx")
    return folder


@pytest.mark.parametrize("scale, code, verdict", [(1.0, 0, "PASS"), (1.01, 1, "FAIL")])
def test_verify_numerics_through_the_fake_backend(tiny, tmp_path, capsys, scale, code, verdict):
    """Any backend with a session checks numerics; a 1 % wrong output fails (exit 1), the right one passes."""
    target = fake_target_yaml(tmp_path / "fake.yaml")
    fake = FakeBackend(tamper=lambda outputs: [y * scale for y in outputs])
    with registered(fake):
        result = main(["verify", str(tiny / "tiny.onnx"), "--target", str(target), "--torch",
                       str(tiny / "tiny.pt"), "--unsafe-pickle", "--numerics-only", "--inputs", "3",
                       "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert result == code and report["runtime"] == "fake" and report["passed"] is (code == 0)
    assert report["numerics"]["n_inputs"] == 3 and "ReferenceEvaluator" in report["numerics"]["how"]
    assert (report["numerics"]["max_rel"] <= 1e-4) is (code == 0)
    assert fake.runs == 3 and [s.closed for s in fake.opened] == [True]  # one session, closed after
    assert VerifyReport.from_dict(report).summary().count(f"numerics: {verdict}") == 1


def test_verify_refuses_a_fake_target_whose_device_is_missing(tiny, tmp_path, capsys):
    target = fake_target_yaml(tmp_path / "fake.yaml", runtime_device="missing")
    with registered(FakeBackend()):
        code = main(["verify", str(tiny / "tiny.onnx"), "--target", str(target), "--torch",
                     str(tiny / "tiny.pt"), "--unsafe-pickle", "--numerics-only"])
    assert code == 2
    assert "cannot verify on target fake-target here: fake device 'missing'" in one_line_error(capsys)


def test_verify_table_prediction_checks_the_table_against_the_model(models, tmp_path, capsys):
    # the shipped table as one from before fingerprints (whether the shipped one's fingerprint matches
    # depends on the machine the tests run on)
    unknown = tmp_path / "convnext_tiny_224_b1.csv"
    LatencyTable.read(ROOT / SHIPPED_TABLE).with_meta(fingerprint=None).write(unknown)
    args = ["verify", str(models / "m.onnx"), "--target", "cpu-ort", "--torch",
            str(models / "merged.safetensors"), "--numerics-only", "--inputs", "1", "--table", str(unknown),
            "--pruned", "0,3,5"]
    assert main(args) == 2  # the shipped table is for convnext_tiny at 224, the model is at 64
    assert "input size" in one_line_error(capsys)
    assert main([*args, "--allow-mismatch", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predicted_ms"] > 0 and report["pruned"] == [0, 3, 5]
    assert any("input size" in m for m in report["table_mismatches"])
    # a shipped table carries no fingerprint of this machine: said, never refused (verify measures here)
    assert any("measured on another machine" in note and "no machine fingerprint" in note
               for note in report["notes"])


def test_verify_refuses_a_silent_fallback(models, tmp_path, capsys):
    target = tmp_path / "fake-cuda.yaml"
    target.write_text(
        "description: CUDA through onnxruntime, absent here\ndevice: an NVIDIA GPU\nruntime: onnxruntime\n"
        "provider: CUDAExecutionProvider\nprecision: fp32\nbatch: 1\ninput_size: 64\n"
        "peak: {flops: {fp32: 1.0e+12}, bandwidth: 1.0e+11, source: test}\n")
    code = main(["verify", str(models / "m.onnx"), "--target", str(target), "--torch",
                 str(models / "merged.safetensors"), *TINY])
    assert code == 2
    err = one_line_error(capsys)
    assert "CUDAExecutionProvider" in err and "CPUExecutionProvider" in err


@pytest.mark.parametrize("args, message", [
    (["missing.onnx", "--target", "cpu-ort"], "ONNX file not found"),
    (["{m}", "--target", "no-such-target"], "unknown target 'no-such-target'"),
    (["{m}", "--target", "cpu-ort", "--torch", "missing/merged.pt"], "checkpoint file not found"),
    (["{m}", "--target", "cpu-ort", "--table", SHIPPED_TABLE], "--table needs the pruned blocks"),
])
def test_verify_bad_input_is_one_line_exit_2(models, capsys, args, message):
    args = [a.replace("{m}", str(models / "m.onnx")) for a in args]
    assert main(["verify", *args, *TINY]) == 2
    assert message in one_line_error(capsys)


def test_report_round_trip(tmp_path):
    report = VerifyReport(target="t", device="d", runtime="onnxruntime", runtime_version="1", provider=None,
                          precision="fp32", input_shape=(1, 3, 8, 8), model="m.onnx", model_sha256="0" * 64,
                          pruned=(1, 2), notes=("x",))
    assert VerifyReport.read(report.write(tmp_path / "r.json")) == report
