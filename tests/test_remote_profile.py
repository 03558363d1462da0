"""Measuring on a device agent from the commands: `profile`, `lut anchor`, `lut check`, `verify` and `run`
with `--device URL`, and `run --table`. Real agents on localhost (`deploykit serve` in a subprocess).

"Another machine" is played by the agent's test hook: ``$DEPLOYKIT_TEST_DOCTORED_FINGERPRINT`` makes an
agent report other fingerprint fields (here the CPU name), so a table profiled through it must carry that
fingerprint — the device's, not this process's — and a second agent at the same URL with another one
must be refused.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from deploykit.cli import main
from deploykit.errors import ConfigError, DeviceError
from deploykit.latency.table import LatencyTable
from deploykit.measure.fingerprint import Fingerprint
from deploykit.protocol import Protocol
from deploykit.remote.host import NOT_SERVED, RemoteHost, measuring_host
from deploykit.remote.local import LocalAgent
from deploykit.remote.wire import DOCTORED_FINGERPRINT_ENV, TOKEN_ENV
from deploykit.targets import load_target

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-remote-profile-0123456789"
PROTOCOL = ["--min-time", "0.02", "--warmup-time", "0.01", "--min-iters", "5", "--warmup-iters", "2",
            "--max-repeats", "1"]
TINY = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.01, min_iters=5, max_repeats=1)
# test_vit: 6 entries (patch embedding, one block signature in 2 forms, norm, head, model), at its own
# input size (training builds timm models at their default size). The sentinel only at the start and the
# end, and never a re-measurement (a loaded CI machine drifts): the number of measurements is then known.
# Each measurement samples for 0.3 s, so that the agent can be killed while it measures. One thread
# given: no settings probe (it has tests of its own), so the number of measurements is known.
SIZE = 160
PROFILE = ["profile", "--target", "cpu-ort", "--model", "test_vit", "--input-size", str(SIZE), "--predictor",
           "isolated", "--holdout", "0", "--sentinel-every", "0", "--max-drift", "100", *PROTOCOL,
           "--min-time", "0.3", "--threads", "1"]
BOARD_A = {"cpu": "Board A (a doctored test fingerprint)"}
BOARD_B = {"cpu": "Board B (a doctored test fingerprint)"}


class Agent(LocalAgent):
    """An agent serving cpu-ort that reports the fingerprint of ``board``."""

    def __init__(self, workdir: Path, board: dict, *, port: int):
        super().__init__(workdir, "--targets", "cpu-ort", port=port, token=TOKEN,
                         env={DOCTORED_FINGERPRINT_ENV: json.dumps(board)})

    def measured(self) -> list[str]:
        """The files this agent started measuring, in order (from its log)."""
        return [line.split("measuring ", 1)[1].split(" on ", 1)[0] for line in self.log.splitlines()
                if ": measuring " in line]

    def answered(self) -> list[str]:
        return [line.split(": ", 2)[2].split(" on ", 1)[0] for line in self.log.splitlines()
                if "200 POST /measure" in line]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != DOCTORED_FINGERPRINT_ENV}
    return {**env, TOKEN_ENV: TOKEN, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}


def deploykit(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deploykit.cli", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def in_process(*args: str) -> tuple[int, str, str]:
    """``deploykit ARGS`` in this process (no interpreter to start): exit code, stdout, stderr."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def error_lines(stderr: str, command: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith(f"deploykit {command}: error:")]


# --- profile --device: killed agent, another machine, resume ---------------------------------------------

@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """`deploykit profile --device`: the agent (board A) SIGKILLed while it measures entry 3; rerun
    against board B at the same URL (refused); rerun against board A restarted (resumes). A local
    profile of the same model runs meanwhile, for the structure. Yields the agents and results."""
    work = tmp_path_factory.mktemp("remote-profile")
    port = free_port()
    local = deploykit(*PROFILE, "--out", str(work / "local.csv"), cwd=work)
    first = Agent(work / "a1", BOARD_A, port=port).start().wait_listening()
    agents = [first]
    try:
        client = deploykit(*PROFILE, "--out", str(work / "vit.csv"), "--device", first.url, cwd=work)
        first.wait_for("measuring entry3.onnx", timeout_s=300)
        first.kill()
        _, killed_err = client.communicate(timeout=120)
        killed = (client.returncode, killed_err, LatencyTable.read(work / "vit.csv"))
        other = Agent(work / "b", BOARD_B, port=port).start().wait_listening()
        agents.append(other)
        remote = [*PROFILE, "--out", str(work / "vit.csv"), "--token-file", str(other.token_file)]
        refused = in_process(*remote, "--device", other.url)
        other.stop()
        again = Agent(work / "a2", BOARD_A, port=port).start().wait_listening()
        agents.append(again)
        rerun = in_process(*remote, "--device", again.url)
        local_out = local.communicate(timeout=400)
        assert local.returncode == 0, local_out[1][-2000:]
        yield {"work": work, "first": first, "again": again, "killed": killed, "refused": refused,
               "rerun": rerun, "local": LatencyTable.read(work / "local.csv")}
    finally:
        if local.poll() is None:
            local.kill()
        for agent in agents:
            agent.stop()


