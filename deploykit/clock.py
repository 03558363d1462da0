"""The one timestamp format of deploykit's records: UTC, ISO 8601, to the second."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """Now in UTC, such as ``2026-12-06T09:14:03+00:00`` (what every ``date``/``measured_at`` field holds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
