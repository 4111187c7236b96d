"""The paper's math tool, made safe: a model writes one expression, a whitelist evaluates it.

LLMCompiler's ``math`` tool asks an LLM to write code for a word problem and runs it.  Here the
model may only write one arithmetic expression, which :func:`evaluate` checks node by node and
computes: model output is never executed.  A problem that already is arithmetic needs no model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .._context import call_model
from .._prompts import render, template
from .._result import observation_text
from .._tools import Tool
from ..models import Message, Model, resolve_model
from ._arithmetic import _CONSTANTS, _FUNCTIONS, ExpressionError, evaluate

__all__ = ["math_tool"]

_MAX_TOKENS = 160  # one expression line; bounds what a rambling model costs
_CONTEXT_ITEM_CHARS = 2000

# Characters an arithmetic expression may hold, as people write it (see _arithmetic._clean).
_ARITHMETIC_CHARS = re.compile(r"[\d\s.,+\-*/%^()×÷−=]*")
_WORD = re.compile(r"[A-Za-z_]+")
_ALLOWED_WORDS = frozenset(_FUNCTIONS) | frozenset(_CONSTANTS)
_LEAD = re.compile(r"^\s*(?:what\s+is|what's|calculate|compute|evaluate|solve)\s*:?\s*", re.I)
_PERCENT_OF = re.compile(r"(\d+(?:\.\d+)?)\s*%\s*of\s+", re.I)
_LABEL = re.compile(r"^\W*expression\W*:\s*(.*)$", re.I)
_CURRENCY = re.compile(r"[$€£¥](?=\s*[\d.(])")


def _plain_expression(problem: str) -> str | None:
    """``problem`` as an arithmetic expression after light cleaning, or ``None`` when it has
    words in it (other than the evaluator's functions and constants)."""
    text = _LEAD.sub("", problem.strip()).rstrip("?. ").strip()
    text = _CURRENCY.sub("", text)
    text = _PERCENT_OF.sub(r"\1% * ", text)
    if not text or not any(c.isdigit() for c in text):
        return None
    words = set(_WORD.findall(text))
    if not words <= _ALLOWED_WORDS:
        return None
    if not _ARITHMETIC_CHARS.fullmatch(_WORD.sub("", text)):
        return None
    return text


def _context_text(context: Sequence[Any] | None) -> str:
    if not context:
        return "(none)"
    return "\n".join(
        f"- {' '.join(observation_text(item, _CONTEXT_ITEM_CHARS).split())}" for item in context
    )


def _extract(reply: str) -> str:
    """The expression in the model's reply: the text after the last ``Expression:`` label, or
    else the reply's first non-empty line; code fences, currency signs and a trailing
    ``= result`` are dropped."""
    lines = [line.strip().strip("`").strip() for line in reply.strip().splitlines()]
    lines = [line for line in lines if line and not line.lower().startswith(("```", "python"))]
    labelled = [m.group(1) for m in map(_LABEL.match, lines) if m]
    text = labelled[-1] if labelled else (lines[0] if lines else "")
    text = text.strip().strip("`*").strip()
    if "=" in text.rstrip("= "):
        text = text.split("=", 1)[0]  # "3.0 / 2.8 - 1 = 0.0714": keep the expression
    text = _CURRENCY.sub("", text)
    return text.strip().rstrip(".").strip()


def math_tool(model: Model | str | None = None, *, name: str = "math") -> Tool:
    """A tool ``math(problem, context=None) -> float``.

    A ``problem`` that is plain arithmetic (``"(330 + 93) * 2"``, ``"What is 20% of 1500?"``)
    is evaluated directly, with no model call.  A problem in words is turned by ``model``
    (resolved on first use; ``None`` means the default model) into one arithmetic expression
    over numbers from ``context`` (earlier results: strings or numbers), which the whitelist
    evaluator checks and computes.  The model call goes through :func:`~dagcall.call_model`, so
    inside a run it counts in the run's usage (role ``"tool"``).  Anything that cannot be
    evaluated raises :class:`ExpressionError` saying what the model wrote and why it was
    rejected.
    """
    resolved: list[Model] = []

    async def math(problem: str, context: list[Any] | None = None) -> float:
        expression = _plain_expression(problem)
        if expression is not None:
            try:
                return float(evaluate(expression))
            except ExpressionError as exc:
                raise ExpressionError(exc.message, tool=name) from None
        if not resolved:
            resolved.append(resolve_model(model))
        prompt = render(template("math.md"), context=_context_text(context), problem=problem)
        completion = await call_model(
            resolved[0], [Message("user", prompt)], max_tokens=_MAX_TOKENS
        )
        reply = completion.text.strip()
        expression = _extract(reply)
        if not expression:
            raise ExpressionError(
                f"the model gave no expression for {problem!r} (it replied {reply[:200]!r})",
                tool=name,
            )
        try:
            return float(evaluate(expression))
        except ExpressionError as exc:
            raise ExpressionError(
                f"for {problem!r} the model wrote {expression!r}, which was rejected: "
                f"{exc.message}",
                tool=name,
            ) from None

    math.__doc__ = (
        'Solve a math problem: an arithmetic expression such as "(3 + 4) * 2", or a problem in '
        'words ("depth in metres if 20% shallower") with context listing the earlier results '
        '(e.g. ["$1"]) that hold its numbers. Returns a number.'
    )
    return Tool(math, name=name)
