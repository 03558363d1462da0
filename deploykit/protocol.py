"""The measurement protocol: how one latency figure is taken, and the statistics it reports.

Every table entry and every end-to-end figure goes through :func:`measure`: warm up, sample, keep the
samples, report their median (the table's value) with a distribution-free confidence interval of that
median, p90, mean, std, coefficient of variation and n. A figure is *steady* when the interval is
narrow (relative half-width ≤ ``max_ci``); until it is, sampling goes on, up to a bound. The cv is
reported but decides nothing: one preempted sample blows it up while the median does not move.

The runtime-specific parts (compiling, the first run, device sync) belong to the backends in
:mod:`deploykit.runtimes`; this module only times a ``run_once`` callable, so its statistics can be
tested exactly with a scripted clock. It sits at the bottom of the import graph (the runtimes use it).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields, replace

from deploykit.checks import require_int, require_number
from deploykit.errors import ConfigError, TableError
from deploykit.runsettings import RunSettings

# Keys older tables and worker replies carry that this protocol no longer uses; read and dropped.
_LEGACY_PROTOCOL_KEYS = ("max_cv",)
_LEGACY_MEASUREMENT_KEYS = ("attempt_cvs",)


@dataclass(frozen=True)
class Protocol:
    """How to time one model or block.

    Defaults, in the spirit of ``trtexec`` (``--warmUp=200`` ms, ``--duration``, ``--iterations``)
    and OpenVINO's ``benchmark_app``:

    - warm-up: at least ``warmup_s`` = 0.2 s **and** at least ``warmup_iters`` = 10 runs, discarded;
    - a sampling *round*: at least ``min_time_s`` = 1.0 s **and** at least ``min_iters`` = 20 runs,
      each run one sample (wall clock around one inference, device synchronized before it stops);
    - steadiness: after each round, the ``confidence`` (95 %) interval of the median of **all**
      samples so far is computed from order statistics; when its half-width is at most ``max_ci``
      (2 %) of the median the figure is steady and sampling stops. Otherwise another round is
      sampled, up to ``max_repeats`` = 5 rounds and no new round once ``max_time_s`` = 10 s of
      sampling is spent; the figure is then reported as it is, with its (wide) interval;
    - ``threads``, ``spinning``: explicit run settings (:mod:`deploykit.runsettings`) that override the
      target's; ``None`` takes the target's (and where that is ``None`` too, the runtime's default).
      GPU runtimes ignore them. :meth:`apply_settings` puts them on the target.
    """

    warmup_s: float = 0.2
    warmup_iters: int = 10
    min_time_s: float = 1.0
    min_iters: int = 20
    max_ci: float = 0.02
    confidence: float = 0.95
    max_repeats: int = 5
    max_time_s: float = 10.0
    threads: int | None = None
    spinning: bool | None = None

    def __post_init__(self) -> None:
        for name in ("warmup_s", "min_time_s", "max_time_s"):
            require_number(f"protocol {name}", getattr(self, name), least=0)
        for name, least in (("warmup_iters", 0), ("min_iters", 1), ("max_repeats", 1)):
            require_int(f"protocol {name}", getattr(self, name), least=least)
        require_number("protocol max_ci", self.max_ci, above=0)
        require_number("protocol confidence", self.confidence, above=0, below=1)
        if self.threads is not None:
            require_int("protocol threads", self.threads, least=1)
        try:
            self.explicit_settings()
        except ConfigError as error:
            raise ConfigError(f"protocol {error}") from None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Protocol:
        """Inverse of :meth:`as_dict`; unknown keys are a ConfigError. Keys of the older cv-based
        protocol (``max_cv``) are read and dropped, so a table measured with it can be re-measured."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(data).items() if k not in _LEGACY_PROTOCOL_KEYS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown protocol key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**values)

    def explicit_settings(self) -> RunSettings:
        """The run settings this protocol fixes (``--threads``, ``--spinning``); None fields: the target's."""
        return RunSettings(threads=self.threads, spinning=self.spinning)

    def apply_settings(self, target):
        """``target`` with this protocol's explicit settings over its own; a setting given here is no
        longer left to ``auto``. The same target when nothing is given."""
        explicit = self.explicit_settings().given()
        if not explicit:
            return target
        settings = self.explicit_settings().over(target.settings)
        auto = tuple(key for key in target.auto_settings if key not in explicit)
        return replace(target.with_settings(settings), auto_settings=auto)

    def resolve_threads(self, target_threads: int | None) -> int | None:
        """The thread count to run with: this protocol's, else the target's, else None (runtime default)."""
        return self.threads if self.threads is not None else target_threads


# --- the confidence interval of a median -----------------------------------------------------------

# Up to this many samples the interval's ranks come from exact binomial sums; beyond, the same sums in
# floating point (exact big-integer sums cost O(n²) bit operations: a minute at n = 30,000, which a
# 15-µs block reaches in one second of sampling).
EXACT_CI_SAMPLES = 1000


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(l, u)`` such that ``[x(l), x(u)]`` of ``n`` sorted samples covers the median with
    probability ≥ ``confidence``, whatever the distribution; None when ``n`` is too small for that.

    The number of samples below the true median is Binomial(n, ½), so
    P(x(l) ≤ median ≤ x(n−l+1)) = 1 − 2·P(B ≤ l − 1); ``l`` is the largest rank that keeps the
    tail P(B ≤ l − 1) ≤ (1 − confidence) / 2 (e.g. n = 20 → (6, 15), n = 100 → (40, 61)).
    """
    tail = (1.0 - confidence) / 2.0
    lower = 0
    if n <= EXACT_CI_SAMPLES:  # exact integer arithmetic
        cumulative = 0
        for k in range(n + 1):
            cumulative += math.comb(n, k)
            if cumulative / 2 ** n > tail:
                break
            lower = k + 1
    else:  # the same sum in floating point, from where the binomial mass starts to count (≥ 12 sd out)
        first = max(0, int(n / 2 - 6 * math.sqrt(n)))
        log_total = math.lgamma(n + 1) - n * math.log(2.0)
        cumulative, lower = 0.0, first
        for k in range(first, n + 1):
            cumulative += math.exp(log_total - math.lgamma(k + 1) - math.lgamma(n - k + 1))
            if cumulative > tail:
                break
            lower = k + 1
    if lower < 1:
        return None
    return lower, n - lower + 1


def median_ci(samples: tuple[float, ...] | list[float],
              confidence: float = 0.95) -> tuple[float, float]:
    """The distribution-free confidence interval of the median; ``(nan, nan)`` with too few samples."""
    ranks = median_ci_ranks(len(samples), confidence)
    if ranks is None:
        return math.nan, math.nan
    ordered = sorted(samples)
    return ordered[ranks[0] - 1], ordered[ranks[1] - 1]


# --- one figure ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    """One latency figure with the samples it came from. Times in milliseconds, compile time in seconds.

    ``median_ms`` is the value a latency table records; ``[ci_low_ms, ci_high_ms]`` the confidence
    interval of that median (order statistics, see :func:`median_ci_ranks`) and ``ci_half_width``
    its half-width relative to the median (nan with too few samples for an interval). ``std_ms`` is the
    sample standard deviation (n − 1), ``cv`` = std / mean, ``p90_ms`` the 90th percentile with linear
    interpolation (numpy's default). ``repeats`` is how many sampling rounds were taken (1 when the
    first was steady). ``compile_s`` and ``first_run_ms`` are filled by the runtime backend and are
    never part of the samples. ``others_cpu`` and ``contended`` are the contention guard's
    (:mod:`deploykit.measure.contention`).
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
    ci_low_ms: float = math.nan
    ci_high_ms: float = math.nan
    ci_half_width: float = math.nan
    # The contention guard's reading (deploykit.measure.contention): other processes' CPU, in cores,
    # around the measurement (nan: not watched), and whether that was more than the measurement allowed.
    others_cpu: float = math.nan
    contended: bool = False

    @property
    def steady_within(self) -> float:
        """The relative half-width of the median's interval; inf when there is no interval."""
        return math.inf if math.isnan(self.ci_half_width) else self.ci_half_width

    def brief(self) -> str:
        """``1.234 ms (±0.8% CI, n 20)`` for progress lines."""
        if math.isnan(self.ci_half_width):
            return f"{self.median_ms:.3f} ms (n {self.n}, too few runs for an interval)"
        return f"{self.median_ms:.3f} ms (±{self.ci_half_width * 100:.1f}% CI, n {self.n})"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["samples_ms"] = list(self.samples_ms)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Measurement:
        """Inverse of :meth:`as_dict`; a record with missing or unknown keys is a TableError."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        values = {k: v for k, v in dict(data).items() if k not in _LEGACY_MEASUREMENT_KEYS}
        missing, unknown = sorted(required - set(values)), sorted(set(values) - names)
        if missing or unknown:
            raise TableError(f"malformed measurement record: missing {missing or 'nothing'}, "
                             f"unknown {unknown or 'nothing'}")
        values["samples_ms"] = tuple(float(x) for x in values["samples_ms"])
        for name in ("ci_low_ms", "ci_high_ms", "ci_half_width", "others_cpu"):  # JSON null stands for nan
            if values.get(name) is None:
                values[name] = math.nan
        return cls(**values)

    @classmethod
    def from_samples(cls, samples_ms: tuple[float, ...] | list[float], *, repeats: int = 1,
                     confidence: float = 0.95) -> Measurement:
        """The statistics of one set of samples (at least one)."""
        samples = tuple(float(s) for s in samples_ms)
        if not samples:
            raise ValueError("a measurement needs at least one sample")
        mean = statistics.fmean(samples)
        std = statistics.stdev(samples) if len(samples) > 1 else 0.0
        cv = std / mean if mean > 0 else 0.0
        median = statistics.median(samples)
        low, high = median_ci(samples, confidence)
        half = (high - low) / 2.0 / median if median > 0 else math.nan
        return cls(median_ms=median, p90_ms=percentile(samples, 90.0), mean_ms=mean, std_ms=std, cv=cv,
                   n=len(samples), samples_ms=samples, repeats=repeats, ci_low_ms=low, ci_high_ms=high,
                   ci_half_width=half)


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
    warm_up(run_once, protocol, clock)
    samples: list[float] = []
    spent = 0.0
    rounds = 0
    while True:
        started = clock()
        samples += _sample(run_once, protocol, clock)
        spent += clock() - started
        rounds += 1
        result = Measurement.from_samples(samples, repeats=rounds, confidence=protocol.confidence)
        if (result.steady_within <= protocol.max_ci or rounds >= protocol.max_repeats
                or spent >= protocol.max_time_s):
            return result


def warm_up(run_once: Callable[[], None], protocol: Protocol, clock: Callable[[], float]) -> None:
    """The protocol's warm-up: ``warmup_iters`` runs and ``warmup_s`` seconds at least, never sampled."""
    start = clock()
    count = 0
    while count < protocol.warmup_iters or clock() - start < protocol.warmup_s:
        run_once()
        count += 1


def _sample(run_once: Callable[[], None], protocol: Protocol,
            clock: Callable[[], float]) -> list[float]:
    samples: list[float] = []
    start = clock()
    elapsed = 0.0
    while len(samples) < protocol.min_iters or elapsed < protocol.min_time_s:
        t0 = clock()
        run_once()
        t1 = clock()
        samples.append((t1 - t0) * 1000.0)
        elapsed = t1 - start
    return samples
