"""Safe arithmetic: a whitelist evaluator over Python's AST (never ``eval``)."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from .._errors import ToolError
from .._tools import tool

__all__ = ["ExpressionError", "calculator", "evaluate"]

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 1000
_MAX_MAGNITUDE = 1e300
_MAX_LENGTH = 2000


class ExpressionError(ToolError):
    """An expression that is not plain arithmetic, or cannot be evaluated."""


def _clean(expression: str) -> str:
    text = expression.strip().rstrip("=").strip()
    text = text.replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    # Thousands separators and percent signs as people write them: 1,234.5 and 20%.
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\d.(])", r"(\1/100)", text)
    return text


def evaluate(expression: str) -> float | int:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, and the
    functions abs round min max sqrt log exp floor ceil and constants pi e.

    Raises :class:`ExpressionError` for anything else, naming what is not allowed.
    """
    if len(expression) > _MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {_MAX_LENGTH} characters")
    text = _clean(expression)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"{expression!r} is not an arithmetic expression") from None
    try:
        value = _eval(tree.body)
    except ExpressionError:
        raise
    except ZeroDivisionError:
        raise ExpressionError(f"{expression!r} divides by zero") from None
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ExpressionError(f"{expression!r} cannot be evaluated: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"{expression!r} does not give a number")
    return value


def _eval(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"{node.value!r} is not a number")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ExpressionError(f"exponent {right} is too large")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex) or abs(result) > _MAX_MAGNITUDE:
            raise ExpressionError("the result is out of range")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    shown = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
    raise ExpressionError(f"{shown!r} is not allowed in arithmetic")


@tool
def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression over numbers, e.g. "(330 + 93) * 2" or "20% of 1500"
    written as "1500 * 20%". Supports + - * / ** ( ) and sqrt, round, min, max, abs."""
    value = evaluate(expression)
    return float(value)
