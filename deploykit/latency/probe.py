"""The settings probe: which run settings make this model's latency fast *and* reproducible here.

Measured on this project's 2-core machines: the same ONNX file timed with onnxruntime's default (two
threads that spin while they wait) came out bimodal across fresh processes (robust cv 11–19 %, under
half of the processes within ±5 %), while one thread was steady to ~1 % and two sleeping threads were
faster and steadier than two spinning ones. No fit or sentinel can make a table better than the
measurement it is built from, so the settings are chosen by evidence before a profile starts:

every candidate (:func:`candidates`: 1 thread and one per physical core; spinning on and off where
the runtime spins; only the settings the target leaves to ``auto``) measures the whole model in
``processes`` (8) short fresh processes, candidates interleaved round by round so a change of the machine hits
them all alike. A candidate is *repeatable* when at least ``min_share`` (90 %) of its processes are
within ±``within`` (5 %) of their median. The probe picks the fastest repeatable candidate, else the
steadiest; the table records the choice and the probe.

Twenty seconds of evidence can miss a change of the machine that comes minutes later. Measured here on
the demo (convnext_atto 32): all eight probe processes with two spinning threads at 0.42–0.44 ms, the
whole model 0.61 ms seconds later, and 42 % of the profile's 43 measurements within ±5 %. So a choice
with more threads than a repeatable candidate is *confirmed* (:func:`confirm`): it and the fastest
repeatable candidate with fewer threads are measured again, interleaved, in :data:`CONFIRM_PROCESSES`
fresh processes each. When the chosen one moved by more than ±5 % while the other held, its speed did
not hold and the other is taken; when both moved, the machine changed, not the setting, and the choice
stands.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from deploykit.latency.stats import Repeatability
from deploykit.runsettings import RunSettings

# A setting that lands slow in one fresh process of four passes three processes 42 % of the time, five
# 24 %, eight 10 %; so eight short processes (one sampling round of PROBE_MIN_TIME_S) rather than a few
# long ones: a process costs its start-up either way.
PROBE_PROCESSES = 8
PROBE_MIN_TIME_S = 0.3
CONFIRM_PROCESSES = 3  # per candidate: the median of three is off only when two of them are
MIN_SHARE = 0.9
WITHIN = 0.05


@dataclass(frozen=True)
class ProbeRow:
    """One candidate's fresh-process medians (ms)."""

    settings: RunSettings
    medians_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.medians_ms)

    @property
    def share_within(self) -> float:
        """The share of processes within ±:data:`WITHIN` of the median of all of them."""
        middle = self.median_ms
        return sum(abs(m / middle - 1.0) <= WITHIN for m in self.medians_ms) / len(self.medians_ms)

    @property
    def spread(self) -> float:
        """(slowest − fastest) / median: how far apart the processes landed."""
        return (max(self.medians_ms) - min(self.medians_ms)) / self.median_ms

    @property
    def repeatable(self) -> bool:
        return self.share_within >= MIN_SHARE

    def as_dict(self) -> dict[str, Any]:
        return {"settings": self.settings.as_dict(), "medians_ms": [round(m, 6) for m in self.medians_ms],
                "median_ms": round(self.median_ms, 6), "share_within": round(self.share_within, 4),
                "spread": round(self.spread, 4), "repeatable": self.repeatable}


@dataclass(frozen=True)
class ProbeResult:
    """The candidates as measured, and the chosen settings with the reason."""

    rows: tuple[ProbeRow, ...]
    chosen: RunSettings
    reason: str
    confirmation: tuple[ProbeRow, ...] = ()  # candidates measured again right after (:func:`confirm`)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": [r.as_dict() for r in self.rows], "chosen": self.chosen.as_dict(),
                "reason": self.reason, "within": WITHIN, "min_share": MIN_SHARE,
                "confirmation": [r.as_dict() for r in self.confirmation]}

    def table(self) -> str:
        """The probe as a small text table, one line per candidate, the chosen one marked."""
        lines = [f"{'settings':<28} {'median ms':>10} {'±5% share':>10} {'spread':>7}  processes (ms)"]
        for row in self.rows:
            mark = "  <- chosen" if row.settings == self.chosen else ""
            shown = " ".join(f"{m:.3f}" for m in row.medians_ms)
            lines.append(f"{row.settings.describe():<28} {row.median_ms:>10.3f} {row.share_within:>10.0%} "
                         f"{row.spread:>7.1%}  {shown}{mark}")
        for row in self.confirmation:
            shown = " ".join(f"{m:.3f}" for m in row.medians_ms)
            label = f"again: {row.settings.describe()}"
            lines.append(f"{label:<28} {row.median_ms:>10.3f} {'':>10} {'':>7}  {shown}")
        return "\n".join(lines)


