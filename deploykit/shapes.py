"""Input sizes and shapes: one home for reading them (YAML, JSON, options, text) and for writing them.

An *input size* is (height, width) of positive integers; one integer ``n`` means ``(n, n)``. An *input
shape* is the full shape a model is run with, batch first. ``True`` is an int to Python but never a
size, so bools are refused everywhere, as are zeros, negatives, floats and strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deploykit.checks import is_int
from deploykit.errors import ConfigError, DeployKitError

SIZE_RULE = "a positive integer or [height, width] of positive integers"
DEFAULT_INPUT_SIZE = (224, 224)  # a model's input size where neither a file, a target nor the user gives one
DEFAULT_BATCH = 1  # an exported model's batch where the user gives none


def input_size_or_none(value: Any) -> tuple[int, int] | None:
    """``value`` as (height, width), or None when it is not an input size."""
    if is_int(value, least=1):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v, least=1) for v in value):
        return (value[0], value[1])
    return None


def check_input_size(value: Any, *, what: str = "input size",
                     error: type[DeployKitError] = ConfigError) -> tuple[int, int]:
    """``value`` as (height, width); anything else raises ``error`` naming ``what``."""
    size = input_size_or_none(value)
    if size is None:
        raise error(f"{what} must be {SIZE_RULE}, got {value!r}")
    return size


def parse_size(text: str) -> tuple[int, int]:
    """``224`` → (224, 224); ``96x128`` → (96, 128) as height × width; anything else a ConfigError."""
    try:
        values = [int(part) for part in str(text).lower().replace("×", "x").split("x")]
    except ValueError:
        values = []
    size = input_size_or_none(values[0] if len(values) == 1 else values)
    if size is None:
        raise ConfigError(f"expected a size like 224 or 96x128, got {text!r}")
    return size


def check_input_shape(value: Any) -> tuple[int, ...]:
    """A full input shape (batch first) as a tuple of positive ints, else ConfigError."""
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if not shape or not all(is_int(d, least=1) for d in shape):
        raise ConfigError(f"input shape must be positive integers such as (1, 3, 224, 224), got {value!r}")
    return shape


def format_shape(shape: Iterable[int]) -> str:
    """(1, 3, 224, 224) → ``1x3x224x224``; an input size (96, 128) → ``96x128``."""
    return "x".join(str(d) for d in shape)

