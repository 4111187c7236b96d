"""The safe arithmetic evaluator: numbers and operators only, never eval."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagcall.tools import ExpressionError, calculator, evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("330 + 93", 423),
        ("(83200000 - 68400000) / 1e6", 14.8),
        ("1,234.5 * 2", 2469.0),
        ("1500 * 20%", 300.0),
        ("2^10", 1024),
        ("sqrt(16) + abs(-2) + max(1, 5) + round(2.6)", 14.0),
        ("-3 ** 2", -9),
        ("10 // 3 + 10 % 3", 4),
        ("2 × 3 − 1 =", 5),
        ("pi * 2", 2 * math.pi),
    ],
)
def test_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("__import__('os').system('true')", "not allowed"),
        ("().__class__.__bases__", "not allowed"),
        ("open('/etc/passwd')", "not allowed"),
        ("x + 1", "not allowed"),
        ("'a' * 3", "not a number"),
        ("9 ** 9 ** 9", "too large"),
        ("1 / 0", "divides by zero"),
        ("10 ** 400", "out of range"),
        ("sqrt(-1)", "cannot be evaluated"),
        ("1 +", "not an arithmetic expression"),
        ("True + 1", "not a number"),
        ("1" * 3000, "longer than"),
        ("-" * 1900 + "1", "nested too deeply"),
    ],
)
def test_rejected(expression: str, match: str) -> None:
    with pytest.raises(ExpressionError, match=match):
        evaluate(expression)


def test_calculator_tool() -> None:
    assert calculator.name == "calculator"
    assert calculator("330 + 93") == 423.0


@given(st.text(max_size=40))
def test_any_text_gives_a_number_or_an_expression_error(text: str) -> None:
    try:
        value = evaluate(text)
    except ExpressionError:
        return
    assert isinstance(value, int | float)
