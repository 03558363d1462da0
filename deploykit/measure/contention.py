"""The contention guard: nothing is measured while other processes use the cores a measurement needs,
or, when the machine never gets quiet, the figure says so.

Measured on this project's 2-core machines: with one other busy process, a model timed with two
spinning onnxruntime threads came out 3× slower than on a quiet machine. A table profiled like that is
wrong the moment the machine is quiet again. So before each measurement the guard reads every other
process's CPU time from ``/proc`` over a short window (this process tree excluded: its workers are the
load being measured) and, while the others use more than the cores the measurement leaves spare (plus
``busy_limit``), waits — at most ``wait_quiet_s`` seconds — then measures anyway. It also reads the
others' CPU over the measurement itself. A measurement with contention before (after the wait) or
during it is *flagged*: :attr:`Measurement.others_cpu` holds what the others used, and
:attr:`Measurement.contended` is set; one warning per episode names the busiest processes.

Clock, sleep and the process snapshot are injectable, so the rules are tested exactly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from deploykit.checks import require_number
from deploykit.errors import ConfigError
from deploykit.measure.processes import Snapshot, busiest, process_snapshot
from deploykit.progress import Progress, to_stderr

if TYPE_CHECKING:
    from deploykit.protocol import Measurement

DEFAULT_WAIT_QUIET_S = 30.0
WAIT_QUIET_ENV = "DEPLOYKIT_WAIT_QUIET"  # seconds; the test suite sets 0 (its workers are each other's load)
T = TypeVar("T")
FRESH_LOOK_S = 5.0  # a quiet reading younger than this (the last measurement's) needs no new look


@dataclass(frozen=True)
class GuardPolicy:
    """When the machine counts as busy, and how long to wait for it to be quiet.

    ``busy_limit``: CPU (in cores) the other processes may use beyond the cores the measurement leaves
    spare (usable cores − threads) before it counts as contention. ``window_s``: how long one look at
    the others lasts. ``wait_quiet_s``: the longest wait for quiet before a measurement (0: never wait,
    only flag: no look before a measurement, only the reading over it).
    """

    wait_quiet_s: float = DEFAULT_WAIT_QUIET_S
    busy_limit: float = 0.25
    window_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("wait_quiet_s", "busy_limit", "window_s"):
            unit = " of seconds" if name.endswith("_s") else ""
            require_number(f"contention guard {name.removesuffix('_s')}", getattr(self, name), least=0,
                           below=1e6, rule=f"a number{unit} ≥ 0")
        if self.window_s <= 0:
            raise ConfigError(f"contention guard window must be > 0 s, got {self.window_s!r}")


def policy_from_env() -> GuardPolicy:
    """The default policy, with ``wait_quiet_s`` from ``$DEPLOYKIT_WAIT_QUIET`` where it is set."""
    text = os.environ.get(WAIT_QUIET_ENV, "").strip()
    if not text:
        return GuardPolicy()
    try:
        return GuardPolicy(wait_quiet_s=float(text))
    except (ValueError, ConfigError):
        raise ConfigError(f"${WAIT_QUIET_ENV} must be a number of seconds ≥ 0, got {text!r}") from None


@dataclass(frozen=True)
class Look:
    """What the other processes used over one window: cores in total, and the busiest of them."""

    others_cpu: float
    busiest: tuple[dict[str, Any], ...]

    def names(self) -> str:
        return ", ".join(f"{p['name']} (pid {p['pid']}, {p['cpu_share']:.0%} of a core)"
                         for p in self.busiest) or "none"


class ContentionGuard:
    """Waits for quiet before a measurement and flags one taken under contention (module docstring)."""

    def __init__(self, policy: GuardPolicy | None = None, *, say: Progress = to_stderr,
                 snapshot: Callable[[], Snapshot] = process_snapshot,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 usable_cores: int | None = None, root: int | None = None):
        self.policy = policy or GuardPolicy()
        self.say, self.snapshot, self.clock, self.sleep = say, snapshot, clock, sleep
        self.usable_cores = usable_cores if usable_cores is not None else _usable_cores()
        self.root = root if root is not None else os.getpid()
        self._warned = False  # one warning per busy episode, not one per measurement
        self._last: tuple[float, Look] | None = None  # (when, reading) of the last measurement

    def allowance(self, threads: int | None) -> float:
        """The cores other processes may use without disturbing a measurement with ``threads``."""
        needed = threads if threads is not None else self.usable_cores
        return max(self.usable_cores - needed, 0) + self.policy.busy_limit

    def look(self) -> Look:
        """The other processes' CPU over one window."""
        before = (self.clock(), self.snapshot())
        self.sleep(self.policy.window_s)
        return self._between(before, (self.clock(), self.snapshot()))

    def wait_quiet(self, threads: int | None) -> tuple[Look, float]:
        """Look until the others fit the allowance or ``wait_quiet_s`` is spent; the last look and the
        seconds waited."""
        started = self.clock()
        look = self.look()
        while look.others_cpu > self.allowance(threads):
            waited = self.clock() - started
            if waited >= self.policy.wait_quiet_s:
                break
            look = self.look()
        return look, self.clock() - started

    def measure(self, run: Callable[[], Measurement], *, threads: int | None, what: str) -> Measurement:
        """``run()`` once the machine is quiet (or the wait is spent), flagged when it was not."""
        result, others_cpu, contended = self.watch(run, threads=threads, what=what)
        return replace(result, others_cpu=others_cpu, contended=contended)

    def watch(self, run: Callable[[], T], *, threads: int | None, what: str) -> tuple[T, float, bool]:
        """``run()`` once the machine is quiet (or the wait is spent); its result, the others' CPU (cores)
        and whether that was contention — for results that carry more than one figure."""
        allowance = self.allowance(threads)
        looks, waited = [], 0.0
        if self.policy.wait_quiet_s > 0 and not self._recently_quiet(allowance):
            before, waited = self.wait_quiet(threads)
            looks.append(before)
        start = (self.clock(), self.snapshot())
        result = run()
        end = (self.clock(), self.snapshot())
        looks.append(self._between(start, end))
        self._last = (end[0], looks[-1])
        worst = max(looks, key=lambda look: look.others_cpu)
        contended = worst.others_cpu > allowance
        if contended and not self._warned:
            self.say(f"warning: other processes use {worst.others_cpu:.2f} cores while measuring {what} "
                     f"(allowed {allowance:.2f}; waited {waited:.0f} s of --wait-quiet "
                     f"{self.policy.wait_quiet_s:g}); busiest: {worst.names()} — figures measured now are "
                     "flagged as contended")
        self._warned = contended
        return result, round(worst.others_cpu, 3), contended

    def _recently_quiet(self, allowance: float) -> bool:
        """Whether the last measurement, just now, saw a quiet machine (then no look is needed)."""
        if self._last is None:
            return False
        when, look = self._last
        return self.clock() - when <= FRESH_LOOK_S and look.others_cpu <= allowance

    def _between(self, before: tuple[float, Snapshot], after: tuple[float, Snapshot]) -> Look:
        every = busiest(before, after, exclude_root=self.root, top=1_000_000)
        return Look(others_cpu=sum(p["cpu_share"] for p in every), busiest=tuple(every[:3]))


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
