"""End-to-end latency for verify: the model and its reference, interleaved, each in a fresh process —
or, paired, both in one fresh process per round (:mod:`deploykit.paired`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError
from deploykit.measure.rounds import measure_paired_rounds, pooled
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
    return {"model": pooled(runs["model"]), "reference": pooled(runs["reference"]), "rounds": rounds,
            "round_speedups": ratios, "speedup": statistics.median(ratios) if ratios else None}
