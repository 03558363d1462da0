"""Paired measurement: the slice arithmetic on a scripted clock (exact ratios, the A B B A order, a
machine-state change cancelled), the anchor, the backend's paired profile and the worker's paired
reply through the fake backend, and `lut check --paired` arithmetic with an injected measurer."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest

from deploykit.errors import ConfigError, TableError
from deploykit.latency.fidelity import check_table
from deploykit.measure.host import MeasureHost
from deploykit.measure.worker import handle
from deploykit.paired import MIN_PAIRS, PairedMeasurement, anchored_ms, measure_paired
from deploykit.protocol import Measurement, Protocol
from deploykit.runtimes import onnxruntime_backend as ort_backend
from deploykit.targets import load_target
from tests.fake_backend import FakeBackend, ScriptedClock, fake_target, registered
from tests.onnx_fixtures import tiny_onnx
from tests.test_fidelity import fake_table

SHORT = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.0, min_iters=1, max_repeats=3)


class Scripted:
    """Two callables that advance one clock by their scripted milliseconds, logging the order they ran.
    ``slow_after`` runs in all, both become ``factor`` × slower (the machine changed state)."""

    def __init__(self, model_ms: float, reference_ms: float, *, slow_after: int | None = None,
                 factor: float = 1.0):
        self.clock, self.log = ScriptedClock(), []
        self.ms = {"model": model_ms, "reference": reference_ms}
        self.slow_after, self.factor = slow_after, factor

    def runner(self, name: str):
        def run() -> None:
            slow = self.slow_after is not None and len(self.log) >= self.slow_after
            self.log.append(name)
            self.clock.advance(self.ms[name] * (self.factor if slow else 1.0) / 1000.0)

        return run


def measured(script: Scripted, protocol: Protocol = SHORT, slice_s: float = 0.01) -> PairedMeasurement:
    return measure_paired(script.runner("model"), script.runner("reference"), protocol, slice_s=slice_s,
                          clock=script.clock)


def test_a_steady_pair_gives_its_exact_ratio_in_slices_taken_a_b_b_a():
    script = Scripted(2.0, 4.0)
    result = measured(script)
    assert result.ratios == pytest.approx([0.5] * MIN_PAIRS)  # steady after one round
    assert result.ratio_ci == pytest.approx(0.0, abs=1e-9)
    assert result.model.median_ms == pytest.approx(2.0) and result.reference.median_ms == pytest.approx(4.0)
    # warm-up (one run each), then slices of 10 ms: 5 model runs or 3 reference runs (the slice ends
    # on the first run at or past 10 ms), the first of each pair alternating
    runs = script.log[2:]
    assert runs[:16] == ["model"] * 5 + ["reference"] * 3 + ["reference"] * 3 + ["model"] * 5


def test_a_machine_that_slows_down_mid_measurement_leaves_the_ratio_alone():
    """Both models 3× slower from the 40th run on: their own medians move, their ratio does not (but in
    the one pair whose slices straddle the change)."""
    result = measured(Scripted(3.0, 4.0, slow_after=40, factor=3.0),
                      Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.4, min_iters=1, max_repeats=1))
    off = [r for r in result.ratios if not math.isclose(r, 0.75)]
    assert len(result.ratios) > 10 and len(off) <= 1 and result.ratio == pytest.approx(0.75)
    samples = result.model.samples_ms
    assert max(samples) == pytest.approx(9.0) and min(samples) == pytest.approx(3.0)


def test_sampling_stops_at_max_repeats_when_the_ratio_never_settles():
    state = {"n": 0}
    clock = ScriptedClock()

    def model() -> None:  # alternates 1 ms and 3 ms per slice: the ratio's interval stays wide
        state["n"] += 1
        clock.advance((1.0 if (state["n"] // 10) % 2 else 3.0) / 1000.0)

    result = measure_paired(model, lambda: clock.advance(0.002), SHORT, slice_s=0.01, clock=clock)
    assert result.model.repeats == SHORT.max_repeats and len(result.ratios) == MIN_PAIRS * SHORT.max_repeats


def test_anchored_milliseconds_are_ratio_times_the_median_reference():
    anchor, ms = anchored_ms([0.5, 0.75, 1.0], [4.0, 6.0, 5.0])
    assert anchor == 5.0 and ms == [2.5, 3.75, 5.0]
    with pytest.raises(ValueError):
        anchored_ms([0.5], [])


def test_a_paired_record_round_trips_and_a_bad_one_is_refused():
    one = Measurement.from_samples([1.0, 2.0])
    record = PairedMeasurement(model=one, reference=one, ratios=(0.5, 0.6)).as_dict()
    assert PairedMeasurement.from_dict(record).ratios == (0.5, 0.6)
    for bad in ({**record, "ratios": []}, {**record, "ratios": [0.5, -1]}, {"ratios": [1.0]}):
        with pytest.raises(TableError, match="malformed paired measurement"):
            PairedMeasurement.from_dict(bad)


@pytest.fixture
def two_files(tmp_path):
    model = tiny_onnx(tmp_path / "model.onnx")
    return model, shutil.copy(model, tmp_path / "reference.onnx")


def test_the_backend_times_two_sessions_in_one_process_and_closes_both(two_files):
    model, reference = two_files
    fake = FakeBackend(file_ms={"model.onnx": 1.5, "reference.onnx": 6.0}, compile_s=0.5)
    with registered(fake):
        result = fake.profile_paired(model, reference, target=fake_target(), protocol=SHORT,
                                     input_shape=(1, 3, 16, 16))
    assert result.ratio == pytest.approx(0.25) and result.model.median_ms == pytest.approx(1.5)
    assert result.model.compile_s == pytest.approx(0.5)
    assert result.reference.first_run_ms == pytest.approx(6.0)
    assert [s.closed for s in fake.opened] == [True, True]


def test_the_worker_replies_with_the_paired_record(two_files):
    model, reference = two_files
    with registered(FakeBackend(file_ms={"model.onnx": 2.0, "reference.onnx": 2.5})):
        reply = handle({"onnx_path": str(model), "reference_path": str(reference),
                        "target": fake_target().as_dict(), "protocol": SHORT.as_dict(),
                        "input_shape": [1, 3, 16, 16]})
    assert reply["ok"] and "measurement" not in reply
    assert PairedMeasurement.from_dict(reply["paired"]).ratio == pytest.approx(0.8)


def test_a_host_that_carries_one_file_per_request_refuses_pairing(two_files):
    class OneFileHost(MeasureHost):
        availability = measure = outputs = runtime_info = fingerprint = None

        def describe(self) -> str:
            return "the device at https://board:8765"

    with pytest.raises(ConfigError, match="which the device at https://board:8765 does not offer"):
        OneFileHost().measure_paired(*two_files, target=fake_target(), protocol=SHORT,
                                     input_shape=(1, 3, 16, 16))


class PairedPlanted:
    """A paired measurer: ratio = the table's sum for the subnet / its sum unpruned; the unpruned model's
    in-process median cycles through ``references`` (the processes land in different states)."""

    def __init__(self, table, references=(10.0, 12.0, 11.0)):
        self.raw, self.references, self.calls = table.with_meta(calibration=None), references, 0

    def __call__(self, pruned):
        reference = self.references[self.calls % len(self.references)]
        self.calls += 1
        ratio = self.raw.predict(pruned) / self.raw.predict(())
        return PairedMeasurement(model=Measurement.from_samples([ratio * reference]),
                                 reference=Measurement.from_samples([reference]), ratios=(ratio,))


def test_a_paired_check_anchors_every_ratio_on_the_median_reference(tmp_path):
    table = fake_table(tmp_path / "t.csv")
    result = check_table(tmp_path / "t.csv", samples=7, seed=3, measure=PairedPlanted(table), store=False,
                         plot=False)
    full = table.predict(())
    assert result.anchor_ms == 11.0 and result.as_dict()["paired"] is True
    for point in result.points:  # in-process medians moved with the process; anchored ones do not
        assert math.isclose(point.measured_ms, point.ratio * 11.0)
        assert math.isclose(point.measured_ms, table.predict(point.pruned) / full * 11.0)
    assert result.before.spearman == 1.0 and "paired: each subnet timed as a ratio" in result.summary()
    points = pd.read_csv(result.csv_path)
    assert points["ratio"].notna().all() and set(points["reference_ms"]) == {10.0, 11.0, 12.0}
    again = check_table(tmp_path / "t.csv", samples=7, seed=3, measure=PairedPlanted(table), store=False,
                        plot=False)
    assert again.reused == 7 and again.anchor_ms == 11.0


def test_pairing_is_the_default_where_the_target_runs_on_this_machines_cpu_threads():
    from deploykit.latency.options import pairs_by_default
    from deploykit.runsettings import RunSettings
    from deploykit.targets import load_target

    ort = load_target("cpu-ort")
    two, one = ort.with_settings(RunSettings(threads=2)), ort.with_settings(RunSettings(threads=1))
    assert pairs_by_default(two, local=True)
    assert pairs_by_default(ort.with_settings(RunSettings()), local=True)  # the runtime's default: all cores
    assert pairs_by_default(one, local=True)  # one thread too: a slow window of the machine cancels out
    assert not pairs_by_default(two, local=False)  # a device agent measures one file per request
    with registered(FakeBackend()):  # not the CPU's threads (an accelerator)
        assert not pairs_by_default(fake_target(), local=True)


SHARED_POOL_SCRIPT = """
import json, sys
from dataclasses import replace
from deploykit.errors import RuntimeUnavailableError
from deploykit.protocol import Protocol
from deploykit.runtimes import onnxruntime_backend as ort_backend
from deploykit.targets import load_target

