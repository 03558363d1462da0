"""`deploykit profile`: entries (shared blocks, fixed parts), resume after a kill, refusals, real runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch
from timm.models.convnext import ConvNeXtBlock
from torch import nn

from deploykit import cli
from deploykit.errors import ConfigError, RuntimeUnavailableError, TableError
from deploykit.latency import probe
from deploykit.latency import profile as profile_module
from deploykit.latency.options import EndToEndOptions
from deploykit.latency.profile import find_entries, profile
from deploykit.latency.sentinel import SentinelPolicy
from deploykit.latency.table import LatencyTable
from deploykit.measure import client as measure_module
from deploykit.measure import fingerprint as fingerprint_module
from deploykit.measure.host import LocalHost
from deploykit.protocol import Measurement, Protocol
from deploykit.runsettings import RunSettings
from deploykit.runtimes import availability, hostinfo
from deploykit.targets import load_target

TINY_PROTOCOL = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.0, min_iters=3,
                         max_repeats=1)
TINY_PROTOCOL_ARGS = ["--warmup-time", "0", "--warmup-iters", "1", "--min-time", "0", "--min-iters", "3",
                      "--max-repeats", "1"]


class TinyConvNeXt(nn.Module):
    """conv1 → bn1 → in-place ReLU → two identical ConvNeXt blocks → pool → (flatten) → dropout → fc."""

    def __init__(self, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 4, stride=4)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU(inplace=True)
        self.blocks = nn.Sequential(ConvNeXtBlock(8), ConvNeXtBlock(8, drop_path=drop_path))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv1(x))))
        return self.fc(self.drop(self.pool(x).flatten(1)))


def tiny(seed: int = 0, drop_path: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyConvNeXt(drop_path).eval()


# --- entries ---------------------------------------------------------------------------------------

def test_identical_blocks_share_one_entry_per_stage():
    entries = find_entries(timm.create_model("convnext_atto"), model_name="convnext_atto", input_size=32)
    blocks = [e for e in entries if e.kind == "block"]
    assert [(e.form, e.indices) for e in blocks] == [
        (form, indices) for indices in [(0, 1), (2, 3), (4, 5, 6, 7, 8, 9), (10, 11)]
        for form in ("original", "merged")]
    assert [e.in_shape for e in blocks[::2]] == [(40, 8, 8), (80, 4, 4), (160, 2, 2), (320, 1, 1)]
    assert [e.name for e in entries if e.kind == "fixed"] == [
        "stem", "stages.1.downsample", "stages.2.downsample", "stages.3.downsample", "head"]
    assert entries[-1].kind == "model" and entries[-1].macs > sum(e.macs for e in blocks[::2])
    assert len({(e.key, e.form) for e in entries}) == len(entries)
    assert all(e.macs > 0 for e in entries)


def test_fixed_parts_chain_consecutive_modules_and_skip_identities():
    entries = find_entries(tiny(), model_name="tiny", input_size=32)
    assert [(e.kind, e.form, e.name) for e in entries] == [
        ("fixed", "fixed", "conv1+bn1+act1"),  # in-place ReLU still chains: it is not an identity
        ("block", "original", "blocks.0"), ("block", "merged", "blocks.0"),
        ("fixed", "fixed", "pool"),  # the functional flatten breaks the chain; Dropout is left out
        ("fixed", "fixed", "fc"),
        ("model", "model", "tiny")]
    assert entries[0].in_shape == (3, 32, 32) and entries[0].out_shape == (8, 8, 8)
    assert entries[1].indices == (0, 1) and entries[1].count == 2
    assert entries[4].in_shape == (8,)
    # keys depend on structure and shape, not on weights or on what eval mode skips (drop path):
    # a resumed profile finds its entries again
    again = find_entries(tiny(seed=1, drop_path=0.1), model_name="tiny", input_size=32)
    assert [(e.key, e.form) for e in again] == [(e.key, e.form) for e in entries]


class InPlaceBetween(nn.Module):
    """conv a → in-place functional add → conv b → ConvNeXt block → pool → fc."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 4, stride=4)
        self.b = nn.Conv2d(8, 8, 1)
        self.block = ConvNeXtBlock(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        x = self.a(x)
        x += 1.0  # not a module: a chain a → b would time something the model does not compute
        return self.head(self.block(self.b(x)))


def test_an_in_place_functional_op_breaks_a_chain():
    entries = find_entries(InPlaceBetween().eval(), model_name="m", input_size=32)
    assert [e.name for e in entries if e.kind == "fixed"] == ["a", "b", "head"]


# --- the profile driver, with a scripted measurement -----------------------------------------------

class FakeRuntime:
    """Stands in for the measuring subprocess and the exports: a deterministic Measurement per call.

    Entry ``k`` (in measuring order, counting measurements again) takes 0.1·k ms; the whole model
    (``model.onnx``: sentinel, model row, unpruned anchor) takes ``sentinel(j)`` ms at its j-th
    measurement (5 ms unless scripted); the all-merged anchor 2 ms.
    """

    def __init__(self, monkeypatch, device: str = "Test CPU", sentinel=None, fail_at: int | None = None):
        self.calls: list[tuple[str, tuple]] = []
        self.sentinel = sentinel or (lambda j: 5.0)
        self.fail_at = fail_at
        monkeypatch.setattr(LocalHost, "measure",
                            lambda host, onnx_file, **request: self(onnx_file, **request))
        monkeypatch.setattr(profile_module, "_export", self.export)  # real exports: tested elsewhere
        monkeypatch.setattr(profile_module, "export_anchor_models", self.export_anchors)
        monkeypatch.setattr(measure_module, "runtime_info", lambda target: {
            "runtime": target.runtime, "runtime_version": "9.9", "device": self.device})
        self.device = device

    @staticmethod
    def export(entry, batch, path, opset):
        path.write_bytes(b"stand-in for " + entry.key.encode())
        return path

    @staticmethod
    def export_anchors(model_name, *, input_size, batch, work, model=None, unpruned=None):
        merged = work / "anchor_merged.onnx"
        merged.write_bytes(b"stand-in for the all-merged model")
        return {"unpruned": unpruned, "merged": merged}, (0, 1)

    @property
    def entry_calls(self) -> list[tuple]:
        return [shape for name, shape in self.calls if name.startswith("entry")]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def __call__(self, onnx_file, *, target, protocol, input_shape):
        assert onnx_file.is_file() and protocol == TINY_PROTOCOL
        name = onnx_file.stem
        self.calls.append((name, tuple(input_shape)))
        if name.startswith("entry") and len(self.entry_calls) == self.fail_at:
            raise KeyboardInterrupt
        if name == "model":
            ms = self.sentinel(self.names().count("model"))
        elif name == "anchor_merged":
            ms = 2.0
        else:
            ms = 0.1 * len(self.entry_calls)
        return Measurement.from_samples([ms, ms * 1.01, ms * 0.99])


# entries only: the end-to-end phase has tests of its own
ISOLATED = EndToEndOptions(predictor="isolated", holdout=0)


def run(tmp_path, **kwargs):
    options = dict(input_size=32, out=tmp_path / "t.csv", protocol=TINY_PROTOCOL, model=tiny(),
                   end_to_end=ISOLATED)
    options.update(kwargs)
    return profile("tiny", explicit_cpu_ort(), **options)


def explicit_cpu_ort():
    """cpu-ort with its run settings given (the runtime's defaults), so no settings probe runs: these
    tests count every measurement; the probe has tests of its own."""
    return load_target("cpu-ort").with_settings(RunSettings())


def test_profile_writes_every_entry_and_a_rerun_measures_nothing(tmp_path, monkeypatch):
    runtime = FakeRuntime(monkeypatch)
    lines: list[str] = []
    result = run(tmp_path, batch=2, progress=lines.append)
    assert runtime.entry_calls == [(2, 3, 32, 32), (2, 8, 8, 8), (2, 8, 8, 8), (2, 8, 8, 8), (2, 8)]
    # the model row first and two more (the sentinel's start value: their median), the entries, the
    # sentinel at the end, the anchors
    assert runtime.names() == ["model", "model", "model", "entry1", "entry2", "entry3", "entry4", "entry5",
                               "model", "model", "anchor_merged", "model", "anchor_merged"]
    assert lines[0].startswith("[6/6] model tiny (TinyConvNeXt 3x32x32) 5.000 ms (cv 1%, n 3)")
    assert lines[1] == ("sentinel: the whole model's row (5.000 ms) and 2 more measurement(s): the start "
                        "value is their median, 5.000 ms")
    assert lines[2].startswith("[1/6] fixed conv1+bn1+act1 (Sequential 3x32x32) 0.100 ms (cv 1%, n 3)")
    assert lines[3].startswith("[2/6] original blocks.0 (convnext 8x8x8, ×2) 0.200 ms")
    table = LatencyTable.read(tmp_path / "t.csv")
    assert table.equals(result.table) and table.meta.complete
    assert (table.meta.device_string, table.meta.runtime_version, table.meta.batch) == ("Test CPU", "9.9", 2)
    assert table.meta.protocol == TINY_PROTOCOL.as_dict()
    assert set(table.rows["source"]) == {"measured"}
    assert table.predict([]) == pytest.approx(0.1 + 2 * 0.2 + 0.4 + 0.5)
    assert table.predict([1]) == pytest.approx(0.1 + 0.2 + 0.3 + 0.4 + 0.5)
    assert table.model_latency() == 5.0
    assert "wrote" in result.summary() and str(tmp_path / "t.csv") in result.summary()
    # identity: this machine's fingerprint (with the runtime's device string) and the two anchors
    meta = table.meta
    assert meta.fingerprint["device"] == "Test CPU" and meta.fingerprint["runtime_version"] == "9.9"
    assert meta.fingerprint["cpu"] == hostinfo.cpu_name() and len(meta.fingerprint["id"]) == 16
    assert (meta.anchors["unpruned_ms"], meta.anchors["merged_ms"], meta.anchors["rounds"]) == (5.0, 2.0, 2)
    assert meta.anchors["pruned"] == [0, 1]
    run_record = meta.conditions["runs"][-1]
    assert run_record["measured"] == 6 and run_record["sentinel"]["start_ms"] == 5.0
    assert [c["kind"] for c in run_record["sentinel"]["checks"]] == ["start", "start", "start", "check"]
    assert run_record["sentinel"]["drifts"] == []
    assert meta.conditions["affinity"] == list(hostinfo.pinned_cores(None))

    lines.clear()
    calls = len(runtime.calls)
    again = run(tmp_path, batch=2, progress=lines.append)
    assert len(runtime.calls) == calls  # nothing measured twice, not even the anchors
    assert (again.done_now, again.kept) == (0, 6)
    assert all(line.endswith("already in the table") for line in lines[1:7])
    assert lines[7].startswith("no held-out subnet") and len(lines) == 8
    assert LatencyTable.read(tmp_path / "t.csv").rows.equals(table.rows)


def test_resuming_with_other_settings_is_refused_naming_the_field(tmp_path, monkeypatch):
    runtime = FakeRuntime(monkeypatch)
    run(tmp_path)
    with pytest.raises(TableError, match=r"batch: table 1, now 4.*--force"):
        run(tmp_path, batch=4)
    other = Protocol(**{**TINY_PROTOCOL.as_dict(), "min_iters": 5})
    with pytest.raises(TableError, match=r"protocol\.min_iters: table 3, now 5"):
        run(tmp_path, protocol=other)
    with pytest.raises(TableError, match="input_size"):
        run(tmp_path, input_size=64)
    runtime.device = "Another CPU"
    expected = r"other settings \(machine: device: table 'Test CPU', here 'Another CPU'\)"
    with pytest.raises(TableError, match=expected):
        run(tmp_path)
    lines: list[str] = []
    resumed = run(tmp_path, allow_mismatch=True, progress=lines.append)
    assert "resumed on a different machine" in resumed.table.meta.notes[0]
    assert resumed.table.meta.fingerprint["device"] == "Another CPU"
    assert lines[0].startswith("warning:")
    with pytest.raises(TableError, match="batch"):  # --allow-mismatch covers the machine, not the request
        run(tmp_path, batch=4, allow_mismatch=True)
    calls = len(runtime.entry_calls)
    started_over = run(tmp_path, batch=4, force=True)
    assert started_over.table.meta.batch == 4 and len(runtime.entry_calls) == calls + 5
    assert LatencyTable.read(tmp_path / "t.csv").meta.batch == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.fit.csv", "t.meta.json"]


def test_an_interrupted_force_keeps_the_old_table_and_the_next_force_resumes_the_new_one(tmp_path,
                                                                                        monkeypatch):
    FakeRuntime(monkeypatch)
    run(tmp_path)
    old = {name: (tmp_path / name).read_bytes() for name in ("t.csv", "t.meta.json", "t.fit.csv")}
    runtime = FakeRuntime(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, batch=4, force=True)
    assert {name: (tmp_path / name).read_bytes() for name in old} == old  # the old table, intact
    assert LatencyTable.read(tmp_path / "t.csv").meta.complete
    pending = LatencyTable.read(tmp_path / ".t.pending.csv")
    assert len(pending) == 3 and pending.meta.batch == 4 and not pending.meta.complete  # model row + 2
    with pytest.raises(TableError, match=r"an unfinished --force run is at \.t\.pending\.csv"):
        run(tmp_path, batch=4)
    runtime.fail_at = None
    lines: list[str] = []
    result = run(tmp_path, batch=4, force=True, progress=lines.append)
    assert len(runtime.entry_calls) == 3 + 3  # the first two entries were kept from the interrupted run
    assert any("resuming the new table" in line for line in lines)
    assert result.kept == 3 and result.path == tmp_path / "t.csv"
    table = LatencyTable.read(tmp_path / "t.csv")
    assert table.meta.batch == 4 and table.meta.complete and len(table) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.fit.csv", "t.meta.json"]


def test_sentinel_drift_measures_exactly_the_entries_of_the_window_again(tmp_path, monkeypatch):
    # the whole model: 5 ms, but 5.6 ms (+12 %) at its 2nd measurement (the check after entries 1-2)
    runtime = FakeRuntime(monkeypatch, sentinel=lambda j: 5.6 if j == 2 else 5.0)
    lines: list[str] = []
    run(tmp_path, sentinel=SentinelPolicy(every=2, interval_s=1e9, start_samples=1, confirm=False),
        progress=lines.append)
    assert runtime.names()[:11] == ["model",  # the model row: the start value
                                    "entry1", "entry2", "model",  # window 1-2, drift
                                    "entry1", "entry2", "model",  # 1-2 again, steady
                                    "entry3", "entry4", "model",  # window 3-4, steady
                                    "entry5"]
    assert runtime.names()[11:] == ["model", "model", "anchor_merged", "model", "anchor_merged"]
    table = LatencyTable.read(tmp_path / "t.csv")
    rows = table.rows.set_index(["key", "form"])["median_ms"]
    first, second = find_entries(tiny(), model_name="tiny", input_size=32)[:2]
    assert rows[(first.key, first.form)] == pytest.approx(0.3)  # the re-measured values
    assert rows[(second.key, second.form)] == pytest.approx(0.4)
    assert rows[("model", "model")] == 5.0
    drift = table.meta.conditions["runs"][-1]["sentinel"]["drifts"]
    assert len(drift) == 1 and drift[0]["entries"] == "1-2" and drift[0]["action"] == "measured again"
    assert drift[0]["drift"] == pytest.approx(0.12) and drift[0]["sentinel_ms"] == 5.6
    assert isinstance(drift[0]["busiest"], list) and ("load" in drift[0])
    warning = next(line for line in lines if line.startswith("warning:"))
    assert "+12.0% from 5.000 ms" in warning and "entries measured meanwhile: 1-2 — " in warning
    assert "measuring them again" in warning
    assert sum("(again)" in line for line in lines) == 2


def test_a_lasting_drift_is_measured_again_a_bounded_number_of_times_then_kept(tmp_path, monkeypatch):
    runtime = FakeRuntime(monkeypatch, sentinel=lambda j: 5.0 if j == 1 else 6.0)
    lines: list[str] = []
    run(tmp_path, sentinel=SentinelPolicy(every=0, interval_s=1e9, retries=1, rebase=False, start_samples=1,
                                      confirm=False),
        progress=lines.append)
    assert len(runtime.entry_calls) == 5 + 5  # the whole window (entries 1-5) once more, then kept
    drifts = LatencyTable.read(tmp_path / "t.csv").meta.conditions["runs"][-1]["sentinel"]["drifts"]
    assert [d["action"] for d in drifts] == ["measured again", "kept (retries exhausted)"]
    assert [d["entries"] for d in drifts] == ["1-5", "1-5"]
    assert "profile on a quieter machine" in [line for line in lines if line.startswith("warning:")][-1]


def test_a_lasting_drift_rebases_once_and_measures_the_earlier_entries_again(tmp_path, monkeypatch):
    runtime = FakeRuntime(monkeypatch, sentinel=lambda j: 5.0 if j == 1 else 6.0)
    run(tmp_path, sentinel=SentinelPolicy(every=0, interval_s=1e9, retries=1, start_samples=1, confirm=False))
    # the window (entries 1-5) once more, at the new level: it persists, so it becomes the start and the
    # entry measured before the window (the model row, 6) is measured again; the window is not
    assert len(runtime.entry_calls) == 5 + 5
    table = LatencyTable.read(tmp_path / "t.csv")
    drifts = table.meta.conditions["runs"][-1]["sentinel"]["drifts"]
    assert [d["action"] for d in drifts] == ["measured again",
                                             "rebased: the earlier entries (6) measured again"]
    assert table.model_latency() == pytest.approx(6.0)


def test_bad_batch_is_a_config_error(tmp_path, monkeypatch):
    FakeRuntime(monkeypatch)
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        run(tmp_path, batch=0)


def test_a_table_of_another_model_definition_is_refused(tmp_path, monkeypatch):
    FakeRuntime(monkeypatch)
    run(tmp_path)
    changed = tiny()
    changed.fc = nn.Linear(8, 12)
    with pytest.raises(TableError, match="another model definition"):
        run(tmp_path, model=changed)


def test_an_absent_target_fails_with_the_reason_and_the_install_hint(tmp_path, capsys):
    with pytest.raises(RuntimeUnavailableError, match=r"pip install.*--estimate"):
        profile("tiny", load_target("amd-mi100"), out=tmp_path / "t.csv", model=tiny())
    code = cli.main(["profile", "--target", "amd-mi100", "--model", "convnext_atto",
                     "--out", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("deploykit profile: error: cannot profile on target amd-mi100")
    assert "pip install" in err and err.count("\n") == 1
    assert not (tmp_path / "t.csv").exists()


# --- real runs -------------------------------------------------------------------------------------

def wait_for_rows(path, proc, timeout_s: float) -> LatencyTable:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the profile ended before it could be interrupted"
        if path.exists():
            try:
                table = LatencyTable.read(path)
            except TableError:  # metadata written, rows not yet
                table = None
            if table is not None and len(table) >= 1:
                return table
        time.sleep(0.05)
    raise AssertionError(f"no table row within {timeout_s} s")


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """`deploykit profile` on onnxruntime CPU, killed once it has written an entry, then rerun.

    timm's ``test_vit`` (6 entries: patch embedding, one block signature × 2 forms, norm, head,
    model) keeps this under half a minute; the code under test is the same for every family.
    """
    work = tmp_path_factory.mktemp("resume")
    out = work / "vit.csv"
    command = [sys.executable, "-m", "deploykit.cli", "profile", "--target", "cpu-ort", "--model",
               "test_vit", "--input-size", "32", "--out", str(out), "--fit-samples", "0", "--holdout", "2",
               *TINY_PROTOCOL_ARGS]
    with open(work / "first.log", "w") as log:
        proc = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_for_rows(out, proc, timeout_s=240)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the profile and its measuring worker
            proc.wait()
    partial = LatencyTable.read(out)
    rerun = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=400, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    return partial, LatencyTable.read(out), rerun


def test_a_killed_profile_resumes_without_measuring_anything_twice(killed_and_resumed):
    partial, final, rerun = killed_and_resumed
    assert not partial.meta.complete and 1 <= len(partial) < 6
    assert final.meta.complete and len(final) == 6
    assert not final.rows.duplicated(["key", "form"]).any()
    kept = final.rows.set_index(["key", "form"]).loc[list(zip(partial.rows["key"], partial.rows["form"]))]
    for column in ("median_ms", "p90_ms", "std_ms", "measured_at", "compile_s"):
        assert list(kept[column]) == list(partial.rows[column]), column
    assert rerun.stderr.count("already in the table") == len(partial)
    assert f"resuming {final.path}" in rerun.stderr
    assert "wrote" in rerun.stdout and str(final.path) in rerun.stdout


def test_real_onnxruntime_cpu_table(killed_and_resumed):
    import onnxruntime

    _, table, _ = killed_and_resumed
    meta = table.meta
    assert (meta.target, meta.runtime, meta.provider, meta.mode) == (
        "cpu-ort", "onnxruntime", "CPUExecutionProvider", "measured")
    assert meta.runtime_version == onnxruntime.__version__
    assert meta.device_string == hostinfo.cpu_name()
    assert (meta.batch, meta.input_size, meta.model) == (1, (32, 32), "test_vit")
    assert set(table.rows["source"]) == {"measured"}
    assert (table.rows["median_ms"] > 0).all() and (table.rows["n"] >= 3).all()
    assert (table.rows["compile_s"] > 0).all()
    assert table.block_indices == tuple(range(6)) and table.prunable_indices == tuple(range(6))
    assert table.predict(table.prunable_indices) > 0 and table.model_latency() > 0
    # the end-to-end phase: the unpruned and the all-merged model fitted, two subnets held out
    assert meta.predictor["fit"]["designed"] == 2 and meta.fidelity["n"] == 2
    assert (table.path.parent / "vit.fit.csv").is_file()
    table.check_matches(target="cpu-ort", batch=1, input_size=32)
    assert meta.fingerprint["runtime_version"] == onnxruntime.__version__
    # both anchors measured, each over its rounds (which is faster is timing, not something to assert:
    # under the parallel test load the two tiny models measure within noise of each other)
    assert meta.anchors["unpruned_ms"] > 0 and meta.anchors["merged_ms"] > 0
    rounds = meta.anchors["rounds"]
    assert len(meta.anchors["unpruned_rounds_ms"]) == len(meta.anchors["merged_rounds_ms"]) == rounds
    assert table.rows["ci_low_ms"].notna().all() or (table.rows["n"] < 6).any()


@pytest.mark.openvino
def test_real_openvino_cpu_table(tmp_path, monkeypatch):
    openvino = pytest.importorskip("openvino")
    target = load_target("cpu-openvino")
    ok, reason = availability(target)
    if not ok:
        pytest.skip(reason)
    # the settings probe runs (the one real OpenVINO probe, 3 processes a candidate to keep CI short);
    # the sentinel at the start and the end only, never redoing entries (a loaded CI machine drifts; the
    # number of measurements is not checked here)
    monkeypatch.setattr(probe, "PROBE_PROCESSES", 3)
    profile("tiny", target, input_size=32, out=tmp_path / "ov.csv", protocol=TINY_PROTOCOL,
            model=tiny(), end_to_end=ISOLATED,
            sentinel=SentinelPolicy(every=0, interval_s=1e9, max_drift=100.0))
    table = LatencyTable.read(tmp_path / "ov.csv")
    assert table.meta.runtime == "openvino" and table.meta.complete
    assert openvino.__version__.split("-")[0] in table.meta.runtime_version
    assert len(table) == 6 and set(table.rows["source"]) == {"measured"}
    assert (table.rows["median_ms"] > 0).all()
    assert table.block_indices == (0, 1) and table.prunable_indices == (0, 1)
    assert table.predict([0, 1]) > 0 and table.model_latency() > 0


# --- the end-to-end phase: fit and held-out fidelity, with scripted measurements -------------------

class TwoStages(nn.Module):
    """Stem → three identical ConvNeXt blocks → downsampling → three more → pool → fc: two block groups."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.first = nn.Sequential(*(ConvNeXtBlock(8) for _ in range(3)))
        self.down = nn.Conv2d(8, 16, 2, stride=2)
        self.second = nn.Sequential(*(ConvNeXtBlock(16) for _ in range(3)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.second(self.down(self.first(self.stem(x)))))


def chain_latency(pruned) -> float:
    """A known additive + adjacent-pair structure the fitted predictor must recover exactly."""
    s = set(pruned)
    pairs = sum(1 for i in (0, 1) if i in s and i + 1 in s)
    return 10.0 - 1.0 * len(s & {0, 1, 2}) - 2.0 * len(s & {3, 4, 5}) + 0.5 * pairs


class Subnets:
    """Stands in for the end-to-end measurer. ``calls``: one per measurement (a held-out subnet is
    measured in three processes, in a row); ``subsets``: the subnets measured, in order, once each."""

    def __init__(self, die_after: int | None = None):
        self.calls: list[tuple[int, ...]] = []
        self.die_after = die_after      # interrupt at the first call for a subnet after this many

    @property
    def subsets(self) -> list[tuple[int, ...]]:
        return [s for n, s in enumerate(self.calls) if n == 0 or self.calls[n - 1] != s]

    def __call__(self, pruned):
        fresh = not self.calls or self.calls[-1] != tuple(pruned)
        if self.die_after is not None and fresh and len(self.subsets) == self.die_after:
            raise KeyboardInterrupt
        self.calls.append(tuple(pruned))
        return chain_latency(pruned)


def test_profile_ends_with_a_fitted_predictor_and_its_held_out_fidelity(tmp_path, monkeypatch):
    import itertools

    import pandas as pd

    FakeRuntime(monkeypatch)
    torch.manual_seed(0)
    model = TwoStages().eval()
    options = EndToEndOptions(fit_samples=6, holdout=10, seed=1)
    lines: list[str] = []
    dying = Subnets(die_after=7)
    with pytest.raises(KeyboardInterrupt):
        profile("two", load_target("cpu-ort"), input_size=32, out=tmp_path / "t.csv", protocol=TINY_PROTOCOL,
                model=model, end_to_end=options, measure_subnet=dying)
    interrupted = LatencyTable.read(tmp_path / "t.csv")
    assert not interrupted.meta.complete and interrupted.meta.predictor is None
    assert len(pd.read_csv(tmp_path / "t.fit.csv")) == 7  # every subnet written as it was measured
    with pytest.raises(TableError, match="is incomplete"):
        interrupted.predict(())

    rest = Subnets()
    result = profile("two", load_target("cpu-ort"), input_size=32, out=tmp_path / "t.csv",
                     protocol=TINY_PROTOCOL, model=model, end_to_end=options, measure_subnet=rest,
                     progress=lines.append)
    measured = dying.subsets + rest.subsets
    assert len(measured) == len(set(measured)) == 4 + 6 + 10  # nothing measured twice
    held = [s for s in measured if (dying.calls + rest.calls).count(s) == 3]
    assert len(held) == 10 and len(dying.calls + rest.calls) == 4 + 6 + 3 * 10  # held-out: 3 processes
    table = LatencyTable.read(tmp_path / "t.csv")
    meta = table.meta
    assert meta.complete and table.groups == ((0, 1, 2), (3, 4, 5))
    assert meta.layout == {"blocks": 6, "prunable": [0, 1, 2, 3, 4, 5], "fixed": ["stem", "down", "head"]}
    assert meta.predictor["fit"]["designed"] == 4 and meta.predictor["fit"]["random"] == 6
    assert table.predictor.pair_delta_ms == pytest.approx({(0, 1): 0.5, (1, 2): 0.5})
    for k in range(7):  # exact recovery: the table now predicts every subnet as measured
        for subset in itertools.combinations(range(6), k):
            assert table.predict(subset) == pytest.approx(chain_latency(subset), abs=1e-9)
    fidelity = meta.fidelity
    assert fidelity["n"] == 10 and fidelity["within_5"] == 1.0
    assert fidelity["mape"] == pytest.approx(0, abs=1e-9)
    # the whole model's fresh-process measurements: six by the fake runtime (5 ms: the sentinel's three
    # start values and its end check, the anchor's two rounds) and the unpruned end-to-end point by the
    # fake subnets (10 ms)
    assert fidelity["repeatability"] == {"n": 7, "median_ms": 5.0, "robust_cv": 0.0, "within_5": 6 / 7,
                                         "range_pct": 100.0}
    points = pd.read_csv(tmp_path / "t.fit.csv", keep_default_na=False, dtype={"pruned": str})

    def phase(name):
        chosen = points.loc[points["phase"] == name, "pruned"]
        return {tuple(int(i) for i in p.split(";") if i) for p in chosen}

    held, fit = phase("holdout"), phase("fit")
    assert len(held) == 10 and not held & fit and {(), (0, 1, 2), (3, 4, 5), tuple(range(6))} <= fit
    assert points["predicted_ms"].to_numpy() == pytest.approx(points["measured_ms"].to_numpy())
    assert any(line.startswith("resuming the end-to-end phase") for line in lines)
    assert sum("(already measured)" in line for line in lines) == 7
    assert "table fidelity (fitted predictor, 10 held-out subnets): ρ 1.000, ±5% 100%" in result.summary()
    assert "(the unpruned model itself: 86% of 7 measurements within ±5% of their median)" in result.summary()


def test_the_isolated_predictor_still_stores_its_held_out_fidelity(tmp_path, monkeypatch):
    FakeRuntime(monkeypatch)
    torch.manual_seed(0)
    subnets = Subnets()
    result = profile("two", load_target("cpu-ort"), input_size=32, out=tmp_path / "t.csv",
                     protocol=TINY_PROTOCOL, model=TwoStages().eval(), measure_subnet=subnets,
                     end_to_end=EndToEndOptions(predictor="isolated", holdout=5))
    table = result.table
    assert table.meta.predictor is None and len(subnets.subsets) == 5 and len(subnets.calls) == 3 * 5
    assert table.meta.fidelity["predictor"] == "isolated sum" and table.meta.fidelity["n"] == 5
    assert "only 5 held-out subnets" in table.meta.fidelity["note"]
    assert table.predict((1,)) == table.isolated_sum((1,))


def test_a_rerun_with_the_fitted_predictor_reuses_points_and_drops_a_calibration(tmp_path, monkeypatch):
    FakeRuntime(monkeypatch)
    torch.manual_seed(0)
    model, first = TwoStages().eval(), Subnets()
    common = dict(input_size=32, out=tmp_path / "t.csv", protocol=TINY_PROTOCOL, model=model)
    isolated = profile("two", load_target("cpu-ort"), measure_subnet=first,
                       end_to_end=EndToEndOptions(predictor="isolated", holdout=10), **common)
    isolated.table.with_meta(calibration=(1.1, 0.2)).write(tmp_path / "t.csv")  # as `lut check` leaves it
    second = Subnets()
    fitted = profile("two", load_target("cpu-ort"), measure_subnet=second,
                     end_to_end=EndToEndOptions(fit_samples=4, holdout=10), **common)
    meta = fitted.table.meta
    assert meta.predictor is not None and meta.calibration is None
    assert "calibration was dropped" in meta.notes[-1]
    assert len(first.subsets) == 10 and len(second.subsets) == 4 + 4  # the held-out subnets were reused
    assert not set(first.calls) & set(second.calls)
    assert fitted.table.predict((0, 3)) == pytest.approx(chain_latency((0, 3)))


def test_a_forced_profile_names_the_points_file_it_leaves_beside_the_table(tmp_path, monkeypatch):
    FakeRuntime(monkeypatch)
    torch.manual_seed(0)
    common = dict(input_size=32, out=tmp_path / "t.csv", protocol=TINY_PROTOCOL, model=TwoStages().eval(),
                  end_to_end=EndToEndOptions(fit_samples=2, holdout=3))
    profile("two", load_target("cpu-ort"), measure_subnet=Subnets(), **common)
    profile("two", load_target("cpu-ort"), measure_subnet=Subnets(), force=True, **common)
    meta = LatencyTable.read(tmp_path / "t.csv").meta
    # measured as .t.pending.fit.csv, which the swap renamed
    assert meta.predictor["fit"]["points_file"] == meta.fidelity["points_file"] == "t.fit.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.fit.csv", "t.meta.json"]


def test_a_held_out_subnet_is_the_median_of_three_processes_of_one_export(tmp_path, monkeypatch):
    from deploykit.latency import endtoend
    from deploykit.latency.subnets import SubnetMeasurer

    values = iter([12.0, 10.0, 10.5])  # one slow process of three
    timing = endtoend._median_timing((1, 2), lambda subset: next(values), 3, lambda: 0.5)
    assert timing.measured_ms == 10.5 and timing.pruned == (1, 2) and timing.load == 0.5
    exported: list[tuple] = []
    measurer = SubnetMeasurer("tiny", input_size=(32, 32), batch=1, work=tmp_path, model=tiny().eval(),
                              time_onnx=lambda path, shape: 1.0)
    monkeypatch.setattr(measurer, "export", lambda pruned, path: exported.append(pruned) or path.touch())
    for subset in ((1,), (1,), (1,), (), (1,)):
        measurer(subset)
    assert exported == [(1,), (), (1,)]  # the same subnet asked for in a row is exported once


def test_an_auto_target_is_probed_first_and_the_table_records_the_choice(tmp_path, monkeypatch):
    runtime = FakeRuntime(monkeypatch)
    # eight probe processes each, then the choice and one thread three more each, confirming the choice
    by_settings = {RunSettings(threads=1): iter([9.0, 9.1, 8.9, 9.0, 9.2, 9.1, 9.0, 8.9, 9.0, 9.1, 9.0]),
                   RunSettings(threads=2, spinning=True): iter([5.0, 9.0, 7.0, 5.1, 5.0, 5.0, 5.1, 5.0]),
                   RunSettings(threads=2, spinning=False): iter([6.0, 6.1, 5.9, 6.0, 6.2, 6.0, 6.1, 6.0,
                                                                 6.1, 6.0, 6.2])}

    def measure(host, onnx_file, *, target, protocol, input_shape):
        if onnx_file.parent.name.startswith("deploykit-probe-"):
            ms = next(by_settings[target.settings])
            return Measurement.from_samples([ms, ms, ms])
        assert target.settings == RunSettings(threads=2, spinning=False) and not target.auto_settings
        return runtime(onnx_file, target=target, protocol=protocol, input_shape=input_shape)

    monkeypatch.setattr(LocalHost, "measure", measure)
    monkeypatch.setattr(fingerprint_module, "physical_cores", lambda cpuinfo: 2)
    lines: list[str] = []
    options = dict(input_size=32, out=tmp_path / "t.csv", protocol=TINY_PROTOCOL, model=tiny(),
                   end_to_end=ISOLATED, progress=lines.append)
    table = profile("tiny", load_target("cpu-ort"), **options).table
    assert table.meta.measured_with() == RunSettings(threads=2, spinning=False)
    assert table.meta.threads == 2 and table.meta.fingerprint["settings"] == "spinning=off"
    rows = table.meta.settings_probe["rows"]
    assert [r["medians_ms"][:3] for r in rows] == [[9.0, 9.1, 8.9], [5.0, 9.0, 7.0], [6.0, 6.1, 5.9]]
    assert all(len(r["medians_ms"]) == 8 for r in rows)
    assert [r["repeatable"] for r in rows] == [True, False, True]
    assert any("<- chosen" in line and "2 threads, spinning off" in line for line in lines)
    confirmation = table.meta.settings_probe["confirmation"]
    assert [r["medians_ms"] for r in confirmation] == [[6.1, 6.0, 6.2], [9.0, 9.1, 9.0]]
    # a resumed profile keeps the table's settings without probing again
    again = profile("tiny", load_target("cpu-ort"), **options)
    assert again.done_now == 0 and all(next(it, None) is None for it in by_settings.values())
    # the chosen settings' processes were steady: the sentinel keeps its ±5 %
    assert table.meta.conditions["runs"][0]["sentinel"]["policy"]["max_drift"] == 0.05
    assert not any("drift limit" in line for line in lines)


def test_a_noisy_choice_widens_the_sentinels_drift_limit_to_its_own_noise(tmp_path, monkeypatch):
    runtime = FakeRuntime(monkeypatch)
    noisy = [7.81, 10.70, 9.11, 11.95, 12.49, 12.36, 13.06, 12.73]  # a demo probe's steadiest, × 10
    by_settings = {RunSettings(threads=1): iter([9.0, 12.0, 9.1, 14.0, 9.0, 12.5, 8.0, 9.5]),
                   RunSettings(threads=2, spinning=True): iter([5.0, 9.0, 7.0, 5.1, 6.0, 8.0, 5.1, 5.6]),
                   RunSettings(threads=2, spinning=False): iter(noisy)}

    def measure(host, onnx_file, *, target, protocol, input_shape):
        if onnx_file.parent.name.startswith("deploykit-probe-"):
            ms = next(by_settings[target.settings])
            return Measurement.from_samples([ms, ms, ms])
        return runtime(onnx_file, target=target, protocol=protocol, input_shape=input_shape)

    monkeypatch.setattr(LocalHost, "measure", measure)
    monkeypatch.setattr(fingerprint_module, "physical_cores", lambda cpuinfo: 2)
    lines: list[str] = []
    table = profile("tiny", load_target("cpu-ort"), input_size=32, out=tmp_path / "t.csv",
                    protocol=TINY_PROTOCOL, model=tiny(), end_to_end=ISOLATED, progress=lines.append).table
    assert table.meta.measured_with() == RunSettings(threads=2, spinning=False)  # the steadiest
    limit = table.meta.conditions["runs"][0]["sentinel"]["policy"]["max_drift"]
    assert limit == pytest.approx(2 * 0.09026, abs=2e-4)
    assert any(line.startswith("sentinel: drift limit ±18%, 2 × the robust cv (9.0%)") for line in lines)


class PairedSubnets(Subnets):
    """A paired end-to-end measurer: each process lands in a state that scales both models alike (the
    unpruned model's in-process median cycles 8, 10, 12 ms), so only the ratio carries the subnet."""

    STATES = (0.8, 1.0, 1.2)

    def __call__(self, pruned):
        from deploykit.paired import PairedMeasurement

        chain_ms = super().__call__(pruned)
        scale = self.STATES[len(self.calls) % len(self.STATES)]
        ratio = chain_ms / chain_latency(())
        return PairedMeasurement(model=Measurement.from_samples([chain_ms * scale]),
                                 reference=Measurement.from_samples([chain_latency(()) * scale]),
                                 ratios=(ratio,))


def test_a_paired_end_to_end_phase_fits_ratio_times_the_median_unpruned_model(tmp_path, monkeypatch):
    import pandas as pd

    FakeRuntime(monkeypatch)
    torch.manual_seed(0)
    subnets, lines = PairedSubnets(), []
    result = profile("two", load_target("cpu-ort"), input_size=32, out=tmp_path / "t.csv",
                     protocol=TINY_PROTOCOL, model=TwoStages().eval(), measure_subnet=subnets,
                     end_to_end=EndToEndOptions(fit_samples=6, holdout=10, seed=1, paired=True),
                     progress=lines.append)
    fidelity = result.table.meta.fidelity
    points = pd.read_csv(tmp_path / "t.fit.csv", keep_default_na=False, dtype={"pruned": str})
    # the anchor is the unpruned model's median over the processes kept; every point is ratio × anchor,
    # so the fit recovers the planted chain scaled by anchor / 10 ms, exactly, whatever state each
    # process was in (unpaired, these points would scatter by ±20 %)
    anchor = fidelity["anchor_ms"]
    assert fidelity["paired"] is True and anchor == pytest.approx(points["reference_ms"].median())
    assert points["measured_ms"].to_numpy() == pytest.approx(points["ratio"].to_numpy() * anchor)
    assert fidelity["within_5"] == 1.0 and fidelity["mape"] == pytest.approx(0, abs=1e-9)
    assert result.table.predict((0, 1)) == pytest.approx(chain_latency((0, 1)) * anchor / chain_latency(()))
    states = {round(chain_latency(()) * s, 6) for s in PairedSubnets.STATES}
    assert set(points["reference_ms"].round(6)) == states
    assert any(line.startswith("paired: every subnet's ms = its ratio") for line in lines)
    # each kept subnet's process measured the unpruned model too: those count toward the repeatability
    # (with the fake runtime's six)
    assert fidelity["repeatability"]["n"] == 6 + len(subnets.subsets)
