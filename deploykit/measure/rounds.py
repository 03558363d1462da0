"""Rounds of fresh-process measurements of one model and its reference, pooled: the model as a ratio to
the reference in one fresh process per round (:func:`measure_paired_rounds`), and one model's rounds as
one figure (:func:`pooled`). ``verify`` times an export against its reference with them, ``lut anchor``
the all-merged model against the unpruned one."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploykit.progress import Progress


def measure_paired_rounds(model_path: Path, reference_path: Path, *, target, protocol,
                          input_shape: Sequence[int], rounds: int, host,
                          progress: Progress | None = None) -> dict[str, Any]:
    """The model as a ratio to the reference in one fresh process per round. The reference's figures are
    its own; the model's milliseconds are each round's ratio × the reference's median over the rounds
    (``paired``, ``round_ratios`` record how), its speed-up per round 1 / ratio."""
    pairs = []
    for index in range(rounds):
        pair = host.measure_paired(model_path, reference_path, target=target, protocol=protocol,
                                   input_shape=input_shape)
        pairs.append(pair)
        if progress:
            progress(f"round {index + 1}/{rounds}: model {model_path.name}: {pair.ratio:.4f} × reference "
                     f"{reference_path.name} in one process ({pair.model.median_ms:.3f} / "
                     f"{pair.reference.median_ms:.3f} ms)")
    reference = pooled([pair.reference for pair in pairs])
    anchor = reference["median_ms"]
    ratios = [pair.ratio for pair in pairs]
    model = {**pooled([pair.model for pair in pairs]), "median_ms": statistics.median(ratios) * anchor,
             "round_medians_ms": [r * anchor for r in ratios]}
    speedups = [1.0 / r for r in ratios]
    return {"model": model, "reference": reference, "rounds": rounds, "paired": True, "round_ratios": ratios,
            "round_speedups": speedups, "speedup": statistics.median(speedups)}


def pooled(measurements: list) -> dict[str, Any] | None:
    """One model's rounds: the median of the round medians, and the pooled samples' other figures."""
    from deploykit.protocol import Measurement

    if not measurements:
        return None
    both = Measurement.from_samples([s for m in measurements for s in m.samples_ms])
    return {"median_ms": statistics.median([m.median_ms for m in measurements]),
            "p90_ms": both.p90_ms, "mean_ms": both.mean_ms,
            "cv": both.cv, "n": both.n, "round_medians_ms": [m.median_ms for m in measurements],
            "compile_s": [m.compile_s for m in measurements]}