model, reference = sys.argv[1:3]
short = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.02, min_iters=2, max_repeats=1)
cpu, backend, seen = load_target("cpu-ort"), ort_backend.OnnxRuntimeBackend(), {}
for threads in (2, 2, 1):
    target = replace(cpu, threads=threads, spinning=True, auto_settings=())
    try:
        paired = backend.profile_paired(model, reference, target=target, protocol=short,
                                        input_shape=(1, 3, 16, 16))
        seen.setdefault("pools", []).append([list(ort_backend._global_pool_threads), paired.ratio > 0])
    except RuntimeUnavailableError as error:
        seen["refused"] = str(error)
print(json.dumps(seen))
"""


def test_onnxruntime_pairs_spinning_sessions_on_one_shared_pool(two_files):
    """Two spinning per-session pools in one process fight over the cores (docs/latency.md): where
    threads may spin, both sessions run on the process's global pool, sized once; in a fresh process,
    as the worker gives each paired measurement."""
    done = subprocess.run([sys.executable, "-c", SHARED_POOL_SCRIPT, *map(str, two_files)],
                          capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["pools"] == [[[2], True], [[2], True]]
    assert "global thread pool in this process has 2 threads, not 1" in seen["refused"]


def test_onnxruntime_pairs_sleeping_threads_on_a_pool_per_session(two_files, monkeypatch):
    shared = []
    monkeypatch.setattr(ort_backend, "share_global_pool", shared.append)
    target = replace(load_target("cpu-ort"), threads=2, spinning=False, auto_settings=())
    paired = ort_backend.OnnxRuntimeBackend().profile_paired(*two_files, target=target, protocol=SHORT,
                                                             input_shape=(1, 3, 16, 16))
    assert paired.ratio > 0 and shared == []