def chosen_robust_cv(record: Mapping[str, Any] | None) -> float | None:
    """The chosen settings' robust cv (1.4826 · MAD / median) across the probe's fresh processes, from a
    stored probe record (``TableMeta.settings_probe``); None without a probe or a row for the choice."""
    try:
        rows = [row for row in (record or {}).get("rows", []) if row.get("settings") == record.get("chosen")]
        medians = [float(m) for m in rows[0].get("medians_ms", [])] if rows else []
    except (AttributeError, TypeError, ValueError):  # a record edited by hand: no noise figure
        return None
    spread = Repeatability.of(medians)
    return None if spread is None else spread.robust_cv


def candidates(fixed: RunSettings, auto: Sequence[str], *, takes: Sequence[str],
               physical_cores: int) -> list[RunSettings]:
    """The settings to try: ``fixed`` with every combination of the ``auto`` keys the backend
    ``takes`` (threads 1 and one per physical core; spinning on/off only with more than one thread,
    where there is a pool to wait; pinning on/off; streams 1). One candidate when nothing is auto."""
    options: dict[str, list[Any]] = {
        "threads": sorted({1, max(physical_cores, 1)}),
        "spinning": [True, False], "pinning": [True, False], "streams": [1]}
    keys = [k for k in ("threads", "spinning", "streams", "pinning") if k in auto and k in takes]
    found: list[RunSettings] = []
    for values in itertools.product(*(options[k] for k in keys)):
        chosen = dict(zip(keys, values))
        settings = RunSettings(**{**fixed.as_dict(), **chosen})
        if settings.spinning is not None and settings.threads == 1 and "spinning" in chosen:
            settings = RunSettings(**{**settings.as_dict(), "spinning": None})  # no pool, nothing spins
        if settings not in found:
            found.append(settings)
    return found or [fixed]


def choose(rows: Sequence[ProbeRow]) -> tuple[RunSettings, str]:
    """The fastest repeatable candidate, else the steadiest (the highest share, then the least spread)."""
    repeatable = [r for r in rows if r.repeatable]
    if repeatable:
        best = min(repeatable, key=lambda r: r.median_ms)
        return best.settings, (f"the fastest whose fresh processes were ≥ {MIN_SHARE:.0%} within "
                               f"±{WITHIN:.0%} of their median")
    best = max(rows, key=lambda r: (r.share_within, -r.spread))
    return best.settings, f"none was ≥ {MIN_SHARE:.0%} within ±{WITHIN:.0%}: the steadiest"


def run_probe(settings: Sequence[RunSettings], measure: Callable[[RunSettings], float], *,
              processes: int | None = None, say: Callable[[str], None] | None = None) -> ProbeResult:
    """Measure each candidate in ``processes`` fresh processes (default :data:`PROBE_PROCESSES`;
    ``measure``: one process, its median ms), interleaved round by round, and choose (:func:`choose`)."""
    processes = processes or PROBE_PROCESSES
    medians: dict[RunSettings, list[float]] = {s: [] for s in settings}
    for round_index in range(processes):
        for candidate in settings:
            value = measure(candidate)
            medians[candidate].append(value)
            if say:
                say(f"settings probe {round_index + 1}/{processes}: {candidate.describe()}: {value:.3f} ms")
    rows = tuple(ProbeRow(s, tuple(medians[s])) for s in settings)
    chosen, reason = choose(rows)
    return ProbeResult(rows=rows, chosen=chosen, reason=reason)


