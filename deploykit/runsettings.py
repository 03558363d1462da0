"""Run settings: how a runtime runs a model on a CPU (threads, wait policy), as part of a measurement.

A latency figure is only reproducible with the settings it was measured with: two onnxruntime threads
that spin while they wait are a different measurement from two that sleep, or from one thread. So the
settings belong to the target (its YAML), to the latency table that was measured with them (its
metadata and fingerprint) and to what ``export`` writes for deployment (``MODEL.settings.json``).

- ``threads``: intra-op threads (every CPU runtime); None: the runtime's default (one per physical core).
- ``spinning``: onnxruntime only, ``session.intra_op.allow_spinning``: idle intra-op threads spin
  (busy-wait) instead of sleeping; None: onnxruntime's default (on).
- ``streams``: OpenVINO only, ``NUM_STREAMS`` (the latency hint's default is one).
- ``pinning``: OpenVINO only, ``ENABLE_CPU_PINNING``.

A target may set any of them to ``auto``: ``deploykit profile`` then chooses them by a probe
(:mod:`deploykit.latency.probe`) and the table records what it chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from deploykit.checks import is_int
from deploykit.errors import ConfigError

AUTO = "auto"
SETTING_KEYS = ("threads", "spinning", "streams", "pinning")
_INTEGER_KEYS = ("threads", "streams")
_BOOLEAN_KEYS = ("spinning", "pinning")
# Bounds: more threads or streams than this is a typo, and minutes of work on any machine.
MAX_THREADS = 1024


@dataclass(frozen=True)
class RunSettings:
    """The run settings of one measurement; None in a field: the runtime's default."""

    threads: int | None = None
    spinning: bool | None = None
    streams: int | None = None
    pinning: bool | None = None

    def __post_init__(self) -> None:
        for name in _INTEGER_KEYS:
            check_setting(name, getattr(self, name))
        for name in _BOOLEAN_KEYS:
            check_setting(name, getattr(self, name))

    def as_dict(self) -> dict[str, Any]:
        """Every field, None included (a table's metadata stores all four)."""
        return asdict(self)

    def given(self) -> dict[str, Any]:
        """Only the fields that are set (what a deployment must apply)."""
        return {k: v for k, v in self.as_dict().items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, what: str = "settings") -> RunSettings:
        """Inverse of :meth:`as_dict`; unknown keys and bad values are ConfigErrors naming ``what``."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{what} must be a mapping of {', '.join(SETTING_KEYS)}, got {data!r}")
        unknown = sorted(set(data) - set(SETTING_KEYS))
        if unknown:
            raise ConfigError(f"{what}: unknown setting(s) {', '.join(map(str, unknown))} "
                              f"(known: {', '.join(SETTING_KEYS)})")
        try:
            return cls(**{k: data[k] for k in SETTING_KEYS if k in data})
        except ConfigError as error:
            raise ConfigError(f"{what}: {error}") from None

    def over(self, base: RunSettings) -> RunSettings:
        """These settings where they are set, ``base``'s elsewhere (explicit options over a target)."""
        return RunSettings(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                              else getattr(base, f.name) for f in fields(self)})

    def describe(self) -> str:
        """``1 thread``, ``2 threads, spinning off``, ``runtime defaults``."""
        parts = []
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        for name in _BOOLEAN_KEYS:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {'on' if value else 'off'}")
        if self.streams is not None:
            parts.append(f"{self.streams} stream{'s' if self.streams != 1 else ''}")
        return ", ".join(parts) or "runtime defaults"


def check_setting(name: str, value: Any) -> None:
    """ConfigError unless ``value`` is None or a valid value of setting ``name``."""
    problem = setting_problem(name, value)
    if problem:
        raise ConfigError(f"{name} {problem}")


def setting_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for setting ``name`` (``must be ...``), or None when it is valid."""
    if value is None:
        return None
    if name in _INTEGER_KEYS:
        if not is_int(value, least=1, most=MAX_THREADS):
            return f"must be a positive integer or null (at most {MAX_THREADS}; or {AUTO}), got {value!r}"
    elif name in _BOOLEAN_KEYS:
        if not isinstance(value, bool):
            return f"must be true, false, {AUTO} or null, got {value!r}"
    else:
        return f"is not a setting (known: {', '.join(SETTING_KEYS)})"
    return None


def require_same(asked: RunSettings, fixed: RunSettings, *, source: str, remedy: str) -> RunSettings:
    """``fixed`` (the settings ``source`` was measured with), or a ConfigError saying both when an
    explicitly ``asked`` setting differs from it."""
    clash = differing(asked.over(fixed), fixed)
    if clash:
        asked_text = "; ".join(line.replace(" vs ", " instead of ", 1) for line in clash)
        raise ConfigError(f"{source} was measured with {fixed.describe()}; you asked for {asked_text}: "
                          f"{remedy}")
    return fixed


def differing(a: RunSettings, b: RunSettings) -> list[str]:
    """``threads: 1 vs 2`` lines for the fields where ``a`` and ``b`` differ."""
    return [f"{f.name}: {_shown(getattr(a, f.name))} vs {_shown(getattr(b, f.name))}"
            for f in fields(a) if getattr(a, f.name) != getattr(b, f.name)]


def _shown(value: Any) -> str:
    if value is None:
        return "runtime default"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
