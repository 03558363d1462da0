"""Argument and value checks: the one place where "an integer in a range" and "a finite number" are
spelled out, so that every option, config field and file value is judged (and worded) alike.

``True`` is never an integer or a number here, although Python says ``isinstance(True, int)``: a YAML
``yes`` or a JSON ``true`` where a count belongs is a mistake, not 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from deploykit.errors import ConfigError

ErrorType = Callable[[str], Exception]


def is_int(value: Any, *, least: int | None = None, most: int | None = None) -> bool:
    """Whether ``value`` is an int (not a bool) within ``least``..``most`` (each bound optional)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (least is None or value >= least) and (most is None or value <= most))


def int_rule(least: int | None = None, most: int | None = None) -> str:
    """What :func:`is_int` asks, in words: ``a positive integer``, ``an integer 0–1024``, ..."""
    if least is not None and most is not None:
        return f"an integer {least}–{most}"
    if least == 1:
        return "a positive integer"
    if least is not None:
        return f"an integer ≥ {least}"
    return f"an integer ≤ {most}" if most is not None else "an integer"


def require_int(name: str, value: Any, *, least: int | None = None, most: int | None = None,
                error: ErrorType = ConfigError, rule: str | None = None) -> int:
    """``value`` if :func:`is_int`, else ``error("NAME must be RULE, got VALUE")`` (``rule``: other
    words for the bounds, where a message says more than them)."""
    if not is_int(value, least=least, most=most):
        raise error(f"{name} must be {rule or int_rule(least, most)}, got {value!r}")
    return value


def is_number(value: Any, *, least: float | None = None, above: float | None = None,
              below: float | None = None) -> bool:
    """Whether ``value`` is a finite int or float (not a bool), ≥ ``least``, > ``above``, < ``below``."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (least is None or value >= least) and (above is None or value > above)
            and (below is None or value < below))


def number_rule(least: float | None = None, above: float | None = None, below: float | None = None) -> str:
    """What :func:`is_number` asks, in words: ``a positive number``, ``a number ≥ 0``, ..."""
    if above == 0 and least is None and below is None:
        return "a positive number"
    bounds = [f"{sign} {bound:g}" for sign, bound in (("≥", least), (">", above), ("<", below))
              if bound is not None]
    return " ".join(["a number", " and ".join(bounds)]) if bounds else "a number"


def require_number(name: str, value: Any, *, least: float | None = None, above: float | None = None,
                   below: float | None = None, error: ErrorType = ConfigError,
                   rule: str | None = None) -> float:
    """``value`` if :func:`is_number`, else ``error("NAME must be RULE, got VALUE")``."""
    if not is_number(value, least=least, above=above, below=below):
        raise error(f"{name} must be {rule or number_rule(least, above, below)}, got {value!r}")
    return value
