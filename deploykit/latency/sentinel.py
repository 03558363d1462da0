"""The sentinel: the whole model, re-measured during a profile to catch the machine changing under it.

A profile takes minutes; a backup job, a compile or a noisy neighbour starting meanwhile makes every
entry measured from then on slower, and the table silently mixes two machines. So the whole model is
measured at the start of a profile, again every ``every`` entries or ``interval_s`` seconds, and at
the end. When it drifts more than ``max_drift`` from the start value, the entries measured since the
last good sentinel are measured again (at most ``retries`` times for one window), and the load average
and the busiest other processes (from ``/proc``, this process tree excluded) are recorded and warned
about.

One fresh process of the whole model can land 1.5× slower than the next on a shared machine (thread
placement, a neighbour's burst), so neither the level nor a drift rests on one measurement: the start
value is the median of ``start_samples`` measurements (the model row counts as one), and a check that
drifts is measured once more (``confirm``) — the drift stands only if that one drifts too (the check
keeps whichever of the two is closer to the start).

When the retries are spent and the last two checks agree with each other (within ``max_drift``) but
not with the start, the machine has settled at another speed — or the start value itself was taken
during a burst of load. Either way the entries measured before this window belong to the old level:
the sentinel is rebased to the new level once (``rebase``) and every earlier entry, the start's own
(the model row) included, is measured again, so that the table describes one machine state.

:class:`Sentinel` holds that bookkeeping; the profile supplies ``measure`` (the whole model, a fresh
process, ms) and ``redo`` (measure a window's entries again). Clock, load and process snapshot are
injectable, so the rules are tested exactly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from deploykit.checks import require_int, require_number
from deploykit.clock import utc_now
from deploykit.errors import ConfigError
from deploykit.measure.processes import Snapshot, busiest, load_average, process_snapshot
from deploykit.progress import Progress, silent


@dataclass(frozen=True)
class SentinelPolicy:
    """When the sentinel is measured and what it tolerates (see the module docstring)."""

    every: int = 8              # entries between two sentinel measurements; 0: start and end only
    interval_s: float = 60.0    # or this many seconds since the last one, whichever comes first
    max_drift: float = 0.05     # |sentinel / start − 1| above this is a drift
    retries: int = 2            # a window is measured again at most this many times
    rebase: bool = True         # a level that persists through the retries becomes the new start, once
    start_samples: int = 3      # the start value: the median of this many whole-model measurements
    confirm: bool = True        # a drifting check is measured once more before any entry is redone

    def __post_init__(self) -> None:
        for name, value, require in (("every", self.every, require_int),
                                     ("interval_s", self.interval_s, require_number),
                                     ("max_drift", self.max_drift, require_number),
                                     ("retries", self.retries, require_int),
                                     ("start_samples", self.start_samples, require_int)):
            require(f"sentinel {name}", value, least=0)
        if self.max_drift == 0:
            raise ConfigError("sentinel max_drift must be > 0")
        if self.start_samples == 0:
            raise ConfigError("sentinel start_samples must be ≥ 1")
        for name, value in (("rebase", self.rebase), ("confirm", self.confirm)):
            if not isinstance(value, bool):
                raise ConfigError(f"sentinel {name} must be true or false, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


NOISE_WIDTH = 2.0   # a drift must exceed this many robust cvs of the settings' own fresh processes


def for_process_noise(policy: SentinelPolicy, robust_cv: float | None) -> SentinelPolicy:
    """``policy`` with ``max_drift`` at least :data:`NOISE_WIDTH` × ``robust_cv``, the spread of the run
    settings' fresh processes (the settings probe measured it). The sentinel is one fresh process (two
    when it drifts); with settings whose processes land ±10 % apart, a ±5 % limit re-measures entries on
    noise — 35 entries, 70 s in one demo profile whose probe had found no repeatable setting."""
    if robust_cv is None or NOISE_WIDTH * robust_cv <= policy.max_drift:
        return policy
    return replace(policy, max_drift=round(NOISE_WIDTH * robust_cv, 4))


@dataclass
class Sentinel:
    """The sentinel's state for one profile run; :meth:`record` is what the table's metadata keeps."""

    measure: Callable[[], float]
    policy: SentinelPolicy = field(default_factory=SentinelPolicy)
    say: Progress = field(default=silent)
    clock: Callable[[], float] = time.monotonic
    load: Callable[[], list[float] | None] = field(default=lambda: load_average())
    snapshot: Callable[[], Snapshot] = field(default=lambda: process_snapshot())
    start_ms: float | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    drifts: list[dict[str, Any]] = field(default_factory=list)
    window: list[Any] = field(default_factory=list)
    history: list[Any] = field(default_factory=list)     # entries of closed windows (and the start's own)
    rebased: bool = False
    _last_time: float = 0.0
    _last_snapshot: tuple[float, Snapshot] | None = None
    _window_usage: list[dict[str, Any]] = field(default_factory=list)

    def start(self, value_ms: float | None = None, *, item: Any = None) -> float:
        """The start value: the median of ``start_samples`` whole-model measurements, ``value_ms`` (the
        whole model just measured for its row, ``item``, measured again with the earlier entries if the
        sentinel is ever rebased) counting as the first."""
        values = [self._measure("start", value_ms)] if value_ms is not None else []
        while len(values) < self.policy.start_samples:
            values.append(self._measure("start"))
        self.start_ms = statistics.median(values)
        if item is not None:
            self.history.append(item)
        return self.start_ms

    def add(self, item: Any) -> None:
        """One more entry measured since the last good sentinel."""
        self.window.append(item)

    def due(self) -> bool:
        """Whether the sentinel should be measured now (after the entry just added)."""
        if not self.window:
            return False
        by_count = self.policy.every > 0 and len(self.window) >= self.policy.every
        return by_count or self.clock() - self._last_time >= self.policy.interval_s

    def settle(self, redo: Callable[[list[Any]], None], describe: Callable[[list[Any]], str]) -> None:
        """Measure the sentinel; on a drift, record it, warn, and ``redo`` the window (bounded); then the
        window is closed. ``describe`` names a window's entries for the warning."""
        if self.start_ms is None:
            raise RuntimeError("internal: the sentinel was not started")
        previous = None
        for attempt in range(self.policy.retries + 1):
            value = self._check()
            drift = value / self.start_ms - 1.0
            if abs(drift) <= self.policy.max_drift:
                break
            again = attempt < self.policy.retries
            persists = previous is not None and abs(value / previous - 1.0) <= self.policy.max_drift
            rebase = not again and persists and self.policy.rebase and not self.rebased
            event = self._drift_event(value, drift, describe(self.window), again, rebase=rebase,
                                      earlier=describe(self.history) if rebase else "")
            self.say(_warning(event, self.policy))
            if rebase:
                self.start_ms, self.rebased = value, True
                redo(self.history)
            if not again:
                break
            redo(self.window)
            previous = value
        self.history += self.window
        self.window = []

    def _check(self) -> float:
        """One check; a drifting one measured once more, keeping the value closer to the start."""
        value = self._measure("check")
        if self.policy.confirm and abs(value / self.start_ms - 1.0) > self.policy.max_drift:
            value = min(value, self._measure("confirm"), key=lambda v: abs(v / self.start_ms - 1.0))
        return value

    def record(self) -> dict[str, Any]:
        return {"policy": self.policy.as_dict(), "start_ms": self.start_ms, "checks": self.checks,
                "drifts": self.drifts}

    def _measure(self, kind: str, value_ms: float | None = None) -> float:
        value = float(self.measure() if value_ms is None else value_ms)
        self._last_time = self.clock()
        check = {"at": utc_now(), "kind": kind, "ms": value}
        if self.start_ms:
            check["drift"] = value / self.start_ms - 1.0
        self.checks.append(check)
        previous, self._last_snapshot = self._last_snapshot, (self._last_time, self.snapshot())
        self._window_usage = busiest(previous, self._last_snapshot) if previous else []
        return value

    def _drift_event(self, value: float, drift: float, entries: str, again: bool, *, rebase: bool = False,
                     earlier: str = "") -> dict[str, Any]:
        action = ("measured again" if again
                  else f"rebased: the earlier entries ({earlier}) measured again" if rebase
                  else "kept (retries exhausted)")
        event = {"at": utc_now(), "sentinel_ms": value, "start_ms": self.start_ms, "drift": drift,
                 "load": self.load(), "busiest": self._window_usage, "entries": entries, "action": action}
        self.drifts.append(event)
        return event


def _warning(event: dict[str, Any], policy: SentinelPolicy) -> str:
    load = event["load"]
    load_text = f"load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}" if load else "load unknown"
    busy = ", ".join(f"{p['name']} (pid {p['pid']}) {p['cpu_share']:.0%}" for p in event["busiest"][:3])
    busy_text = f"; busiest other processes: {busy}" if busy else ""
    what = ("measuring them again" if event["action"] == "measured again"
            else "the machine settled at this level: it is the new start value, and the "
                 + event["action"].removeprefix("rebased: ") if event["action"].startswith("rebased")
            else f"keeping them after {policy.retries} re-measurements: profile on a quieter machine")
    return (f"warning: the whole model now measures {event['sentinel_ms']:.3f} ms, {event['drift']:+.1%} "
            f"from {event['start_ms']:.3f} ms at the start (limit ±{policy.max_drift:.0%}; {load_text}"
            f"{busy_text}); entries measured meanwhile: {event['entries']} — {what}")
