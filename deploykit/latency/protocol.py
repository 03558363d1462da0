"""The measurement protocol: how one latency figure is taken, and the statistics it reports.

Every table entry and every end-to-end figure goes through :func:`measure`: warm up, sample, keep the
samples, report their median (the table's value) with p90, mean, std, coefficient of variation and
n, and sample again when the variation is too high. The runtime-specific parts (compiling, the first
run, device sync) belong to the backends in :mod:`deploykit.runtimes`; this module only times a
``run_once`` callable, so its statistics can be tested exactly with a scripted clock.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields

from deploykit.errors import ConfigError, TableError


@dataclass(frozen=True)
class Protocol:
    """How to time one model or block.

    Defaults, in the spirit of ``trtexec`` (``--warmUp=200`` ms, ``--duration``, ``--iterations``)
    and OpenVINO's ``benchmark_app``:

    - warm-up: at least ``warmup_s`` = 0.2 s **and** at least ``warmup_iters`` = 10 runs, discarded;
    - sampling: at least ``min_time_s`` = 1.0 s **and** at least ``min_iters`` = 20 runs, each run one
      sample (wall clock around one inference, device synchronized before the clock stops);
    - stability: an attempt whose coefficient of variation (std / mean) exceeds ``max_cv`` = 0.10 is
      sampled again, up to ``max_repeats`` = 3 attempts in all; the attempt with the lowest cv is kept;
    - ``threads``: intra-op CPU threads; ``None`` takes the target's ``threads`` (and where that is
      ``None`` too, the runtime's default: all physical cores). GPU runtimes ignore it.
    """

    warmup_s: float = 0.2
    warmup_iters: int = 10
    min_time_s: float = 1.0
    min_iters: int = 20
    max_cv: float = 0.10
    max_repeats: int = 3
    threads: int | None = None

    def __post_init__(self) -> None:
        _check_number("warmup_s", self.warmup_s, minimum=0.0, integer=False)
        _check_number("warmup_iters", self.warmup_iters, minimum=0, integer=True)
        _check_number("min_time_s", self.min_time_s, minimum=0.0, integer=False)
        _check_number("min_iters", self.min_iters, minimum=1, integer=True)
        _check_number("max_cv", self.max_cv, minimum=0.0, integer=False, strict=True)
        _check_number("max_repeats", self.max_repeats, minimum=1, integer=True)
        if self.threads is not None:
            _check_number("threads", self.threads, minimum=1, integer=True)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Protocol:
        """Inverse of :meth:`as_dict`; unknown keys are a ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown protocol key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Protocol:
        """Build from the options declared by :func:`add_protocol_arguments` (missing ones: defaults)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls)
                  if getattr(args, f.name, None) is not None}
        return cls(**values)

    def resolve_threads(self, target_threads: int | None) -> int | None:
        """The thread count to run with: this protocol's, else the target's, else None (runtime default)."""
        return self.threads if self.threads is not None else target_threads


def _check_number(name: str, value, *, minimum: float, integer: bool, strict: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (not integer and not math.isfinite(value)):
        raise ConfigError(f"protocol {name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else "≥"
        raise ConfigError(f"protocol {name} must be {relation} {minimum:g}, got {value!r}")


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--warmup-time --warmup-iters --min-time --min-iters --max-cv --max-repeats --threads``."""
    d = Protocol()
    group = parser.add_argument_group(
        "measurement protocol",
        "warm up, then sample for at least a time and a count; re-sample when the variation is too high")
    group.add_argument("--warmup-time", dest="warmup_s", type=float, default=d.warmup_s, metavar="S",
                       help=f"minimum warm-up time in seconds, runs discarded (default: {d.warmup_s})")
    group.add_argument("--warmup-iters", dest="warmup_iters", type=int, default=d.warmup_iters, metavar="N",
                       help=f"minimum number of warm-up runs (default: {d.warmup_iters})")
    group.add_argument("--min-time", dest="min_time_s", type=float, default=d.min_time_s, metavar="S",
                       help=f"minimum sampling time in seconds (default: {d.min_time_s})")
    group.add_argument("--min-iters", dest="min_iters", type=int, default=d.min_iters, metavar="N",
                       help=f"minimum number of timed runs (default: {d.min_iters})")
    group.add_argument("--max-cv", dest="max_cv", type=float, default=d.max_cv, metavar="CV",
                       help="re-sample when std/mean of the samples exceeds this "
                            f"(default: {d.max_cv})")
    group.add_argument("--max-repeats", dest="max_repeats", type=int, default=d.max_repeats, metavar="N",
                       help="most sampling attempts per measurement; the steadiest is kept "
                            f"(default: {d.max_repeats})")
    group.add_argument("--threads", dest="threads", type=int, default=None, metavar="N",
                       help="intra-op CPU threads (default: the target's setting)")


