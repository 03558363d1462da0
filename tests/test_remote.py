"""The device agent (`deploykit serve`) and its client, tested against a real agent in a subprocess."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from onnx_fixtures import tiny_onnx

from deploykit.errors import AuthError, ConfigError, DeviceError, ModelError, RuntimeUnavailableError
from deploykit.measure.client import measure_onnx, runtime_info
from deploykit.measure.fingerprint import for_target
from deploykit.protocol import Protocol
from deploykit.remote.client import DeviceClient, RetryPolicy, describe_measurement
from deploykit.remote.device import ServedTargets, check_onnx_upload
from deploykit.remote.local import LocalAgent
from deploykit.remote.wire import REQUEST_HEADER, TOKEN_ENV, MeasureRequest, read_token, token_from
from deploykit.targets import load_target

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
TINY = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.01, min_iters=5, max_repeats=1)
SHAPE = (1, 3, 16, 16)
TOKEN = "test-token-0123456789abcdef"
FAST_RETRY = RetryPolicy(attempts=3, first_delay_s=0.01, factor=2.0, max_delay_s=0.05)
LIMIT_MB = 0.25


class Agent(LocalAgent):
    """The test's agent: a known token, clients that retry fast."""

    def __init__(self, workdir: Path, *options: str, **kwargs):
        super().__init__(workdir, *options, token=TOKEN, **kwargs)

    def client(self, **options) -> DeviceClient:
        options.setdefault("retry", FAST_RETRY)
        return super().client(**options)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    with Agent(tmp_path_factory.mktemp("agent"), "--targets", "cpu-ort", "--max-upload-mb", str(LIMIT_MB),
               "--timeout", "60") as process:
        yield process


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def cpu_ort():
    return load_target("cpu-ort")


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


def raw_request(url: str, method: str, path: str, *, headers: dict[str, str], body: bytes = b""):
    """One HTTP request without the client's checks; (status, JSON body)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def read_reply(sock: socket.socket) -> str:
    """One HTTP reply from a raw socket: its head, and its body as far as its content-length says."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data.decode(errors="replace")


def _content_length(data: bytes) -> int:
    match = re.search(rb"content-length: (\d+)", data, re.IGNORECASE)
    return int(match.group(1)) if match else 0


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


# --- what the agent serves ---------------------------------------------------------------------------

def test_targets_fingerprint_and_health(agent, cpu_ort):
    client = agent.client()
    rows = {row["name"]: row for row in client.targets()}
    assert rows["cpu-ort"]["served"] is True
    assert rows["cpu-ort"]["runtime_version"] == runtime_info(cpu_ort)["runtime_version"]
    assert client.runtime_info(cpu_ort) == runtime_info(cpu_ort)
    others = [row for name, row in rows.items() if name != "cpu-ort"]
    assert others and all(not row["served"] and "not served by this agent" in row["reason"] for row in others)
    fingerprint = client.fingerprint()
    served = fingerprint["targets"]["cpu-ort"]
    assert served == {**runtime_info(cpu_ort), "fingerprint": for_target(cpu_ort, threads=None).stored()}
    assert {"arch", "cpu", "logical_cpus", "os", "hostname"} <= set(fingerprint)
    health = client.health()
    assert health["max_upload_bytes"] == int(LIMIT_MB * 2**20)
    assert {"queued", "measuring"} <= set(health)


def test_device_command_lists_the_agent(agent, capsys, monkeypatch):
    from deploykit.cli import main

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert main(["device", agent.url, "--retries", "2"]) == 0
    out = capsys.readouterr().out
    assert "cpu-ort: served: onnxruntime" in out and "cpu-openvino: not served" in out


# --- measuring ---------------------------------------------------------------------------------------

def test_a_remote_measurement_has_the_structure_of_a_local_one(agent, tiny, cpu_ort):
    local = measure_onnx(tiny, target=cpu_ort, protocol=TINY, input_shape=SHAPE)
    remote = agent.client().measure_remote(tiny, target=cpu_ort, protocol=TINY, input_shape=SHAPE)
    assert set(remote.measurement.as_dict()) == set(local.as_dict())
    measured = remote.measurement
    assert measured.n >= TINY.min_iters and len(measured.samples_ms) == measured.n
    assert remote.measurement.repeats == 1 and remote.measurement.compile_s > 0
    info = runtime_info(cpu_ort)
    assert (remote.runtime, remote.runtime_version, remote.device) == (
        info["runtime"], info["runtime_version"], info["device"])
    assert remote.fingerprint["targets"]["cpu-ort"]["runtime_version"] == info["runtime_version"]
    assert remote.load_average is None or len(remote.load_average) == 3
    assert remote.started_at < remote.finished_at
    assert "tiny.onnx on cpu-ort" in describe_measurement(remote)
    agent.wait_for("200 POST /measure")


