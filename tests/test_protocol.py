"""The measurement protocol's rules and statistics, timed with a scripted clock."""

from __future__ import annotations

import argparse
import statistics

import pytest

from deploykit.errors import ConfigError, TableError
from deploykit.latency.protocol import (
    Measurement,
    Protocol,
    add_protocol_arguments,
    measure,
    percentile,
)


class ScriptedClock:
    """A clock that only moves when ``run_once`` runs, by the next scripted duration (seconds)."""

    def __init__(self, durations):
        self.now = 100.0
        self.durations = list(durations)
        self.runs = 0

    def __call__(self) -> float:
        return self.now

    def run_once(self) -> None:
        self.now += self.durations[self.runs]
        self.runs += 1


def quick(**overrides) -> Protocol:
    values = dict(warmup_s=0.0, warmup_iters=3, min_time_s=0.0, min_iters=5, max_cv=0.5, max_repeats=3)
    values.update(overrides)
    return Protocol(**values)


def test_statistics_are_exact_and_warmup_excluded():
    warmup = [9.0, 9.0, 9.0]  # huge: would dominate every statistic if it were sampled
    timed = [0.001, 0.002, 0.003, 0.004, 0.010]
    clock = ScriptedClock(warmup + timed)
    m = measure(clock.run_once, quick(max_cv=5.0), clock=clock)
    assert clock.runs == 8
    assert m.n == 5
    assert m.samples_ms == pytest.approx((1.0, 2.0, 3.0, 4.0, 10.0))
    assert m.median_ms == pytest.approx(3.0)
    assert m.p90_ms == pytest.approx(7.6)  # rank 0.9 * 4 = 3.6 → 4 + 0.6 * (10 - 4)
    assert m.mean_ms == pytest.approx(4.0)
    assert m.std_ms == pytest.approx(statistics.stdev([1, 2, 3, 4, 10]))
    assert m.std_ms == pytest.approx(12.5 ** 0.5)
    assert m.cv == pytest.approx(12.5 ** 0.5 / 4.0)
    assert m.repeats == 1
    assert m.compile_s == 0.0 and m.first_run_ms == 0.0


def test_warmup_needs_both_time_and_count():
    # 0.1 s per run: warm-up of 0.25 s needs 3 runs although 1 is asked
    clock = ScriptedClock([0.1] * 3 + [0.001] * 5)
    m = measure(clock.run_once, quick(warmup_s=0.25, warmup_iters=1), clock=clock)
    assert clock.runs == 8 and m.n == 5
    assert m.median_ms == pytest.approx(1.0)
    # count dominates: 4 warm-up runs of 1 µs each though 0 s is asked
    clock = ScriptedClock([1e-6] * 4 + [0.001] * 5)
    m = measure(clock.run_once, quick(warmup_s=0.0, warmup_iters=4), clock=clock)
    assert clock.runs == 9 and m.median_ms == pytest.approx(1.0)


def test_sampling_needs_both_time_and_count():
    # min_time 0.05 s at 10 ms a run → 5 samples would do, but min_iters asks 8
    clock = ScriptedClock([0.010] * 8)
    m = measure(clock.run_once, quick(warmup_iters=0, min_iters=8, min_time_s=0.05), clock=clock)
    assert m.n == 8
    # min_iters 2 at 10 ms a run, but min_time 0.055 s needs 6 runs
    clock = ScriptedClock([0.010] * 6)
    m = measure(clock.run_once, quick(warmup_iters=0, min_iters=2, min_time_s=0.055), clock=clock)
    assert m.n == 6


def test_high_cv_triggers_remeasure_and_the_steadiest_attempt_is_kept():
    noisy = [0.001, 0.001, 0.001, 0.001, 0.020]
    steady = [0.002, 0.002, 0.002, 0.002, 0.002]
    clock = ScriptedClock([0.001] * 3 + noisy + steady)
    m = measure(clock.run_once, quick(max_cv=0.1), clock=clock)
    assert m.repeats == 2
    assert m.attempt_cvs[0] > 0.1 and m.attempt_cvs[1] == 0.0
    assert m.samples_ms == pytest.approx((2.0,) * 5)
    assert m.median_ms == pytest.approx(2.0) and m.cv == 0.0


def test_remeasure_stops_at_max_repeats_and_keeps_the_lowest_cv():
    a = [0.001, 0.001, 0.001, 0.001, 0.020]  # cv ≈ 1.6
    b = [0.001, 0.001, 0.001, 0.002, 0.004]  # cv ≈ 0.7
    c = [0.001, 0.001, 0.001, 0.001, 0.030]  # cv ≈ 1.8
    clock = ScriptedClock(a + b + c + [1.0] * 10)
    m = measure(clock.run_once, quick(warmup_iters=0, max_cv=0.1, max_repeats=3), clock=clock)
    assert clock.runs == 15  # three attempts of five, nothing more
    assert m.repeats == 3 and len(m.attempt_cvs) == 3
    assert m.samples_ms == pytest.approx((1.0, 1.0, 1.0, 2.0, 4.0))
    assert m.cv == min(m.attempt_cvs) and m.cv > 0.1


def test_percentile_matches_numpy_linear():
    np = pytest.importorskip("numpy")
    values = [5.0, 1.0, 3.0, 9.0, 7.0, 2.0]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_measurement_round_trips_through_a_dict():
    m = Measurement.from_samples([1.0, 2.0, 4.0], repeats=2, attempt_cvs=(0.9, 0.6))
    again = Measurement.from_dict(m.as_dict())
    assert again == m
    with pytest.raises(TableError, match="median_ms"):
        Measurement.from_dict({k: v for k, v in m.as_dict().items() if k != "median_ms"})


def test_protocol_defaults_and_validation():
    p = Protocol()
    assert (p.warmup_s, p.warmup_iters, p.min_time_s, p.min_iters, p.max_cv, p.max_repeats, p.threads) == \
        (0.2, 10, 1.0, 20, 0.10, 3, None)
    assert Protocol.from_dict(p.as_dict()) == p
    for bad in (dict(min_iters=0), dict(max_cv=0.0), dict(max_repeats=0), dict(threads=0),
                dict(warmup_s=-1.0), dict(min_time_s=float("nan")), dict(min_iters=2.5),
                dict(threads=True)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Protocol(**bad)
    with pytest.raises(ConfigError, match="bogus"):
        Protocol.from_dict({"bogus": 1})
    assert Protocol(threads=4).resolve_threads(8) == 4
    assert Protocol().resolve_threads(8) == 8


def test_cli_arguments_set_every_field():
    parser = argparse.ArgumentParser()
    add_protocol_arguments(parser)
    assert Protocol.from_args(parser.parse_args([])) == Protocol()
    args = parser.parse_args(["--warmup-time", "0.5", "--warmup-iters", "2", "--min-time", "3",
                              "--min-iters", "7", "--max-cv", "0.05", "--max-repeats", "5",
                              "--threads", "2"])
    assert Protocol.from_args(args) == Protocol(warmup_s=0.5, warmup_iters=2, min_time_s=3.0, min_iters=7,
                                                max_cv=0.05, max_repeats=5, threads=2)
    with pytest.raises(ConfigError, match="min_iters"):
        Protocol.from_args(parser.parse_args(["--min-iters", "0"]))
