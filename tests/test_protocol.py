"""The measurement protocol's rules and statistics, timed with a scripted clock."""

from __future__ import annotations

import argparse
import math
import statistics

import pytest

from deploykit.cli.args import add_protocol_arguments, protocol_from_args
from deploykit.errors import ConfigError, TableError
from deploykit.protocol import (
    Measurement,
    Protocol,
    measure,
    median_ci,
    median_ci_ranks,
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
    values = dict(warmup_s=0.0, warmup_iters=3, min_time_s=0.0, min_iters=5, max_ci=0.02, max_repeats=1)
    values.update(overrides)
    return Protocol(**values)


def test_statistics_are_exact_and_warmup_excluded():
    warmup = [9.0, 9.0, 9.0]  # huge: would dominate every statistic if it were sampled
    timed = [0.001, 0.002, 0.003, 0.004, 0.010]
    clock = ScriptedClock(warmup + timed)
    m = measure(clock.run_once, quick(), clock=clock)
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
    # five samples are too few for a 95 % interval of the median: none, and never steady
    assert math.isnan(m.ci_low_ms) and math.isnan(m.ci_high_ms) and math.isnan(m.ci_half_width)
    assert m.steady_within == math.inf


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


# --- the confidence interval of the median and when sampling stops ---------------------------------

def test_median_ci_ranks_are_the_binomial_order_statistics():
    assert median_ci_ranks(5) is None  # 2 · 0.5^5 = 6.25 % > 5 %: no interval at 95 %
    assert median_ci_ranks(6) == (1, 6)  # coverage 1 − 2 · 0.5^6 = 96.9 %
    assert median_ci_ranks(10) == (2, 9)
    assert median_ci_ranks(20) == (6, 15)  # P(B ≤ 5) = 21700 / 2^20 = 2.07 % ≤ 2.5 % < P(B ≤ 6) = 5.77 %
    assert median_ci_ranks(100) == (40, 61)
    assert median_ci_ranks(20, confidence=0.99) == (4, 17)
    assert median_ci_ranks(20, confidence=0.5) == (8, 13)  # P(B ≤ 7) = 13.2 % ≤ 25 % < P(B ≤ 8) = 25.2 %
    samples = [float(v) for v in (20, 3, 7, 1, 15, 9, 12, 5, 18, 2, 11, 6, 17, 4, 13, 8, 19, 10, 16, 14)]
    assert median_ci(samples) == (6.0, 15.0)
    m = Measurement.from_samples(samples)
    assert (m.median_ms, m.ci_low_ms, m.ci_high_ms) == (10.5, 6.0, 15.0)
    assert m.ci_half_width == pytest.approx(4.5 / 10.5)


def test_one_preempted_sample_does_not_make_a_steady_figure_unsteady():
    # 19 runs of 1 ms and one of 50 ms: cv 2.2 (a cv rule would sample again), the median's interval
    # [x(6), x(15)] = [1, 1] has half-width 0: steady after one round
    clock = ScriptedClock([0.001] * 3 + [0.001] * 9 + [0.050] + [0.001] * 10 + [1.0] * 20)
    m = measure(clock.run_once, quick(min_iters=20, max_repeats=5), clock=clock)
    assert clock.runs == 23 and m.repeats == 1 and m.n == 20
    assert m.median_ms == pytest.approx(1.0) and m.cv > 2.0
    assert m.ci_low_ms == pytest.approx(1.0) and m.ci_high_ms == pytest.approx(1.0) and m.ci_half_width == 0.0


def test_a_wide_interval_samples_another_round_and_keeps_every_sample():
    # round 1: five runs of 1 ms, five of 2 ms → ranks (2, 9) of 10 → [1, 2], half-width 1/2/1.5 = 33 %;
    # round 2: ten runs of 1 ms → 20 samples, ranks (6, 15) → [1, 1]: steady
    first = [0.001] * 5 + [0.002] * 5
    clock = ScriptedClock([0.001] * 3 + first + [0.001] * 10 + [1.0] * 10)
    m = measure(clock.run_once, quick(min_iters=10, max_repeats=5), clock=clock)
    assert clock.runs == 23 and m.repeats == 2 and m.n == 20
    assert m.samples_ms == pytest.approx(tuple([1.0] * 5 + [2.0] * 5 + [1.0] * 10))
    assert m.median_ms == pytest.approx(1.0) and m.ci_half_width == 0.0


def test_sampling_stops_at_max_repeats_with_the_interval_still_wide():
    noisy = [0.001, 0.002] * 5  # every round: half 1 ms, half 2 ms
    clock = ScriptedClock(noisy * 3 + [1.0] * 10)
    m = measure(clock.run_once, quick(warmup_iters=0, min_iters=10, max_repeats=3), clock=clock)
    assert clock.runs == 30 and m.repeats == 3 and m.n == 30  # three rounds of ten, nothing more
    ranks = median_ci_ranks(30)
    assert ranks == (10, 21)
    assert (m.ci_low_ms, m.ci_high_ms) == pytest.approx((1.0, 2.0))
    assert m.ci_half_width == pytest.approx(0.5 / 1.5) and m.ci_half_width > 0.02


def test_sampling_stops_once_max_time_is_spent():
    # each round: 10 runs, 0.15 s; after rounds 1 and 2 (0.15, 0.30 s) under 0.4 s, after round 3 not
    noisy = [0.010, 0.020] * 5
    clock = ScriptedClock(noisy * 4 + [1.0] * 10)
    m = measure(clock.run_once, quick(warmup_iters=0, min_iters=10, max_repeats=10, max_time_s=0.4),
                clock=clock)
    assert clock.runs == 30 and m.repeats == 3


def test_percentile_matches_numpy_linear():
    np = pytest.importorskip("numpy")
    values = [5.0, 1.0, 3.0, 9.0, 7.0, 2.0]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_measurement_round_trips_through_a_dict():
    m = Measurement.from_samples([1.0, 2.0, 4.0, 3.0, 5.0, 6.0, 7.0], repeats=2)
    again = Measurement.from_dict(m.as_dict())
    assert again == m and again.ci_low_ms == 1.0 and again.ci_high_ms == 7.0
    with pytest.raises(TableError, match="median_ms"):
        Measurement.from_dict({k: v for k, v in m.as_dict().items() if k != "median_ms"})
    # a record from before the interval (cv-based protocol) still reads; JSON null stands for nan
    old = {k: v for k, v in m.as_dict().items() if not k.startswith("ci_")} | {"attempt_cvs": [0.5]}
    assert math.isnan(Measurement.from_dict(old).ci_low_ms)
    assert math.isnan(Measurement.from_dict(m.as_dict() | {"ci_half_width": None}).ci_half_width)


def test_protocol_defaults_and_validation():
    p = Protocol()
    assert (p.warmup_s, p.warmup_iters, p.min_time_s, p.min_iters, p.max_ci, p.confidence, p.max_repeats,
            p.max_time_s, p.threads) == (0.2, 10, 1.0, 20, 0.02, 0.95, 5, 10.0, None)
    assert Protocol.from_dict(p.as_dict()) == p
    for bad in (dict(min_iters=0), dict(max_ci=0.0), dict(max_repeats=0), dict(threads=0),
                dict(warmup_s=-1.0), dict(min_time_s=float("nan")), dict(min_iters=2.5),
                dict(threads=True), dict(confidence=1.0), dict(max_time_s=-1.0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Protocol(**bad)
    with pytest.raises(ConfigError, match="bogus"):
        Protocol.from_dict({"bogus": 1})
    # the protocol of a table measured before the interval rule: its max_cv is dropped
    assert Protocol.from_dict({"min_iters": 7, "max_cv": 0.1, "max_repeats": 3}) == Protocol(min_iters=7,
                                                                                             max_repeats=3)
    assert Protocol(threads=4).resolve_threads(8) == 4
    assert Protocol().resolve_threads(8) == 8


def test_cli_arguments_set_every_field():
    parser = argparse.ArgumentParser()
    add_protocol_arguments(parser)
    assert protocol_from_args(parser.parse_args([])) == Protocol()
    args = parser.parse_args(["--warmup-time", "0.5", "--warmup-iters", "2", "--min-time", "3",
                              "--min-iters", "7", "--max-ci", "0.05", "--max-repeats", "4",
                              "--max-time", "6", "--threads", "2"])
    assert protocol_from_args(args) == Protocol(warmup_s=0.5, warmup_iters=2, min_time_s=3.0, min_iters=7,
                                                max_ci=0.05, max_repeats=4, max_time_s=6.0, threads=2)
    with pytest.raises(ConfigError, match="min_iters"):
        protocol_from_args(parser.parse_args(["--min-iters", "0"]))
    text = parser.format_help()
    assert "--max-cv" not in text and "confidence interval of the median" in text


def test_median_ci_ranks_for_many_samples_equal_the_exact_binomial_sums(monkeypatch):
    """Beyond EXACT_CI_SAMPLES the ranks come from floating-point sums: the same ranks as exact ones."""
    import math

    from deploykit import protocol

    def exact(n: int) -> tuple[int, int]:
        lower, cumulative = 0, 0
        for k in range(n + 1):
            cumulative += math.comb(n, k)
            if cumulative / 2 ** n > 0.025:
                break
            lower = k + 1
        return lower, n - lower + 1

    monkeypatch.setattr(protocol, "EXACT_CI_SAMPLES", 0)  # the floating-point path for every n
    for n in (6, 20, 101, 1001, 2048, 4999):
        assert median_ci_ranks(n) == exact(n), n
    assert median_ci_ranks(28568) == (14118, 14451)  # a 15-µs block's one second of samples