def test_concurrent_measurements_queue_and_never_overlap(agent, tiny, cpu_ort):
    slow = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=1.0, min_iters=5, max_repeats=1)
    results, errors = [], []

    def measure():
        try:
            results.append(agent.client().measure_remote(tiny, target=cpu_ort, protocol=slow,
                                                         input_shape=SHAPE))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=measure) for _ in range(2)]
    for thread in threads:
        thread.start()
    seen_queue = False
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        health = agent.client().health()
        seen_queue |= health["measuring"] is not None and health["queued"] == 1
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 2
    first, second = sorted(results, key=lambda r: r.started_at)
    assert first.finished_at <= second.started_at  # the second worker started after the first ended
    assert second.queued_s > 0
    assert seen_queue  # while one measured, /health showed the other waiting


def test_a_measurement_past_its_timeout_is_killed(agent, tiny, cpu_ort):
    endless = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=120.0, min_iters=5, max_repeats=1)
    began = time.monotonic()
    with pytest.raises(DeviceError, match="did not finish within 1 s; the worker was killed") as caught:
        agent.client().measure(tiny, target=cpu_ort, protocol=endless, input_shape=SHAPE, timeout_s=1)
    one_line(caught.value)
    assert time.monotonic() - began < 30
    agent.wait_for("504 POST /measure")


def test_a_measurement_without_an_interval_travels_as_nan(agent, tiny, cpu_ort):
    """Too few runs for a confidence interval: nan bounds, sent as JSON null and read back as nan."""
    import math

    once = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.0, min_iters=1, max_repeats=1)
    measured = agent.client().measure(tiny, target=cpu_ort, protocol=once, input_shape=SHAPE)
    assert measured.n >= 1 and measured.median_ms > 0
    if measured.n < 6:  # no order-statistics interval for the median of so few samples
        assert math.isnan(measured.ci_low_ms) and math.isnan(measured.ci_half_width)


def test_run_on_seeded_inputs_returns_the_outputs_of_a_local_run(agent, tiny, cpu_ort):
    import numpy as np

    from deploykit.measure.outputs import run_seeded

    remote = agent.client().run_remote(tiny, target=cpu_ort, input_shape=SHAPE, seed=3, n_inputs=2)
    local = run_seeded(tiny, target=cpu_ort, input_shape=SHAPE, seed=3, n_inputs=2)
    assert remote.outputs.inputs_sha256 == local.inputs_sha256
    assert len(remote.outputs.outputs) == 2
    for theirs, ours in zip(remote.outputs.outputs, local.outputs):
        assert theirs.dtype == ours.dtype and theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    assert not np.allclose(remote.outputs.outputs[0], remote.outputs.outputs[1])  # two different inputs
    assert remote.fingerprint["targets"]["cpu-ort"]["runtime"] == "onnxruntime"
    agent.wait_for("running tiny.onnx on cpu-ort, 2 seeded input(s) 1x3x16x16")


def test_a_non_onnx_run_upload_is_refused_without_running_anything(agent, tmp_path, cpu_ort):
    from deploykit.remote.wire import RunRequest

    started = agent.client().health()["workers_started"]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model" * 10)
    with pytest.raises(ModelError, match="not an ONNX model") as caught:
        agent.client().run_remote(garbage, target=cpu_ort, input_shape=SHAPE, seed=0, n_inputs=1)
    one_line(caught.value)
    order = RunRequest(target="cpu-ort", input_shape=SHAPE, seed=0, n_inputs=1).as_header()
    status, body = raw_request(agent.url, "POST", "/run", headers={**auth(), REQUEST_HEADER: order[:-1]},
                               body=b"x")
    assert status == 422 and "not valid JSON" in body["error"]
    assert agent.client().health()["workers_started"] == started


