"""Reading the joiner's reply: ``Thought: ...`` then ``Action: Finish(...)`` or ``Replan(...)``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["JoinerDecision", "parse_joiner"]

_ACTION = re.compile(r"\b(Finish|Replan)\s*\(", re.I)
_THOUGHT = re.compile(r"Thought\s*:\s*(.*?)(?=\n\s*Action\s*:|\Z)", re.I | re.S)
_QUOTES = ('"', "'", "`")


@dataclass(frozen=True, slots=True)
class JoinerDecision:
    """What the joiner decided: ``finish`` with ``answer`` or ``replan`` with ``reason``."""

    action: Literal["finish", "replan"]
    text: str  # the answer (finish) or the reason (replan)
    thought: str
    well_formed: bool  # False when no Finish(...)/Replan(...) was found


def parse_joiner(output: str) -> JoinerDecision:
    """Parse a joiner reply.

    The argument is everything inside the *outermost* parentheses, so
    ``Finish(First for Women (magazine))`` answers ``First for Women (magazine)``.  A reply
    with no action is taken as the answer itself, flagged ``well_formed=False``.
    """
    thought_match = _THOUGHT.search(output)
    thought = thought_match.group(1).strip() if thought_match else ""
    action_at = output.lower().rfind("action:")
    m = _ACTION.search(output, action_at if action_at >= 0 else 0) or _ACTION.search(output)
    if m is None:
        text = output.strip()
        if thought_match:
            text = thought or text
        return JoinerDecision("finish", text, thought, False)
    inner = _balanced(output, m.end())
    action: Literal["finish", "replan"] = "finish" if m.group(1).lower() == "finish" else "replan"
    return JoinerDecision(action, _unquote(inner.strip()), thought, True)


def _balanced(text: str, start: int) -> str:
    """Text from ``start`` up to the parenthesis that closes the one just before it."""
    depth = 1
    for i in range(start, len(text)):
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
    # Unbalanced: up to the last ')' on the action's line(s), else everything that is left.
    rest = text[start:]
    last = rest.rfind(")")
    return rest[:last] if last >= 0 else rest


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        return text[1:-1].strip()
    return text
