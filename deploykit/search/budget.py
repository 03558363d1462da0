"""Latency budgets: in milliseconds, or as a fraction of the unpruned model's predicted latency."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploykit.checks import require_number
from deploykit.errors import ConfigError

# ASCII digits only: \d would take "١" (Arabic-Indic one) and float() would read it as 1
_BUDGET = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(ms|%)?\s*$", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class Budget:
    """``unit`` is ``ms`` (``value`` in milliseconds) or ``fraction`` (of the unpruned prediction)."""

    value: float
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in ("ms", "fraction"):
            raise ConfigError(f"budget unit must be ms or fraction, got {self.unit!r}")
        require_number("a latency budget", self.value, above=0)
        if self.unit == "fraction" and self.value > 1:
            raise ConfigError(f"a budget fraction must be within (0, 1], got {self.value:g}; a bare number "
                              "is a fraction of the unpruned model's predicted latency: write e.g. 12ms "
                              "for milliseconds")

    def resolve(self, reference_ms: float) -> float:
        """The budget in ms, given the unpruned model's predicted latency."""
        return self.value if self.unit == "ms" else self.value * reference_ms

    def __str__(self) -> str:
        return f"{self.value:g} ms" if self.unit == "ms" else f"{self.value:g} × the unpruned model"


def parse_budget(text: str | float) -> Budget:
    """``0.7`` or ``70%`` → a fraction of the unpruned model's predicted latency; ``12ms`` → 12 ms."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Budget(float(text), "fraction")
    match = _BUDGET.match(str(text))
    if match is None:
        raise ConfigError(f"malformed budget {text!r}: expected a fraction such as 0.7, a percentage such as "
                          "70%, or milliseconds such as 12ms")
    value, unit = float(match.group(1)), (match.group(2) or "").lower()
    if unit == "ms":
        return Budget(value, "ms")
    return Budget(value / 100.0 if unit == "%" else value, "fraction")