# --- what the agent refuses ----------------------------------------------------------------------------

def test_a_wrong_or_missing_token_is_refused(agent, cpu_ort, tiny):
    with pytest.raises(AuthError, match="wrong or missing token") as caught:
        agent.client(token="not-the-token-0123456789").targets()
    one_line(caught.value)
    with pytest.raises(AuthError):
        agent.client(token="not-the-token-0123456789").measure(tiny, target=cpu_ort, protocol=TINY,
                                                                input_shape=SHAPE)
    status, body = raw_request(agent.url, "GET", "/fingerprint", headers={})
    assert status == 401 and body["type"] == "AuthError"
    status, body = raw_request(agent.url, "GET", "/health", headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401
    agent.wait_for("401 GET /fingerprint from 127.0.0.1: AuthError: wrong or missing token")


def test_an_oversized_upload_is_refused_before_it_is_read(agent):
    """A chunked body far over the limit: the agent answers 413 while the sender still has most of it."""
    from urllib.parse import urlsplit

    order = MeasureRequest(target="cpu-ort", input_shape=SHAPE, protocol=TINY).as_header()
    parts = urlsplit(agent.url)
    chunk, total = b"x" * 65536, 256 * 2**20
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((f"POST /measure HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"{REQUEST_HEADER}: {order}\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:  # the agent closed the connection after its answer
            pass
        reply = read_reply(sock)
    assert reply.startswith("HTTP/1.1 413"), reply
    assert '"type":"ModelError"' in reply and "--max-upload-mb" in reply
    assert sent < total // 8  # the sender was stopped long before its body was all read


def test_an_upload_declared_too_large_is_refused_at_once(agent, tmp_path, cpu_ort):
    order = MeasureRequest(target="cpu-ort", input_shape=SHAPE, protocol=TINY).as_header()
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(agent.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("POST", "/measure")
    for key, value in {**auth(), REQUEST_HEADER: order, "Content-Length": str(10 * 2**20)}.items():
        conn.putheader(key, value)
    conn.endheaders()  # no body sent at all
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["type"] == "ModelError"
    conn.close()
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * int(0.5 * 2**20))
    with pytest.raises(ModelError, match="over the upload limit of the device") as caught:
        agent.client().measure(big, target=cpu_ort, protocol=TINY, input_shape=SHAPE)
    one_line(caught.value)


def test_a_non_onnx_upload_is_refused_without_running_anything(agent, tmp_path, cpu_ort, tiny):
    import onnx

    started = agent.client().health()["workers_started"]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"#!/bin/sh\nrm -rf /\n" * 10)
    with pytest.raises(ModelError, match=r"not an ONNX model|fails the ONNX checker") as caught:
        agent.client().measure(garbage, target=cpu_ort, protocol=TINY, input_shape=SHAPE)
    one_line(caught.value)
    broken = onnx.load(str(tiny))
    broken.graph.node[1].input[0] = "nowhere"  # a node reading a tensor nothing produces
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        agent.client().measure(tmp_path / "broken.onnx", target=cpu_ort, protocol=TINY, input_shape=SHAPE)
    status, body = raw_request(agent.url, "POST", "/measure", headers=auth(), body=b"")
    assert status == 422 and body["type"] == "ConfigError"  # no request header
    assert agent.client().health()["workers_started"] == started  # no worker ever started
    agent.wait_for("422 POST /measure from 127.0.0.1: ModelError")


def test_an_unknown_or_unserved_target_is_one_line(agent, tiny, tmp_path, cpu_ort):
    order = MeasureRequest(target="no-such-target", input_shape=SHAPE, protocol=TINY).as_header()
    status, body = raw_request(agent.url, "POST", "/measure", headers={**auth(), REQUEST_HEADER: order},
                               body=tiny.read_bytes())
    assert status == 404 and body["type"] == "ConfigError" and "unknown target" in body["error"]
    with pytest.raises(ConfigError, match="does not serve target cpu-openvino") as caught:
        agent.client().measure(tiny, target=load_target("cpu-openvino"), protocol=TINY, input_shape=SHAPE)
    one_line(caught.value)
    renamed = tmp_path / "elsewhere.yaml"
    renamed.write_text((ROOT / "targets" / "cpu-ort.yaml").read_text() + "name: elsewhere\n")
    with pytest.raises(ConfigError, match="does not know target elsewhere"):
        agent.client().measure(tiny, target=load_target(renamed), protocol=TINY, input_shape=SHAPE)
    settled = tmp_path / "cpu-ort.yaml"
    settled.write_text((ROOT / "targets" / "cpu-ort.yaml").read_text().replace("threads: auto", "threads: 1"))
    client = agent.client()
    assert client.not_served(load_target(settled)) is None  # the device's file leaves threads to auto
    listing = {row["name"]: row for row in client.targets()}
    client._listing = {**listing, "cpu-ort": {**listing["cpu-ort"], "threads": 2}}  # a file that fixes 2
    with pytest.raises(ConfigError, match=r"differs on the device.*threads 2 there, 1 here"):
        client.not_served(load_target(settled))
    agent.wait_for("404 POST /measure")


# --- starting, faults, retries, TLS --------------------------------------------------------------------

def serve_cli(*options: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "deploykit.cli", "serve", *options], capture_output=True,
                          text=True, timeout=timeout_s, env=env, cwd=ROOT, check=False)


def test_the_agent_refuses_to_start_without_a_usable_token(tmp_path):
    missing = serve_cli("--token-file", str(tmp_path / "none"), "--port", "0")
    assert missing.returncode == 2 and "no token file" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    empty = serve_cli("--token-file", str(tmp_path / "empty"), "--port", "0")
    assert empty.returncode == 2 and "is empty" in empty.stderr
    (tmp_path / "short").write_text("abc\n")
    (tmp_path / "short").chmod(0o600)
    short = serve_cli("--token-file", str(tmp_path / "short"), "--port", "0")
    assert short.returncode == 2 and "at least 16" in short.stderr


def test_the_agent_warns_beyond_localhost_without_tls(tmp_path):
    process = Agent(tmp_path, "--host", "0.0.0.0", "--targets", "cpu-ort")
    try:
        process.start().wait_listening()
        assert "warning: listening on 0.0.0.0 without TLS" in process.log
    finally:
        process.stop()


@pytest.mark.slow
def test_an_agent_killed_mid_measurement_is_one_line_and_exit_2(tmp_path, tiny):
    process = Agent(tmp_path / "agent", "--targets", "cpu-ort")
    try:
        process.start().wait_listening()
        env = {**os.environ, TOKEN_ENV: TOKEN,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        client = subprocess.Popen(
            [sys.executable, "-m", "deploykit.cli", "device", process.url, "--measure", str(tiny),
             "--target", "cpu-ort", "--batch", "1", "--min-time", "60", "--retries", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        process.wait_for("measuring tiny.onnx")
        process.process.send_signal(signal.SIGKILL)
        process.process.wait()
        _, err = client.communicate(timeout=60)
        assert client.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "stopped answering while measuring tiny.onnx on cpu-ort" in lines[0]
    finally:
        process.stop()  # also ends the worker the killed agent left running


@pytest.mark.slow
def test_a_full_queue_answers_busy_and_the_client_retries(tmp_path, tiny, cpu_ort):
    long = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=1.0, min_iters=5, max_repeats=1)
    with Agent(tmp_path, "--targets", "cpu-ort", "--max-queue", "1") as process:
        first = threading.Thread(target=lambda: process.client().measure(tiny, target=cpu_ort, protocol=long,
                                                                          input_shape=SHAPE))
        first.start()
        process.wait_for("measuring tiny.onnx")
        impatient = process.client(retry=RetryPolicy(attempts=1))
        with pytest.raises(DeviceError, match=r"busy: 1 measure request.*\(after 1 try\)") as caught:
            impatient.measure(tiny, target=cpu_ort, protocol=TINY, input_shape=SHAPE)
        one_line(caught.value)
        patient = process.client(retry=RetryPolicy(attempts=400, first_delay_s=0.1, factor=1.0))
        assert patient.measure(tiny, target=cpu_ort, protocol=TINY, input_shape=SHAPE).n >= TINY.min_iters
        first.join(timeout=60)
        assert "503 POST /measure" in process.log


@pytest.mark.slow
def test_the_client_retries_until_a_late_agent_comes_up(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    client = DeviceClient(f"http://127.0.0.1:{port}", TOKEN, sleep=sleep,
                          retry=RetryPolicy(attempts=400, first_delay_s=0.02, factor=1.5, max_delay_s=0.25))
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(client.health()))
    thread.start()
    time.sleep(0.3)
    process = Agent(tmp_path, "--targets", "cpu-ort", port=port).start()
    try:
        thread.join(timeout=120)
        assert outcome and outcome[0]["ok"] is True
        assert waits[:3] == pytest.approx([0.02, 0.03, 0.045]) and max(waits) <= 0.25
    finally:
        process.stop()


def test_a_client_gives_up_after_its_retries_with_one_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    client = DeviceClient(f"http://127.0.0.1:{port}", TOKEN, sleep=waits.append, retry=FAST_RETRY)
    with pytest.raises(DeviceError, match=r"cannot reach the device .* \(after 3 tries\)") as caught:
        client.targets()
    one_line(caught.value)
    assert waits == [0.01, 0.02]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_a_self_signed_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    process = Agent(tmp_path / "agent", "--targets", "cpu-ort", "--tls-cert", str(cert),
                           "--tls-key", str(key))
    try:
        process.start().wait_listening()
        assert process.url.startswith("https://") and "without TLS" not in process.log
        assert process.client(ca_file=cert).health()["tls"] is True
        with pytest.raises(DeviceError, match=r"TLS certificate .* is not trusted") as caught:
            process.client().health()  # verification is on by default: a self-signed cert is refused
        one_line(caught.value)
    finally:
        process.stop()
    bad = serve_cli("--token-file", str(process.token_file), "--port", "0", "--tls-cert", str(cert),
                    "--tls-key", str(cert))
    assert bad.returncode == 2 and "cannot use --tls-cert" in bad.stderr


# --- the pieces, without a server ------------------------------------------------------------------------

def test_measure_request_round_trip_and_refusals():
    order = MeasureRequest(target="cpu-ort", input_shape=[1, 3, 8, 8], protocol=TINY, timeout_s=5,
                           name="a\nb.onnx")
    back = MeasureRequest.from_header(order.as_header())
    assert back == order and back.input_shape == (1, 3, 8, 8) and "\n" not in back.name
    for header, message in [(None, "without its"), ("[]", "JSON object"), ("{", "not valid JSON"),
                            ('{"target": "t", "input_shape": [1], "protocol": {}, "x": 1}', "unknown key"),
                            ('{"target": "t", "protocol": {}}', "missing key"),
                            ('{"target": "t", "input_shape": [0], "protocol": {}}', "input shape"),
                            ('{"target": "t", "input_shape": [1], "protocol": {"x": 1}}', "protocol key"),
                            ('{"target": "t", "input_shape": [1], "protocol": {}, "timeout_s": -1}',
                             "timeout_s")]:
        with pytest.raises(ConfigError, match=message):
            MeasureRequest.from_header(header)


def test_run_request_round_trip_and_refusals():
    from deploykit.remote.wire import RunRequest

    order = RunRequest(target="cpu-ort", input_shape=[1, 3, 8, 8], seed=5, n_inputs=3, timeout_s=9)
    assert RunRequest.from_header(order.as_header()) == order
    for header, message in [('{"target": "t", "input_shape": [1], "seed": 0}', "missing key"),
                            ('{"target": "t", "input_shape": [1], "seed": 0, "n_inputs": 0}', "--inputs"),
                            ('{"target": "t", "input_shape": [1], "seed": -1, "n_inputs": 1}', "--seed"),
                            ('{"target": "t", "input_shape": [1], "seed": 0, "n_inputs": 1, "protocol": {}}',
                             "unknown key")]:
        with pytest.raises(ConfigError, match=message):
            RunRequest.from_header(header)


def test_arrays_travel_as_numbers_only():
    import numpy as np

    from deploykit.measure.outputs import decode_array, encode_array

    for array in (np.arange(12, dtype=np.float32).reshape(3, 4) / 7, np.array([[True, False]]),
                  np.zeros((0, 5), dtype=np.int64), np.float16([1.5, -2.25])):
        back = decode_array(json.loads(json.dumps(encode_array(array))))
        assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
    with pytest.raises(ConfigError, match="cannot be sent"):
        encode_array(np.array(["text"]))
    good = encode_array(np.ones(4, dtype=np.float32))
    for bad in ({**good, "dtype": "object"}, {**good, "shape": [5]}, {**good, "data": "%%%"}, [1, 2]):
        with pytest.raises(TypeError):
            decode_array(bad)


def test_token_files_and_the_environment(tmp_path):
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    good.chmod(0o600)
    assert read_token(good) == (TOKEN, None)
    good.chmod(0o640)
    assert "readable by other users" in read_token(good)[1]
    (tmp_path / "two").write_text("two words-0123456789abcdef")
    with pytest.raises(ConfigError, match="one word"):
        read_token(tmp_path / "two")
    assert token_from(None, environ={TOKEN_ENV: TOKEN}) == TOKEN
    with pytest.raises(ConfigError, match="--token-file FILE or set DEPLOYKIT_DEVICE_TOKEN"):
        token_from(None, environ={})


def test_retry_policy_backs_off_to_a_bound():
    policy = RetryPolicy(attempts=5, first_delay_s=0.5, factor=2.0, max_delay_s=3.0)
    assert [policy.delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ConfigError):
        RetryPolicy(attempts=0)


def test_device_urls():
    assert DeviceClient("http://board", TOKEN).url == "http://board:8765"
    assert DeviceClient("https://[::1]:9000/agent/", TOKEN).url == "https://[::1]:9000/agent"
    for bad in ("board:8765", "ftp://board", "http://", "http://board:99999", "http://board?x=1"):
        with pytest.raises(ConfigError, match="device URL"):
            DeviceClient(bad, TOKEN)
    assert TOKEN not in repr(DeviceClient("http://board", TOKEN))


def test_served_targets_say_why_not(cpu_ort):
    served = ServedTargets(served={"cpu-ort": cpu_ort}, unserved={"cpu-openvino": "left out"},
                           unavailable={"nvidia-t4": "no GPU here"})
    assert served.require("cpu-ort") is cpu_ort
    with pytest.raises(ConfigError, match="not served here: left out"):
        served.require("cpu-openvino")
    with pytest.raises(RuntimeUnavailableError, match="no GPU here"):
        served.require("nvidia-t4")
    with pytest.raises(ConfigError, match=r"unknown target 'x'.*serves cpu-ort"):
        served.require("x")


def test_uploads_with_external_data_are_refused(tmp_path, tiny):
    import onnx

    model = onnx.load(str(tiny))
    onnx.save(model, str(tmp_path / "split.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    with pytest.raises(ModelError, match="external data"):
        check_onnx_upload(tmp_path / "split.onnx")
    check_onnx_upload(tiny)  # a self-contained model passes


# --- issue 20: the agent under attack -----------------------------------------------------------------

@pytest.mark.parametrize("where", ["initializer", "function", "sparse_value", "sparse_initializer",
                                   "subgraph"])
def test_external_data_is_refused_wherever_the_format_holds_it(tmp_path, where):
    """Case 1: a tensor kept in a file outside the upload, anywhere in the model, is refused before the
    checker (or a runtime) resolves the file, and the reply names no file of the agent's."""
    import onnx
    from onnx_fixtures import external_data_models

    (tmp_path / "secret.txt").write_bytes(b"\0" * 12)  # present: its existence must not change the reply
    path = tmp_path / "m.onnx"
    onnx.save(external_data_models()[where], str(path))
    with pytest.raises(ModelError, match="external data") as caught:
        check_onnx_upload(path)
    assert "secret.txt" not in str(caught.value)


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """An agent with tight limits, to reach each of them."""
    with Agent(tmp_path_factory.mktemp("strict"), "--targets", "cpu-ort", "--timeout", "60",
               "--header-timeout", "1", "--body-timeout", "1", "--max-threads", "2",
               "--max-input-elements", "100000", "--max-reply-mb", "0.03", "--max-queue", "2") as process:
        yield process


def _connect(agent) -> socket.socket:
    from urllib.parse import urlsplit

    parts = urlsplit(agent.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def test_half_sent_headers_are_closed_after_the_header_timeout(strict):
    """Case 2: a client that never finishes its headers (with or without a token) loses its connection."""
    with _connect(strict) as sock:
        sock.sendall(b"POST /measure HTTP/1.1\r\nHost: x\r\nAuthori")
        assert sock.recv(65536) == b""  # closed by the agent, unanswered
    with _connect(strict) as sock:  # a connection that sends nothing at all
        assert sock.recv(65536) == b""


def test_a_stalled_upload_is_refused_and_frees_its_place(strict, cpu_ort, tiny):
    """Case 2: uploads that stall after a few bytes are answered 408 and leave the queue (--max-queue 2)."""
    order = MeasureRequest(target="cpu-ort", input_shape=SHAPE, protocol=TINY).as_header()
    stalled = []
    for _ in range(2):
        sock = _connect(strict)
        sock.sendall((f"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"{REQUEST_HEADER}: {order}\r\nContent-Length: 1000\r\n\r\n").encode() + b"x" * 10)
        stalled.append(sock)
    try:
        for sock in stalled:
            reply = read_reply(sock)
            assert reply.startswith("HTTP/1.1 408") and "--body-timeout" in reply, reply
        result = strict.client().measure_remote(tiny, target=cpu_ort, protocol=TINY, input_shape=SHAPE)
        assert result.measurement.n >= 1
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize(("change", "message"), [
    ({"protocol": {"threads": 1000}}, "protocol.threads 1000 is over this device's limit of 2"),
    ({"input_shape": [1, 3, 100000, 100000]}, "over this device's limit of 100000"),
    ("[" * 5000 + "]" * 5000, "request header"),
])
def test_requests_past_the_agents_bounds_are_422_before_the_upload_is_read(strict, change, message):
    """Cases 3 and 4: too many threads, too large an input, a deeply nested header: one line, a 422."""
    order = json.loads(MeasureRequest(target="cpu-ort", input_shape=SHAPE, protocol=TINY).as_header())
    header = change if isinstance(change, str) else json.dumps({**order, **{
        key: {**order[key], **value} if isinstance(value, dict) else value for key, value in change.items()}})
    status, body = raw_request(strict.url, "POST", "/measure", headers={**auth(), REQUEST_HEADER: header},
                               body=b"never read")
    assert status == 422 and message in body["error"] and "\n" not in body["error"], body
    assert "Traceback" not in strict.log and "internal error" not in strict.log


def test_a_reply_over_the_cap_is_a_422(strict, cpu_ort, tiny):
    """Case 3: a run whose outputs would make a reply over --max-reply-mb is refused, not sent."""
    with pytest.raises(ModelError, match="--max-reply-mb") as caught:
        strict.client().run_remote(tiny, target=cpu_ort, input_shape=SHAPE, seed=0, n_inputs=64)
    one_line(caught.value)


def test_a_client_that_goes_away_has_its_worker_killed(strict, tiny):
    """Case 3: the worker of a client that disconnected is killed at once, not at the timeout."""
    slow = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=50.0, min_iters=5, max_repeats=1)
    order = MeasureRequest(target="cpu-ort", input_shape=SHAPE, protocol=slow).as_header()
    body = tiny.read_bytes()
    with _connect(strict) as sock:
        sock.sendall((f"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"{REQUEST_HEADER}: {order}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        strict.wait_for("measuring model.onnx")
    strict.wait_for("the client went away while measuring", timeout_s=30)


def test_websocket_scopes_never_reach_the_application():
    """Case 5: the token middleware closes anything but HTTP, authenticated or not."""
    import asyncio

    from deploykit.remote.server import _BearerAuth

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope)

    async def send(message):
        sent.append(message)

    middleware = _BearerAuth(app, agent=None)
    scope = {"type": "websocket", "path": "/measure",
             "headers": [(b"authorization", f"Bearer {TOKEN}".encode())]}
    asyncio.run(middleware(scope, None, send))
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_token_files_that_are_not_small_private_regular_files_are_refused(tmp_path):
    """Case 5: a FIFO, /dev/zero, a huge file, and (for the agent) a file others may read."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "huge").write_text("x" * 10000)
    cases = [(tmp_path / "fifo", "not a regular file"), (tmp_path / "huge", "over 4096")]
    if Path("/dev/zero").exists():
        cases.append((Path("/dev/zero"), "not a regular file"))
    for path, message in cases:
        with pytest.raises(ConfigError, match=message):
            read_token(path)
    shared = tmp_path / "shared"
    shared.write_text(TOKEN)
    shared.chmod(0o644)
    assert read_token(shared)[1] is not None  # a client only warns
    with pytest.raises(ConfigError, match="readable by other users: chmod 600"):
        read_token(shared, private=True)
