"""What every benchmark records about the machine it ran on: load average and package versions."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as "0.12 0.34 0.56" ("" where the platform has none)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""


def package_version(name: str) -> str:
    """The installed version of ``name``, or "" when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return ""
