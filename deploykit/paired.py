"""Paired measurement: a model timed as a ratio to a reference run in the same process, in short slices.

Two models timed in separate fresh processes differ by whatever state each process lands in (which
cores, which thread-pool wake-up pattern, what the host does at that moment); measured on this
project's 2-core machines that state moves a figure by several per cent, sometimes bimodally. Timed in
the *same* process, alternating short slices (``slice_s``, about 20 ms: long enough that each slice
runs from warm caches, short enough that the machine's state is the same for both), the two share that
state, and their ratio is far steadier than either figure.

:func:`measure_paired` times the slices (order A B B A …, so neither model always goes first) and keeps
one ratio per pair: the model's slice median over the reference's. Sampling follows the
:class:`~deploykit.protocol.Protocol`: warm-up for each model, rounds of at least ``min_time_s`` (both
models together: a paired measurement costs about what one model alone does) and ``min_iters`` runs per
model, stopping when the confidence interval of the median *ratio* is within ``max_ci`` (or at
``max_repeats`` / ``max_time_s``).

Milliseconds come from the ratio and the reference measured over many processes
(:func:`anchored_ms`): ``ms = ratio × median(reference medians over processes)``. Every paired process
also measures the reference, so that anchor costs nothing extra.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deploykit.errors import TableError
from deploykit.protocol import Measurement, Protocol, median_ci, warm_up

SLICE_S = 0.02
MIN_PAIRS = 8  # fewer pairs give no confidence interval of the median ratio at 95 %


@dataclass(frozen=True)
class PairedMeasurement:
    """A model and its reference timed in one process; ``ratios`` one per slice pair (model / reference)."""

    model: Measurement
    reference: Measurement
    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        """The median of the per-pair ratios: the model's latency relative to the reference's."""
        return statistics.median(self.ratios)

    @property
    def ratio_ci(self) -> float:
        """The relative half-width of the median ratio's 95 % interval (inf with too few pairs)."""
        low, high = median_ci(self.ratios)
        half = (high - low) / 2.0 / self.ratio
        return float("inf") if half != half else half

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model.as_dict(), "reference": self.reference.as_dict(),
                "ratios": list(self.ratios)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairedMeasurement:
        try:
            ratios = tuple(float(r) for r in data["ratios"])
            model, reference = Measurement.from_dict(data["model"]), Measurement.from_dict(data["reference"])
        except (KeyError, TypeError, ValueError) as error:
            raise TableError(f"malformed paired measurement record: {error!r}") from None
        if not ratios or not all(r > 0 for r in ratios):
            raise TableError("malformed paired measurement record: ratios must be positive numbers")
        return cls(model=model, reference=reference, ratios=ratios)


def measure_paired(run_model: Callable[[], None], run_reference: Callable[[], None], protocol: Protocol, *,
                   slice_s: float = SLICE_S,
                   clock: Callable[[], float] = time.perf_counter) -> PairedMeasurement:
    """Time both callables alternately in slices of ``slice_s`` under ``protocol`` (module docstring)."""
    warm_up(run_model, protocol, clock)
    warm_up(run_reference, protocol, clock)
    model: list[float] = []
    reference: list[float] = []
    ratios: list[float] = []
    spent, rounds = 0.0, 0
    while True:
        started = clock()
        _sample_round(run_model, run_reference, protocol, slice_s, clock, model, reference, ratios)
        spent += clock() - started
        rounds += 1
        low, high = median_ci(ratios, protocol.confidence)
        half_width = (high - low) / 2.0
        steady = len(ratios) >= MIN_PAIRS and half_width <= protocol.max_ci * statistics.median(ratios)
        if steady or rounds >= protocol.max_repeats or spent >= protocol.max_time_s:
            return PairedMeasurement(
                model=Measurement.from_samples(model, repeats=rounds, confidence=protocol.confidence),
                reference=Measurement.from_samples(reference, repeats=rounds, confidence=protocol.confidence),
                ratios=tuple(ratios))


def _sample_round(run_model: Callable[[], None], run_reference: Callable[[], None], protocol: Protocol,
                  slice_s: float, clock: Callable[[], float], model: list[float], reference: list[float],
                  ratios: list[float]) -> None:
    """Slice pairs until each model has ``min_iters`` runs, both together ``min_time_s`` of them, and at
    least :data:`MIN_PAIRS` pairs were taken this round."""
    runs, seconds, pairs = [0, 0], [0.0, 0.0], 0
    while pairs < MIN_PAIRS or min(runs) < protocol.min_iters or sum(seconds) < protocol.min_time_s:
        order = ((0, run_model), (1, run_reference))
        if pairs % 2:  # A B, then B A: neither model always runs first
            order = order[::-1]
        medians = [0.0, 0.0]
        for which, run in order:
            samples = _slice(run, slice_s, clock)
            (model if which == 0 else reference).extend(samples)
            runs[which] += len(samples)
            seconds[which] += sum(samples) / 1000.0
            medians[which] = statistics.median(samples)
        ratios.append(medians[0] / medians[1])
        pairs += 1


def _slice(run: Callable[[], None], slice_s: float, clock: Callable[[], float]) -> list[float]:
    """Run until ``slice_s`` has passed (at least once); each run's milliseconds."""
    samples: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        run()
        t1 = clock()
        samples.append((t1 - t0) * 1000.0)
        if t1 - start >= slice_s:
            return samples


def anchored_ms(ratios: Sequence[float], reference_medians_ms: Sequence[float]) -> tuple[float, list[float]]:
    """The reference's median over processes (the anchor) and each ratio × that anchor, in ms."""
    if not reference_medians_ms:
        raise ValueError("anchoring paired ratios needs at least one reference measurement")
    anchor = statistics.median(reference_medians_ms)
    return anchor, [r * anchor for r in ratios]
