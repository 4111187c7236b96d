"""The paper's math tool, made safe: a model writes one expression, a whitelist evaluates it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .._context import call_model
from .._prompts import render, template
from .._result import observation_text
from .._tools import Tool
from ..models import Message, Model, resolve_model
from ._arithmetic import ExpressionError, evaluate

__all__ = ["math_tool"]

_EXPRESSION = re.compile(r"expression\s*:\s*`?([^`\n]+)`?", re.I)


def _context_text(context: Sequence[Any] | None) -> str:
    if not context:
        return "(none)"
    return " | ".join(observation_text(item, 2000) for item in context)


def math_tool(model: Model | str | None = None, *, name: str = "math") -> Tool:
    """A tool ``math(problem, context=None)``.

    A plain arithmetic ``problem`` is evaluated directly.  A problem in words is turned by
    ``model`` (resolved on first use; default: the run's default model) into one arithmetic
    expression over numbers from ``context``, which the whitelist evaluator checks and
    computes: model output is never executed.  The model call counts in the run's usage.
    """
    state: dict[str, Model] = {}

    async def math(problem: str, context: list[Any] | None = None) -> float:
        try:
            return float(evaluate(problem))
        except ExpressionError:
            pass
        if "model" not in state:
            state["model"] = resolve_model(model)
        prompt = render(template("math.md"), context=_context_text(context), problem=problem)
        completion = await call_model(
            state["model"], [Message("user", prompt)], stop=["\n\n"], max_tokens=120
        )
        reply = completion.text.strip()
        found = _EXPRESSION.search(reply)
        expression = found.group(1).strip() if found else reply.splitlines()[0] if reply else ""
        if not expression:
            raise ExpressionError(f"the model gave no expression for {problem!r}", tool=name)
        try:
            return float(evaluate(expression))
        except ExpressionError as exc:
            raise ExpressionError(
                f"for {problem!r} the model wrote {expression!r}, which was rejected: "
                f"{exc.message}",
                tool=name,
            ) from None

    math.__doc__ = (
        'Solve a math problem: either an arithmetic expression such as "(3 + 4) * 2", or a '
        'problem in words ("depth if 20% shallower") with context listing the earlier results '
        '(e.g. ["$1"]) that hold its numbers.'
    )
    return Tool(math, name=name)