@dataclass(frozen=True)
class Measurement:
    """One latency figure with the samples it came from. Times in milliseconds, compile time in seconds.

    ``std_ms`` is the sample standard deviation (n − 1), ``cv`` = std / mean, ``p90_ms`` the 90th
    percentile with linear interpolation (numpy's default).

    ``median_ms`` is the value a latency table records. ``repeats`` is how many sampling attempts were
    made (1 when the first was steady enough); ``attempt_cvs`` the cv of each, in order. ``compile_s``
    and ``first_run_ms`` are filled by the runtime backend and are never part of the samples.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    n: int
    samples_ms: tuple[float, ...]
    repeats: int
    compile_s: float = 0.0
    first_run_ms: float = 0.0
    attempt_cvs: tuple[float, ...] = field(default=())

    def as_dict(self) -> dict:
        data = asdict(self)
        data["samples_ms"] = list(self.samples_ms)
        data["attempt_cvs"] = list(self.attempt_cvs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Measurement:
        """Inverse of :meth:`as_dict`; a record with missing or unknown keys is a TableError."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise TableError(f"malformed measurement record: missing {missing or 'nothing'}, "
                             f"unknown {unknown or 'nothing'}")
        values = dict(data)
        values["samples_ms"] = tuple(float(x) for x in values["samples_ms"])
        values["attempt_cvs"] = tuple(float(x) for x in values.get("attempt_cvs", ()))
        return cls(**values)

    @classmethod
    def from_samples(cls, samples_ms: tuple[float, ...] | list[float], *, repeats: int = 1,
                     attempt_cvs: tuple[float, ...] = ()) -> Measurement:
        """The statistics of one set of samples (at least one)."""
        samples = tuple(float(s) for s in samples_ms)
        if not samples:
            raise ValueError("a measurement needs at least one sample")
        mean = statistics.fmean(samples)
        std = statistics.stdev(samples) if len(samples) > 1 else 0.0
        cv = std / mean if mean > 0 else 0.0
        return cls(median_ms=statistics.median(samples), p90_ms=percentile(samples, 90.0),
                   mean_ms=mean, std_ms=std, cv=cv, n=len(samples), samples_ms=samples,
                   repeats=repeats, attempt_cvs=tuple(attempt_cvs) or (cv,))


def percentile(values: tuple[float, ...] | list[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(run_once: Callable[[], None], protocol: Protocol, *,
            clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time ``run_once`` under ``protocol``; see :class:`Protocol` for the rules.

    ``clock`` returns seconds. Warm-up runs are never sampled. ``run_once`` must return only once its
    work is finished (a GPU backend synchronizes inside it), since each sample is the clock around it.
    """
    _warm_up(run_once, protocol, clock)
    best: tuple[float, ...] | None = None
    best_cv = math.inf
    cvs: list[float] = []
    for _ in range(protocol.max_repeats):
        samples = _sample(run_once, protocol, clock)
        cv = Measurement.from_samples(samples).cv
        cvs.append(cv)
        if cv < best_cv:
            best, best_cv = samples, cv
        if cv <= protocol.max_cv:
            break
    return Measurement.from_samples(best, repeats=len(cvs), attempt_cvs=tuple(cvs))


def _warm_up(run_once: Callable[[], None], protocol: Protocol, clock: Callable[[], float]) -> None:
    start = clock()
    count = 0
    while count < protocol.warmup_iters or clock() - start < protocol.warmup_s:
        run_once()
        count += 1


def _sample(run_once: Callable[[], None], protocol: Protocol,
            clock: Callable[[], float]) -> tuple[float, ...]:
    samples: list[float] = []
    start = clock()
    elapsed = 0.0
    while len(samples) < protocol.min_iters or elapsed < protocol.min_time_s:
        t0 = clock()
        run_once()
        t1 = clock()
        samples.append((t1 - t0) * 1000.0)
        elapsed = t1 - start
    return tuple(samples)