@pytest.mark.slow
def test_an_agent_killed_mid_profile_is_one_line_and_exit_2(scenario):
    code, stderr, partial = scenario["killed"]
    assert code == 2
    errors = error_lines(stderr, "profile")
    assert len(errors) == 1, stderr[-2000:]
    assert "stopped answering while measuring entry3.onnx on cpu-ort" in errors[0]
    assert not partial.meta.complete
    assert sorted(partial.rows["form"]) == ["fixed", "model", "original"]  # the model row, entries 1 and 2
    # the model row and two more whole-model measurements (the sentinel's start), then entries 1 and 2
    assert scenario["first"].answered() == ["model.onnx"] * 3 + ["entry1.onnx", "entry2.onnx"]


@pytest.mark.slow
def test_another_machine_at_the_same_url_is_refused_naming_what_changed(scenario):
    code, _, stderr = scenario["refused"]
    assert code == 2
    errors = error_lines(stderr, "profile")
    assert len(errors) == 1
    assert f"machine: CPU: table {BOARD_A['cpu']!r}" in errors[0], errors[0]
    assert f"here {BOARD_B['cpu']!r}" in errors[0]  # here: where the profile measures


@pytest.mark.slow
def test_the_rerun_resumes_and_measures_no_entry_twice(scenario):
    code, stdout, stderr = scenario["rerun"]
    assert code == 0, stderr[-2000:]
    again = scenario["again"]
    entries = [name for name in again.measured() if name.startswith("entry")]
    assert entries == ["entry3.onnx", "entry4.onnx", "entry5.onnx"]  # 1 and 2 were stored before the kill
    assert again.client().health()["workers_started"] == len(again.measured())
    assert stderr.count("already in the table") == 3
    table = LatencyTable.read(scenario["work"] / "vit.csv")
    assert table.meta.complete and len(table) == 6 and not table.rows.duplicated(["key", "form"]).any()
    assert "wrote" in stdout


@pytest.mark.slow
def test_a_remote_table_records_the_device_and_has_the_structure_of_a_local_one(scenario):
    remote, local = LatencyTable.read(scenario["work"] / "vit.csv"), scenario["local"]
    assert list(remote.rows.columns) == list(local.rows.columns)
    assert sorted(zip(remote.rows["key"], remote.rows["form"])) == sorted(zip(local.rows["key"],
                                                                               local.rows["form"]))
    assert set(remote.meta.as_dict()) == set(local.meta.as_dict())
    assert (remote.rows["median_ms"] > 0).all() and (remote.rows["n"] >= 5).all()
    url = scenario["again"].url
    assert remote.meta.device_url == url and local.meta.device_url is None
    assert [run["device_url"] for run in remote.meta.conditions["runs"]] == [url]  # the run that finished
    # the device's fingerprint (its doctored CPU), never this machine's; the same id the agent reports
    assert remote.meta.fingerprint["cpu"] == BOARD_A["cpu"] != local.meta.fingerprint["cpu"]
    device = scenario["again"].client().fingerprint()["targets"]["cpu-ort"]["fingerprint"]
    # the agent reports its file's settings (auto: the runtime's defaults); the table, the ones it used
    assert remote.meta.fingerprint["id"] == replace(Fingerprint.from_dict(device), threads=1).id
    assert remote.meta.runtime_version == local.meta.runtime_version  # the same machine underneath
    assert remote.meta.anchors["unpruned_ms"] > 0 and remote.meta.anchors["merged_ms"] > 0


# --- lut anchor, lut check, verify and run through the device ---------------------------------------------

@pytest.fixture(scope="module")
def board_b(scenario):
    """Board B, another machine than the table's, for re-anchoring."""
    with Agent(scenario["work"] / "b2", BOARD_B, port=free_port()) as agent:
        yield agent


