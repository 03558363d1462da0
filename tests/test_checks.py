"""deploykit.checks: the one home of "an integer in a range" and "a finite number"."""

from __future__ import annotations

import math

import pytest

from deploykit.checks import int_rule, is_int, is_number, number_rule, require_int, require_number
from deploykit.errors import ConfigError, ModelError


@pytest.mark.parametrize("value,least,most,ok", [
    (3, None, None, True), (True, None, None, False), (3.0, None, None, False), ("3", None, None, False),
    (0, 1, None, False), (1, 1, None, True), (0, 0, 5, True), (5, 0, 5, True), (6, 0, 5, False),
    (-1, None, 0, True),
])
def test_is_int_refuses_bools_and_honours_both_bounds(value, least, most, ok):
    assert is_int(value, least=least, most=most) is ok


@pytest.mark.parametrize("value,kw,ok", [
    (1.5, {}, True), (2, {}, True), (False, {}, False), (math.nan, {}, False), (math.inf, {}, False),
    (0.0, {"above": 0}, False), (0.0, {"least": 0}, True), (1.0, {"below": 1}, False), ("1", {}, False),
])
def test_is_number_wants_a_finite_real(value, kw, ok):
    assert is_number(value, **kw) is ok


def test_rules_in_words():
    assert [int_rule(), int_rule(least=1), int_rule(least=0), int_rule(most=9), int_rule(0, 9)] == [
        "an integer", "a positive integer", "an integer ≥ 0", "an integer ≤ 9", "an integer 0–9"]
    assert [number_rule(), number_rule(above=0), number_rule(least=0), number_rule(above=0, below=1)] == [
        "a number", "a positive number", "a number ≥ 0", "a number > 0 and < 1"]


def test_require_returns_the_value_or_raises_one_line_naming_it():
    assert require_int("--rounds", 3, least=1) == 3
    assert require_number("--timeout", 2.5, above=0) == 2.5
    with pytest.raises(ConfigError, match=r"^--rounds must be a positive integer, got 0$"):
        require_int("--rounds", 0, least=1)
    with pytest.raises(ModelError, match=r"^in_chans must be an integer 1–4, got True$"):
        require_int("in_chans", True, least=1, most=4, error=ModelError)
    with pytest.raises(ConfigError, match=r"^--pareto must be at least 2 points, got 1$"):
        require_int("--pareto", 1, least=2, rule="at least 2 points")
    with pytest.raises(ConfigError, match=r"^epochs must be positive, got nan$"):
        require_number("epochs", math.nan, above=0, rule="positive")