def confirm(result: ProbeResult, measure: Callable[[RunSettings], float], *,
            processes: int = CONFIRM_PROCESSES) -> ProbeResult:
    """``result`` after measuring its choice and the fastest repeatable candidate with fewer threads
    again, interleaved, ``processes`` fresh processes each (module docstring): the other is taken when
    the choice's median moved beyond ±:data:`WITHIN` from its probe median while the other's did not.
    Unchanged (nothing measured) when no repeatable candidate has fewer threads."""
    rows = {row.settings: row for row in result.rows}
    chosen = rows[result.chosen]
    fewer = [row for row in result.rows if row.repeatable and (row.settings.threads or 0) <
             (chosen.settings.threads or 0)]
    if not fewer:
        return result
    other = min(fewer, key=lambda row: row.median_ms)
    again = run_probe([chosen.settings, other.settings], measure, processes=processes)
    moved = {row.settings: row.median_ms / rows[row.settings].median_ms - 1.0 for row in again.rows}
    confirmed = replace(result, confirmation=again.rows)
    if abs(moved[chosen.settings]) <= WITHIN or abs(moved[other.settings]) > WITHIN:
        return replace(confirmed, reason=(f"{result.reason}; measured again right after: "
                                          f"{chosen.settings.describe()} {moved[chosen.settings]:+.1%}, "
                                          f"{other.settings.describe()} "
                                          f"{moved[other.settings]:+.1%}"))
    return replace(confirmed, chosen=other.settings,
                   reason=(f"{chosen.settings.describe()} was fastest in the probe but measured "
                           f"{moved[chosen.settings]:+.0%} right after it, while {other.settings.describe()} "
                           f"held ({moved[other.settings]:+.1%}): the fastest repeatable candidate with "
                           "fewer threads"))


def probe_protocol(protocol: Any) -> Any:
    """The protocol of one probe process: ``protocol`` with one sampling round of at most
    :data:`PROBE_MIN_TIME_S` (the probe compares processes, not samples)."""
    return replace(protocol, min_time_s=min(protocol.min_time_s, PROBE_MIN_TIME_S), max_repeats=1)


def settle(target: Any, onnx_file: Any, *, input_shape: Sequence[int], protocol: Any, host: Any,
           say: Callable[[str], None]) -> tuple[Any, ProbeResult | None]:
    """``target`` with what it leaves to ``auto`` chosen by the probe on ``onnx_file`` (the whole model)
    where ``host`` measures, the probe printed as a small table; without ``auto``, the target as it is
    (settled). The probe result, or None when there was nothing to choose."""
    from deploykit.runtimes import check_target

    if not target.auto_settings:
        return target.with_settings(target.settings), None
    fingerprint = host.fingerprint(target, threads=None)
    takes = check_target(target).setting_keys(target)
    options = candidates(target.settings, target.auto_settings, takes=takes,
                         physical_cores=fingerprint.physical_cores or fingerprint.usable_cores or 1)
    if len(options) == 1:
        return target.with_settings(options[0]), None
    say(f"settings probe: {len(options)} candidates ({'; '.join(o.describe() for o in options)}), the whole "
        f"model in {PROBE_PROCESSES} fresh processes each, interleaved")
    short = probe_protocol(protocol)

    def measure(settings: RunSettings) -> float:
        return host.measure(onnx_file, target=target.with_settings(settings), protocol=short,
                            input_shape=input_shape).median_ms

    began = time.perf_counter()
    result = confirm(run_probe(options, measure), measure)
    say(result.table())
    say(f"run settings: {result.chosen.describe()} ({result.reason}) [{time.perf_counter() - began:.1f} s]")
    return target.with_settings(result.chosen), result


def drift_warning(within_5: float, measurements: int, probe: Mapping[str, Any] | None,
                  used: RunSettings) -> str | None:
    """A warning when the unpruned model, measured ``measurements`` times through the whole profile, was
    less repeatable (``within_5``: the share within ±5 % of the median) than :data:`MIN_SHARE`; None
    otherwise. The probe's window is seconds, a profile's minutes: a setting steady in the probe can
    drift with the machine over minutes (measured here with several threads that wait for work). The
    warning names the probe's steadiest candidate with fewer threads, the one to profile with instead."""
    if within_5 >= MIN_SHARE:
        return None
    head = (f"warning: with {used.describe()} the unpruned model was {within_5:.0%} within ±{WITHIN:.0%} of "
            f"its median over the profile's {measurements} fresh processes (goal {MIN_SHARE:.0%}): the "
            "table's ratios hold, its milliseconds only for the machine's speed when each was measured "
            "(`deploykit lut anchor` re-anchors them)")
    rows = (ProbeRow(RunSettings.from_dict(row["settings"]), tuple(row["medians_ms"]))
            for row in (probe or {}).get("rows", []))
    fewer = [row for row in rows if (row.settings.threads or 0) < (used.threads or 0) and row.repeatable]
    if not fewer:
        return head
    steadiest = max(fewer, key=lambda row: (row.share_within, -row.spread))
    return (f"{head}; for steadier milliseconds profile with --threads {steadiest.settings.threads} "
            f"({steadiest.settings.describe()}: {steadiest.median_ms:.3f} ms in the probe, "
            f"{steadiest.share_within:.0%} within ±{WITHIN:.0%})")