@pytest.mark.slow
def test_lut_anchor_and_check_through_another_device(scenario, board_b, capsys, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    table = scenario["work"] / "vit.csv"
    assert main(["lut", "anchor", str(table), "--rounds", "1", "--device", board_b.url]) == 0
    out = capsys.readouterr().out
    assert f"anchored {table} for the device at {board_b.url}" in out
    assert f"CPU: table {BOARD_A['cpu']!r}" in out and f"here {BOARD_B['cpu']!r}" in out
    assert f"deploykit lut check {table} --device {board_b.url}" in out
    device = board_b.client().fingerprint()["targets"]["cpu-ort"]["fingerprint"]
    here = replace(Fingerprint.from_dict(device), threads=1)  # the table's settings on that device
    record = LatencyTable.read(table).meta.rescalings[here.id]
    assert record["fingerprint"]["cpu"] == BOARD_B["cpu"] and record["a"] > 0
    assert board_b.measured() == ["anchor_unpruned.onnx", "anchor_merged.onnx"]
    # the check measures on board B too, and compares with the rescaled predictions stored for it
    assert main(["lut", "check", str(table), "--samples", "2", "--no-plot", "--no-store", "--device",
                 board_b.url, "--out", str(scenario["work"] / "check")]) == 0
    captured = capsys.readouterr()
    assert "re-anchored for the device at" in captured.err and "2 subnets" in captured.out
    assert sum(name.startswith("subnet") for name in board_b.measured()) == 2


@pytest.mark.slow
def test_verify_on_the_device_runs_numerics_and_timing_there(scenario, capsys, monkeypatch):
    import torch

    from deploykit.export import export_onnx
    from deploykit.modelfile import convert_model, load_model

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    work, again = scenario["work"], scenario["again"]
    torch.manual_seed(0)
    model_file, _ = convert_model("test_vit", work / "vit.safetensors", input_size=(SIZE, SIZE))
    onnx = export_onnx(load_model(model_file), (1, 3, SIZE, SIZE), work / "vit.onnx")
    before = len(again.measured())
    assert main(["verify", str(onnx), "--target", "cpu-ort", "--torch", str(model_file), "--inputs", "2",
                 "--rounds", "1", "--table", str(work / "vit.csv"), "--pruned", "", "--format", "json",
                 "--device", again.url, *PROTOCOL]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device_url"] == again.url and report["passed"] is True
    assert again.url in report["numerics"]["how"] and report["numerics"]["n_inputs"] == 2
    assert report["latency"]["model"]["median_ms"] > 0 and report["predicted_ms"] > 0
    assert "running vit.onnx on cpu-ort, 2 seeded input(s)" in again.log  # the numerics ran there
    assert again.measured()[before:] == ["vit.onnx"]  # one round, timed there


@pytest.mark.slow
def test_run_with_a_table_from_elsewhere_verifies_on_the_device(scenario, capsys, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    work, again = scenario["work"], scenario["again"]
    run = work / "run"
    assert main(["run", "--model", "convnext_atto", "--input-size", str(SIZE), "--table",
                 str(work / "vit.csv"), "--out", str(run), "--device", again.url]) == 2
    assert "is for model test_vit, this run's is convnext_atto" in capsys.readouterr().err
    assert not run.exists()
    before = len(again.measured())
    # the table as measured, its merged block entry made clearly faster: measured under this suite's
    # load, the tiny ViT's merged blocks can land within noise of (or above) the originals, and a budget
    # no subnet reaches stops the run before it verifies anything (CI saw 0.987 × at best for 0.95)
    elsewhere = LatencyTable.read(work / "vit.csv")
    merged = elsewhere.rows["form"] == "merged"
    for column in ("median_ms", "p90_ms", "ci_low_ms", "ci_high_ms"):
        if column in elsewhere.rows:
            elsewhere.rows.loc[merged, column] = elsewhere.rows.loc[merged, column] / 4
    given = elsewhere.write(work / "vit-elsewhere.csv")
    code = main(["run", "--model", "test_vit", "--input-size", str(SIZE), "--table", str(given),
                 "--out", str(run), "--device", again.url, "--data", "digits", "--train-limit", "96",
                 "--val-limit", "48", "--baseline-epochs", "1", "--supernet-epochs", "1", "--subnet-epochs",
                 "1", "--proxy-val-limit", "32", "--rounds", "1", "--train-threads", "1", "--train-device",
                 "cpu", "--budgets", "0.95", *PROTOCOL])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "profile: copied" in captured.err and f"through {again.url}" in captured.err
    copied = LatencyTable.read(run / "profile" / f"test_vit_{SIZE}_b1.csv")
    assert copied.rows.equals(LatencyTable.read(given).rows)
    for folder in (run / "baseline", run / "original-continued", run / "budget-0.95"):
        report = json.loads((folder / "verify-cpu-ort.json").read_text())
        assert report["device_url"] == again.url and report["passed"] is True
    # verify original and continued original: the model once each; verify 0.95: the model and the
    # original, interleaved; then the table's one round-robin measurement of the three models
    assert again.measured()[before:] == ["model.onnx"] * (4 + 3)
    assert (run / "table.md").is_file()


# --- refusals before anything is written --------------------------------------------------------------------

def test_run_says_what_is_missing_before_writing_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    run = tmp_path / "run"
    base = ["run", "--model", "test_vit", "--target", "arm-cortex-a76", "--out", str(run)]
    assert main([*base, "--table", str(tmp_path / "elsewhere.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--table gives the latency table, but the verify stages measure on target " \
        "arm-cortex-a76, which cannot run here" in err[0] and "give --device URL" in err[0]
    assert main(base) == 2
    assert "run it on that machine, or give --device URL" in capsys.readouterr().err
    with Agent(tmp_path / "agent", BOARD_A, port=0) as agent:
        assert main([*base, "--table", "t.csv", "--device", agent.url]) == 2
        err = capsys.readouterr().err
        assert f"the verify stages measure on the device at {agent.url}, which cannot run target " \
               "arm-cortex-a76 (it does not serve target arm-cortex-a76" in err
        # a table of a target the device does not serve is another machine's, whatever it says
        unserved = RemoteHost(agent.client()).fingerprint(load_target("arm-cortex-a76"), threads=4)
        assert (unserved.cpu, unserved.runtime_version, unserved.threads) == (BOARD_A["cpu"], NOT_SERVED, 4)
    assert not run.exists()


def test_a_device_option_without_a_device_and_a_wrong_token_are_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError, match="go with --device URL"):
        measuring_host(None, token_file=tmp_path / "token")
    assert measuring_host(None).url is None
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert main(["profile", "--target", "amd-mi100", "--model", "test_vit", "--estimate", "--out",
                 str(tmp_path / "e.csv"), "--device", "http://127.0.0.1:9"]) == 2
    assert "--estimate measures nothing: it takes no --device" in capsys.readouterr().err
    monkeypatch.setenv(TOKEN_ENV, "not-the-token-of-that-agent-0123")
    with Agent(tmp_path / "agent", BOARD_A, port=0) as agent:
        assert main([*PROFILE, "--out", str(tmp_path / "t.csv"), "--device", agent.url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrong or missing token" in err[0] and "--token-file" in err[0]
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.slow
def test_a_fingerprint_change_between_two_measurements_is_refused(tmp_path):
    """Board A answers the first measurement; board B, at the same URL, the second: refused."""
    from onnx_fixtures import tiny_onnx

    tiny, target, port = tiny_onnx(tmp_path / "tiny.onnx"), load_target("cpu-ort"), free_port()
    with Agent(tmp_path / "a", BOARD_A, port=port) as first:
        host = RemoteHost(first.client())
        pinned = host.fingerprint(target, threads=None)
        assert pinned.cpu == BOARD_A["cpu"]
        assert host.measure(tiny, target=target, protocol=TINY, input_shape=(1, 3, 16, 16)).n >= 5
    with Agent(tmp_path / "b", BOARD_B, port=port), pytest.raises(DeviceError) as caught:
        host.measure(tiny, target=target, protocol=TINY, input_shape=(1, 3, 16, 16))
    message = str(caught.value)
    assert "\n" not in message and "is another machine than at the start of this run" in message
    assert f"CPU: before {BOARD_A['cpu']!r}" in message and f"now {BOARD_B['cpu']!r}" in message


def test_numerics_refuse_outputs_of_other_inputs(tmp_path):
    """A device whose numpy draws another stream from the seed: its outputs are not compared."""
    from dataclasses import replace

    import torch
    from onnx_fixtures import tiny_onnx

    from deploykit.measure.host import LocalHost
    from deploykit.verify import check_numerics

    class OtherStream(LocalHost):
        def outputs(self, onnx_path, **request):
            return replace(super().outputs(onnx_path, **request), inputs_sha256="0" * 64)

    tiny = tiny_onnx(tmp_path / "tiny.onnx")
    module = torch.nn.Identity()
    with pytest.raises(DeviceError, match="on other inputs than the seed gives here"):
        check_numerics(tiny, module, target=load_target("cpu-ort"), input_shape=(1, 3, 16, 16), n_inputs=1,
                       host=OtherStream())


def test_a_doctored_fingerprint_must_name_fingerprint_fields():
    from deploykit.remote.device import doctored_fields

    assert doctored_fields({}) == {}
    assert doctored_fields({DOCTORED_FINGERPRINT_ENV: '{"cpu": "X"}'}) == {"cpu": "X"}
    for bad in ("[1]", "{", '{"hostname": "x"}'):
        with pytest.raises(ConfigError, match="fingerprint fields"):
            doctored_fields({DOCTORED_FINGERPRINT_ENV: bad})


def test_an_unreachable_device_is_one_line(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    from deploykit.remote.client import RetryPolicy

    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    host = measuring_host(url, retry=RetryPolicy(attempts=2, first_delay_s=0.01))
    with pytest.raises(DeviceError, match=r"cannot reach the device .* \(after 2 tries\)"):
        host.availability(load_target("cpu-ort"))
    assert time.monotonic() - began < 30
