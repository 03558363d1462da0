"""One interleaved measurement of several models: the figures a results table compares.

Milliseconds measured minutes apart, each in their own verify stage, do not compare on a shared
machine: the demo's table once showed the original at 0.334 ms and a pruned model at 0.499 ms while
its speed-up column said 1.18× faster. So the figures a table puts side by side come from one
measurement: every model is timed once per round, round-robin (each in a fresh process), for
``rounds`` rounds. A model's milliseconds are the median of its round medians, with their range; its
speed-up is the median over rounds of reference / model *within the round*, with its range — a burst
of load that slows one round cancels out of the ratio. :class:`RoundRobin` is written beside the
run (``latency-TARGET.json``) and read by the results table.

Where the measurement is *paired* (:func:`measure_paired_round_robin`; by default on this machine's CPU,
as for a profile's end-to-end points), each round times every other model as a ratio to the reference
in one fresh process (:mod:`deploykit.paired`), and its milliseconds are that ratio × the reference's
median over the rounds. Round-robin alone was not enough on a sub-millisecond model with two spinning
threads: a fresh process lands fast or slow (0.42 or 0.65 ms), and one run's table showed the baseline
at 0.422 ms and the same architecture, continued, at 0.644 ms. A ratio within one process does not
carry that state, and the milliseconds and speed-ups then agree by construction.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError
from deploykit.fileio import read_json, write_json_atomic
from deploykit.progress import Progress

FILE_PATTERN = "latency-{target}.json"


@dataclass(frozen=True)
class ModelRounds:
    """One model's round medians (ms) and, where a reference was measured with it, the per-round
    speed-ups (reference / model)."""

    round_medians_ms: tuple[float, ...]
    round_speedups: tuple[float, ...] = ()
    contended_rounds: int = 0
    round_ratios: tuple[float, ...] = ()  # paired: model / reference in one process, one per round

    @property
    def median_ms(self) -> float:
        return statistics.median(self.round_medians_ms)

    @property
    def range_ms(self) -> tuple[float, float]:
        return min(self.round_medians_ms), max(self.round_medians_ms)

    @property
    def speedup(self) -> float | None:
        return statistics.median(self.round_speedups) if self.round_speedups else None

    @property
    def speedup_range(self) -> tuple[float, float] | None:
        return (min(self.round_speedups), max(self.round_speedups)) if self.round_speedups else None

    def as_dict(self) -> dict[str, Any]:
        return {"round_medians_ms": list(self.round_medians_ms), "median_ms": self.median_ms,
                "range_ms": list(self.range_ms), "round_speedups": list(self.round_speedups),
                "speedup": self.speedup, "speedup_range": list(self.speedup_range or []) or None,
                "contended_rounds": self.contended_rounds, "round_ratios": list(self.round_ratios)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRounds:
        return cls(round_medians_ms=tuple(float(x) for x in data["round_medians_ms"]),
                   round_speedups=tuple(float(x) for x in data.get("round_speedups") or ()),
                   contended_rounds=int(data.get("contended_rounds", 0)),
                   round_ratios=tuple(float(x) for x in data.get("round_ratios") or ()))


@dataclass(frozen=True)
class RoundRobin:
    """The measurement of several models on one target, by name (a variant directory's name)."""

    target: str
    settings: Mapping[str, Any]
    rounds: int
    reference: str | None
    models: Mapping[str, ModelRounds] = field(default_factory=dict)
    paired: bool = False  # every other model timed as a ratio to the reference in one process
    same_file_as: Mapping[str, str] = field(default_factory=dict)  # model → the model whose figures it shares

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "settings": dict(self.settings), "rounds": self.rounds,
                "reference": self.reference, "paired": self.paired,
                "models": {k: v.as_dict() for k, v in self.models.items()},
                **({"same_file_as": dict(self.same_file_as)} if self.same_file_as else {})}

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> RoundRobin:
        try:
            return cls(target=str(data["target"]), settings=dict(data.get("settings") or {}),
                       rounds=int(data["rounds"]), reference=data.get("reference"),
                       models={str(k): ModelRounds.from_dict(v) for k, v in data["models"].items()},
                       paired=bool(data.get("paired", False)),
                       same_file_as={str(k): str(v) for k, v in (data.get("same_file_as") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"{source} is not a deploykit round-robin measurement ({error!r})") from None

    def write(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.as_dict())

    @classmethod
    def read(cls, path: str | Path) -> RoundRobin:
        return cls.from_dict(read_json(path, what="round-robin latency file"), source=str(path))


def measure_round_robin(files: Mapping[str, Path], *, reference: str | None, rounds: int,
                        time_file: Callable[[Path], Any], target: str, settings: Mapping[str, Any],
                        progress: Progress | None = None) -> RoundRobin:
    """Time every file in ``files`` once per round, in order, for ``rounds`` rounds (``time_file``: one
    fresh-process measurement, a :class:`deploykit.protocol.Measurement`). Speed-ups are against
    ``reference`` (a key of ``files``), within each round."""
    if rounds < 1:
        raise ConfigError(f"--rounds must be ≥ 1, got {rounds}")
    if reference is not None and reference not in files:
        raise ConfigError(f"the reference {reference!r} is not among the models measured")
    medians: dict[str, list[float]] = {name: [] for name in files}
    contended: dict[str, int] = dict.fromkeys(files, 0)
    for index in range(rounds):
        for name, path in files.items():
            result = time_file(path)
            medians[name].append(result.median_ms)
            contended[name] += bool(getattr(result, "contended", False))
            if progress:
                progress(f"round {index + 1}/{rounds}: {name}: {result.median_ms:.3f} ms")
    models = {}
    for name in files:
        ratios = ((tuple(r / m for r, m in zip(medians[reference], medians[name]) if m > 0))
                  if reference is not None else ())
        models[name] = ModelRounds(tuple(medians[name]), ratios, contended[name])
    return RoundRobin(target=target, settings=dict(settings), rounds=rounds, reference=reference,
                      models=models)


def measure_paired_round_robin(files: Mapping[str, Path], *, reference: str, rounds: int,
                               time_pair: Callable[[Path, Path], Any], target: str,
                               settings: Mapping[str, Any], progress: Progress | None = None) -> RoundRobin:
    """Per round, every model in ``files`` but ``reference`` timed as a ratio to it in one fresh process
    (``time_pair(model, reference)``: a :class:`deploykit.paired.PairedMeasurement`), in order, for
    ``rounds`` rounds. The reference's round median is the median of its in-process medians that round;
    the anchor is the median of those over rounds, and every other model's round figure is its ratio ×
    the anchor (its speed-up: 1 / ratio)."""
    if rounds < 1:
        raise ConfigError(f"--rounds must be ≥ 1, got {rounds}")
    if reference not in files:
        raise ConfigError(f"the reference {reference!r} is not among the models measured")
    others = [name for name in files if name != reference]
    if not others:
        raise ConfigError(f"a paired measurement needs a model besides the reference {reference!r}")
    ratios: dict[str, list[float]] = {name: [] for name in others}
    contended: dict[str, int] = dict.fromkeys(files, 0)
    reference_rounds: list[float] = []
    for index in range(rounds):
        reference_ms, busy = [], False
        for name in others:
            paired = time_pair(files[name], files[reference])
            ratios[name].append(paired.ratio)
            reference_ms.append(paired.reference.median_ms)
            contended[name] += bool(getattr(paired.model, "contended", False))
            busy = busy or bool(getattr(paired.reference, "contended", False))
            if progress:
                progress(f"round {index + 1}/{rounds}: {name}: {paired.ratio:.4f} × {reference} in one "
                         f"process ({paired.model.median_ms:.3f} / {paired.reference.median_ms:.3f} ms)")
        reference_rounds.append(statistics.median(reference_ms))
        contended[reference] += busy
    anchor = statistics.median(reference_rounds)
    models = {}
    for name in files:
        if name == reference:
            models[name] = ModelRounds(tuple(reference_rounds), (1.0,) * rounds, contended[name])
        else:
            models[name] = ModelRounds(tuple(r * anchor for r in ratios[name]),
                                       tuple(1.0 / r for r in ratios[name]), contended[name],
                                       round_ratios=tuple(ratios[name]))
    return RoundRobin(target=target, settings=dict(settings), rounds=rounds, reference=reference,
                      models=models, paired=True)


def same_files(files: Mapping[str, Path], *, reference: str | None = None) -> dict[str, str]:
    """Each name → the first name in ``files`` (``reference`` before all) whose file has the same bytes,
    itself if none: two budgets that chose the same subnet share one trained, exported model."""
    from deploykit.verify.files import file_sha256

    first: dict[str, str] = {}
    order = sorted(files, key=lambda name: name != reference)
    same = {name: first.setdefault(file_sha256(files[name]), name) for name in order}
    return {name: same[name] for name in files}


def measure_models(files: Mapping[str, Path], *, reference: str | None, target, protocol, rounds: int,
                   table=None, host=None, paired: bool | None = None,
                   progress: Progress | None = None) -> RoundRobin:
    """:func:`measure_round_robin` of ``files`` on ``target`` where ``host`` measures (default: this
    machine), with the run settings verify would use for the reference (the table's, else the
    reference's ``MODEL.settings.json``, else the settings probe's choice); input shape from the
    reference (else the first file). ``paired`` (default: where a profile's end-to-end points would be,
    :func:`deploykit.latency.options.pairs_by_default`) measures with :func:`measure_paired_round_robin`
    instead, where there is a reference and another model. Files with the same bytes are measured once
    and share its figures (:func:`same_files`; the run's ``same_file_as``)."""
    from deploykit.latency.options import pairs_by_default
    from deploykit.measure.host import host_or_local
    from deploykit.verify.check import settled_target
    from deploykit.verify.files import onnx_input_shape

    if not files:
        raise ConfigError("no model to measure: no variant directory holds a model.onnx")
    same = same_files(files, reference=reference)
    if len(set(same.values())) < len(files):
        shared = {name: first for name, first in same.items() if first != name}
        if progress:
            progress("the same file, measured once for both: "
                     + ", ".join(f"{name} as {first}" for name, first in shared.items()))
        distinct = {name: path for name, path in files.items() if name not in shared}
        robin = measure_models(distinct, reference=reference, target=target, protocol=protocol,
                               rounds=rounds, table=table, host=host, paired=paired, progress=progress)
        return replace(robin, models={name: robin.models[same[name]] for name in files}, same_file_as=shared)
    host = host_or_local(host)
    first = files[reference] if reference is not None and reference in files else next(iter(files.values()))
    shape = onnx_input_shape(first, default_batch=target.batch, default_size=target.input_size)
    target, how = settled_target(target, first, shape, protocol=protocol, table=table, host=host,
                                 progress=progress)
    if paired is None:
        paired = pairs_by_default(target, local=host.url is None)
    if paired and reference is not None and len(files) > 1:
        if progress:
            progress(f"one interleaved measurement of {len(files)} models on {target.name}, {rounds} rounds, "
                     f"each paired with {reference} in one process ({target.settings.describe()}: {how})")
        return measure_paired_round_robin(
            files, reference=reference, rounds=rounds, target=target.name,
            settings=target.settings.as_dict(), progress=progress,
            time_pair=lambda path, ref: host.measure_paired(path, ref, target=target, protocol=protocol,
                                                            input_shape=shape))
    if progress:
        progress(f"one interleaved measurement of {len(files)} models on {target.name}, {rounds} rounds "
                 f"({target.settings.describe()}: {how})")
    return measure_round_robin(
        files, reference=reference, rounds=rounds, target=target.name, settings=target.settings.as_dict(),
        progress=progress,
        time_file=lambda path: host.measure(path, target=target, protocol=protocol, input_shape=shape))
