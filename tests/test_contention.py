"""The contention guard against a scripted clock and process list: exact waits, readings and flags."""

import os

import pytest

from deploykit.errors import ConfigError
from deploykit.measure.contention import ContentionGuard, GuardPolicy, policy_from_env
from deploykit.protocol import Measurement

TICKS = os.sysconf("SC_CLK_TCK")
ME, CHILD, OTHER = 100, 101, 200


class Machine:
    """A scripted /proc: this process (and its measuring child) plus one other process whose CPU use
    per second of the scripted clock is set by the test."""

    def __init__(self, busy: list[float]):
        self.now = 0.0
        self.busy = list(busy)  # cores the other process uses in each successive look or measurement
        self.other_ticks = 0.0

    def clock(self) -> float:
        return self.now

    def snapshot(self):
        return {ME: ("deploykit", 1, 0), CHILD: ("python", ME, 0),
                OTHER: ("stress", 1, round(self.other_ticks))}

    def elapse(self, seconds: float) -> None:
        rate = self.busy.pop(0) if len(self.busy) > 1 else self.busy[0]
        self.other_ticks += rate * seconds * TICKS
        self.now += seconds


def _guard(machine: Machine, said: list[str], **policy) -> ContentionGuard:
    return ContentionGuard(GuardPolicy(**policy), say=said.append, snapshot=machine.snapshot,
                           clock=machine.clock, sleep=machine.elapse, usable_cores=2, root=ME)


def _run(machine: Machine, seconds: float = 2.0):
    def run():
        machine.elapse(seconds)
        return Measurement.from_samples([1.0, 1.0, 1.0])
    return run


def test_quiet_machine_measures_at_once_unflagged():
    machine, said = Machine([0.0]), []
    guard = _guard(machine, said, wait_quiet_s=30.0, window_s=0.5)
    result = guard.measure(_run(machine), threads=2, what="m.onnx")
    assert not result.contended and result.others_cpu == 0.0
    assert machine.now == pytest.approx(2.5)  # one look of 0.5 s, then the 2-s measurement
    again = guard.measure(_run(machine), threads=2, what="m.onnx")
    assert not again.contended and machine.now == pytest.approx(4.5)  # the last reading is fresh: no look
    assert said == []


def test_waits_until_the_machine_is_quiet():
    # busy for three looks (1 core each), then quiet for the fourth look and the measurement
    machine, said = Machine([1.0, 1.0, 1.0, 0.0, 0.0]), []
    guard = _guard(machine, said, wait_quiet_s=30.0, window_s=0.5)
    result = guard.measure(_run(machine), threads=2, what="m.onnx")
    assert machine.now == pytest.approx(4 * 0.5 + 2.0)
    assert not result.contended and result.others_cpu == 0.0 and said == []


def test_a_machine_that_stays_busy_is_measured_after_the_wait_and_flagged_once():
    machine, said = Machine([1.0]), []
    guard = _guard(machine, said, wait_quiet_s=1.0, window_s=0.5)
    first = guard.measure(_run(machine), threads=2, what="m.onnx")
    assert machine.now == pytest.approx(2 * 0.5 + 2.0)  # looks until 1.0 s (the wait is spent), measure
    assert first.contended and first.others_cpu == pytest.approx(1.0)
    second = guard.measure(_run(machine), threads=2, what="m.onnx")
    assert second.contended
    assert len(said) == 1 and "stress (pid 200, 100% of a core)" in said[0] and "flagged" in said[0]


def test_one_thread_leaves_a_core_to_the_others():
    machine, said = Machine([1.0]), []
    guard = _guard(machine, said, wait_quiet_s=30.0, window_s=0.5)
    assert guard.allowance(1) == pytest.approx(1.25) and guard.allowance(2) == pytest.approx(0.25)
    result = guard.measure(_run(machine), threads=1, what="m.onnx")
    assert not result.contended and result.others_cpu == pytest.approx(1.0)
    assert machine.now == pytest.approx(2.5)


def test_contention_during_the_measurement_flags_it():
    machine, said = Machine([0.0, 0.5]), []  # quiet look, then half a core busy while measuring
    guard = _guard(machine, said, wait_quiet_s=30.0, window_s=0.5)
    result = guard.measure(_run(machine), threads=2, what="m.onnx")
    assert result.contended and result.others_cpu == pytest.approx(0.5)


def test_no_wait_only_flags():
    machine, said = Machine([1.0]), []
    guard = _guard(machine, said, wait_quiet_s=0.0, window_s=0.5)
    result = guard.measure(_run(machine), threads=2, what="m.onnx")
    assert machine.now == pytest.approx(2.0) and result.contended


def test_the_policy_from_the_environment(monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_WAIT_QUIET", "7")
    assert policy_from_env().wait_quiet_s == 7.0
    monkeypatch.setenv("DEPLOYKIT_WAIT_QUIET", "soon")
    with pytest.raises(ConfigError, match="DEPLOYKIT_WAIT_QUIET"):
        policy_from_env()
    with pytest.raises(ConfigError, match="wait_quiet"):
        GuardPolicy(wait_quiet_s=-1)


def test_a_flag_survives_the_measurement_record():
    flagged = Measurement.from_samples([1.0, 2.0])
    from dataclasses import replace

    flagged = replace(flagged, others_cpu=0.8, contended=True)
    again = Measurement.from_dict(flagged.as_dict())
    assert again.contended and again.others_cpu == 0.8
