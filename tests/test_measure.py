"""measure_onnx: one real measurement per fresh worker process, and clean errors when the worker fails."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_fixtures import tiny_onnx

from deploykit.errors import (
    ConfigError,
    DeployKitError,
    ModelError,
    RuntimeUnavailableError,
    TableError,
)
from deploykit.measure import measure_onnx, runtime_info, worker
from deploykit.protocol import Measurement, Protocol
from deploykit.targets import load_target

SHORT = Protocol(warmup_s=0.05, warmup_iters=3, min_time_s=0.05, min_iters=10, max_repeats=2)
SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def check(m: Measurement) -> None:
    assert isinstance(m, Measurement)
    assert m.n >= SHORT.min_iters and len(m.samples_ms) == m.n and 1 <= m.repeats <= SHORT.max_repeats
    assert 0 < min(m.samples_ms) <= m.median_ms <= m.p90_ms <= max(m.samples_ms)
    assert m.compile_s > 0 and m.first_run_ms > 0 and m.std_ms >= 0 and m.cv >= 0
    # min_time_s bounds the sampling phase's wall time (loop overhead included), so the samples' sum
    # may fall short of it for µs-scale runs; the time rule is tested with a scripted clock.
    assert sum(m.samples_ms) > 0


def test_measure_onnx_on_cpu_ort_in_a_worker_process(model):
    check(measure_onnx(model, target=load_target("cpu-ort"), protocol=SHORT, input_shape=SHAPE))


@pytest.mark.openvino
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_measure_onnx_on_cpu_openvino_in_a_worker_process(model):
    target = load_target("cpu-openvino")
    from deploykit.runtimes import availability

    ok, reason = availability(target)
    if not ok:
        pytest.skip(reason)
    check(measure_onnx(model, target=target, protocol=SHORT, input_shape=(2, 3, 16, 16)))


def test_a_corrupt_onnx_file_is_a_clean_error_from_the_worker(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not an ONNX protobuf")
    with pytest.raises(ModelError) as info:
        measure_onnx(bad, target=load_target("cpu-ort"), protocol=SHORT, input_shape=SHAPE)
    message = str(info.value)
    assert "corrupt.onnx" in message and "\n" not in message and "Traceback" not in message


def test_missing_file_and_bad_shape_fail_before_any_process(tmp_path):
    with pytest.raises(ModelError, match="ONNX file not found"):
        measure_onnx(tmp_path / "none.onnx", target=load_target("cpu-ort"), protocol=SHORT, input_shape=SHAPE)
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="input shape"):
        measure_onnx(tmp_path / "x.onnx", target=load_target("cpu-ort"), protocol=SHORT, input_shape=(0, 3))


def test_a_worker_that_gives_no_reply_is_a_deploykit_error(model, monkeypatch):
    from deploykit.measure import client as measure_module

    monkeypatch.setattr(measure_module, "WORKER_MODULE", "deploykit_no_such_worker_module")
    with pytest.raises(DeployKitError, match=r"gave no reply .*No module named deploykit_no_such_worker"):
        measure_onnx(model, target=load_target("cpu-ort"), protocol=SHORT, input_shape=SHAPE)


@pytest.mark.parametrize(("reply", "error", "text"), [
    ({"ok": False, "type": "RuntimeUnavailableError", "error": "no GPU"}, RuntimeUnavailableError, "no GPU"),
    ({"ok": False, "type": "ModelError", "error": "bad model"}, ModelError, "bad model"),
    ({"ok": False, "type": "SystemExit", "error": "odd"}, DeployKitError, "odd"),
    ({"ok": False, "type": "path", "error": "odd"}, DeployKitError, "odd"),
])
def test_worker_errors_keep_their_type(model, monkeypatch, reply, error, text):
    def check_request(command, payload):
        assert command[1:] == ["-m", "deploykit.measure.worker"]
        request = json.loads(payload)
        assert request["target"]["name"] == "cpu-ort" and request["input_shape"] == list(SHAPE)

    monkeypatch.setattr(subprocess, "Popen", scripted_worker("noise\n" + json.dumps(reply) + "\n", 1,
                                                             check=check_request))
    with pytest.raises(error, match=text) as info:
        measure_onnx(model, target=load_target("cpu-ort"), protocol=SHORT, input_shape=SHAPE)
    assert type(info.value) is error


def scripted_worker(stdout: str, returncode: int, *, check=None):
    """A stand-in for the worker process: replies ``stdout`` and exits with ``returncode``."""
    class Worker:
        def __init__(self, command, **kwargs):
            self.command, self.returncode = command, returncode

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def communicate(self, payload=None, timeout=None):
            if check is not None:
                check(self.command, payload)
            return stdout, ""

    return Worker


def test_a_malformed_measurement_reply_is_an_error(model, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", scripted_worker('{"ok": true, "measurement": {"n": 1}}\n', 0))
    with pytest.raises(TableError, match="malformed measurement"):
        measure_onnx(model, target=load_target("cpu-ort"), protocol=SHORT, input_shape=SHAPE)


def test_worker_request_handling_in_process(model):
    request = {"onnx_path": str(model), "target": load_target("cpu-ort").as_dict(),
               "protocol": SHORT.as_dict(), "input_shape": list(SHAPE)}
    reply = worker.handle(request)
    assert reply["ok"] and reply["runtime_version"] and reply["device"]
    assert reply["affinity"] is None  # in this process: never pinned
    check(Measurement.from_dict(reply["measurement"]))
    with pytest.raises(ConfigError, match="malformed latency worker request"):
        worker.handle({"target": request["target"]})
    with pytest.raises(ConfigError, match="unknown protocol key"):
        worker.handle({**request, "protocol": {"bogus": 1}})
    with pytest.raises(RuntimeUnavailableError):
        worker.handle({**request, "target": load_target("nvidia-t4").as_dict()})
    # target parsing asks no runtime: the worker has the runtime check what it serves
    bad = {**request["target"], "provider": "NoSuchExecutionProvider"}
    with pytest.raises(ConfigError, match=r"cpu-ort\.yaml: provider: unknown execution provider 'NoSuch"):
        worker.handle({**request, "target": bad})


def test_the_worker_process_pins_itself_to_one_cpu_per_thread(model):
    from deploykit.runtimes import hostinfo

    one = dataclasses.replace(SHORT, threads=1)
    request = {"onnx_path": str(model), "target": load_target("cpu-ort").as_dict(),
               "protocol": one.as_dict(), "input_shape": list(SHAPE)}
    root = str(Path(worker.__file__).resolve().parents[2])  # the folder that holds deploykit/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "deploykit.measure.worker"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=300, check=False, env=env)
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply["ok"], reply
    expected = hostinfo.pinned_cores(1)
    assert reply["affinity"] == (list(expected) if expected else None)
    assert expected is None or len(expected) == 1


def test_protocol_is_the_one_the_worker_uses(model):
    """The parent's protocol reaches the worker unchanged: a long minimum count shows in n."""
    # max_ci so wide that one round is always steady: n is then exactly the minimum count
    many = dataclasses.replace(SHORT, min_iters=57, min_time_s=0.0, max_ci=10.0)
    reply = worker.handle({"onnx_path": str(model), "target": load_target("cpu-ort").as_dict(),
                           "protocol": many.as_dict(), "input_shape": list(SHAPE)})
    assert reply["measurement"]["n"] == 57


def test_runtime_info_names_runtime_version_and_device():
    info = runtime_info(load_target("cpu-ort"))
    assert info["runtime"] == "onnxruntime" and info["runtime_version"] and info["device"]


def test_the_measure_module_is_not_shadowed():
    import deploykit.measure.client as module

    assert module.measure_onnx is measure_onnx
