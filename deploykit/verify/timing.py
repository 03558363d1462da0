"""End-to-end latency for verify: the model and its reference, interleaved, each in a fresh process —
or, paired, both in one fresh process per round (:mod:`deploykit.paired`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError
from deploykit.progress import Progress

DEFAULT_ROUNDS = 3  # measurements per file, interleaved with the others; the median over rounds is kept


def measure_interleaved(model_path: Path, reference_path: Path | None, *, target, protocol,
                        input_shape: Sequence[int], rounds: int = DEFAULT_ROUNDS,
                        progress: Progress | None = None, host=None, paired: bool = False) -> dict[str, Any]:
    """Time the model (and the reference) ``rounds`` times each, alternating, each in a fresh process
    where ``host`` measures (default: this machine); ``paired`` (with a reference): both in one process
    per round instead (:func:`measure_paired_rounds`)."""
    from deploykit.measure.host import host_or_local
    from deploykit.protocol import Measurement

    host = host_or_local(host)
    if rounds < 1:
        raise ConfigError(f"--rounds must be ≥ 1, got {rounds}")
    if paired and reference_path is not None:
        return measure_paired_rounds(model_path, reference_path, target=target, protocol=protocol,
                                     input_shape=input_shape, rounds=rounds, progress=progress, host=host)
    runs: dict[str, list[Measurement]] = {"model": [], "reference": []}
    order = [("model", model_path)] + ([("reference", reference_path)] if reference_path else [])
    for index in range(rounds):
        for role, path in order:
            result = host.measure(path, target=target, protocol=protocol, input_shape=input_shape)
            runs[role].append(result)
            if progress:
                progress(f"round {index + 1}/{rounds}: {role} {path.name}: {result.median_ms:.3f} ms "
                         f"(cv {result.cv:.3f}, n {result.n})")

    ratios = [r.median_ms / m.median_ms for m, r in zip(runs["model"], runs["reference"]) if m.median_ms > 0]
    return {"model": _pooled(runs["model"]), "reference": _pooled(runs["reference"]), "rounds": rounds,
            "round_speedups": ratios, "speedup": statistics.median(ratios) if ratios else None}


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
    reference = _pooled([pair.reference for pair in pairs])
    anchor = reference["median_ms"]
    ratios = [pair.ratio for pair in pairs]
    model = {**_pooled([pair.model for pair in pairs]), "median_ms": statistics.median(ratios) * anchor,
             "round_medians_ms": [r * anchor for r in ratios]}
    speedups = [1.0 / r for r in ratios]
    return {"model": model, "reference": reference, "rounds": rounds, "paired": True, "round_ratios": ratios,
            "round_speedups": speedups, "speedup": statistics.median(speedups)}


def _pooled(measurements: list) -> dict[str, Any] | None:
    """One model's rounds: the median of the round medians, and the pooled samples' other figures."""
    from deploykit.protocol import Measurement

    if not measurements:
        return None
    both = Measurement.from_samples([s for m in measurements for s in m.samples_ms])
    return {"median_ms": statistics.median([m.median_ms for m in measurements]),
            "p90_ms": both.p90_ms, "mean_ms": both.mean_ms,
            "cv": both.cv, "n": both.n, "round_medians_ms": [m.median_ms for m in measurements],
            "compile_s": [m.compile_s for m in measurements]}
