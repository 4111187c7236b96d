"""The joiner: shown the question and every observation, it answers or asks for a new plan.

Its reply is ``Thought: ...`` then ``Action: Finish(...)`` or ``Action: Replan(...)``;
:func:`parse_joiner` reads it.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._errors import BudgetError, UsageError
from ._grammar import joiner_grammar

if TYPE_CHECKING:
    from ._budget import Meter
    from ._planner import Planner
    from ._result import LLMCall, Round, TaskRecord
    from ._streams import Clock
    from .models import Message, Model

__all__ = ["Joiner", "JoinerDecision", "answer_text", "asks_for_words", "parse_joiner"]

_ACTION = re.compile(r"\b(Finish|Replan)\s*\(", re.I)
_LABEL = re.compile(r"\baction\s*:", re.I)
_THOUGHT = re.compile(r"Thought\s*:\s*(.*?)(?=\n\s*Action\s*:|\Z)", re.I | re.S)
_PAREN = re.compile(r"[()]")
_SPACE = re.compile(r"\s*")
_QUOTES = "\"'`"
_IN_QUOTE = {q: re.compile(rf"[\\{q}]") for q in _QUOTES}
_ESCAPES = {
    "\\": "\\",
    '"': '"',
    "'": "'",
    "`": "`",
    "/": "/",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
}
_HEX = re.compile(r"[0-9A-Fa-f]+")
_WIDTH = {"x": 2, "u": 4, "U": 8}


@dataclass(frozen=True, slots=True)
class JoinerDecision:
    """What the joiner decided: ``finish`` with ``answer`` or ``replan`` with ``reason``."""

    action: Literal["finish", "replan"]
    text: str  # the answer (finish) or the reason (replan)
    thought: str
    well_formed: bool  # False when no Finish(...)/Replan(...) was found


def parse_joiner(output: str) -> JoinerDecision:
    """Parse a joiner reply.

    **Which action.**  An action is ``Finish(`` or ``Replan(`` (any case); the one that counts
    is the first after an ``Action:`` label.  Actions are read in order and a label inside an
    earlier action's argument is part of that argument, not a new action; the last action
    read wins.  With no label before any action, the first action anywhere is taken.  A reply
    with no action is the answer itself (its thought when it has only a ``Thought:``), flagged
    ``well_formed=False``.

    **Its argument** begins after the opening parenthesis and is one of:

    1. A quoted literal: when the argument, leading whitespace aside, is one string in ``"``,
       ``'`` or backticks (or tripled ``\"\"\"``/``'''``) followed by optional whitespace and
       ``)``, the answer is the string's contents, exactly, with the escapes of JSON and Python
       string literals decoded (``\\\\ \\" \\' \\` \\/ \\n \\r \\t \\b \\f \\xHH \\uHHHH``,
       surrogate pairs joined, ``\\UHHHHHHHH``) and any other backslash kept as written.
       Nothing is evaluated.  So ``Finish("a ) b")`` answers ``a ) b``.  Quotes anywhere else
       are plain text: an apostrophe (``Apple's``) never opens a string.
    2. Otherwise the raw text, parentheses counted plainly: let the depth be 1 after the
       opening parenthesis, +1 at each ``(``, -1 at each ``)``, to the end of the reply.  If it
       reaches 0, the argument ends at the first ``)`` where the depth reaches its lowest value
       (so at the matching parenthesis when the text after it stays balanced, as in
       ``Finish(Paris)\\nHope this helps (really).``, and at the last stray one in
       ``Finish(Two reasons: 1) cost, 2) speed)``).  If it never reaches 0, the argument ends
       at the last ``)`` of the reply (``Finish(3 (approx)``), or, with none, is everything
       after the opening parenthesis.  The text is stripped of surrounding whitespace, and if it
       then starts and ends with the same quote character (``'Apple's'``) that quote is removed.

    Guarantee: ``Finish("<A escaped>")`` answers ``A`` for every string ``A`` (escaping ``\\``
    and ``"`` with a backslash, or writing it as ``json.dumps(A)`` or ``repr(A)``).  An
    unquoted ``Finish(A)`` ending the reply answers ``A.strip()`` whenever ``A`` does not start
    with a quote and its unmatched parentheses are all ``)`` or all ``(``; it is cut short only
    when ``A`` has both (a stray ``)`` before an unclosed ``(``, as in ``a) b (c``).
    """
    thought_match = _THOUGHT.search(output)
    thought = thought_match.group(1).strip() if thought_match else ""
    chosen = _choose(output)
    if chosen is None:
        text = output.strip()
        if thought_match:
            text = thought or text
        return JoinerDecision("finish", text, thought, False)
    m, answer = chosen
    action: Literal["finish", "replan"] = "finish" if m.group(1).lower() == "finish" else "replan"
    return JoinerDecision(action, answer, thought, True)


def _choose(output: str) -> tuple[re.Match[str], str] | None:
    """The action that counts and its argument."""
    actions = list(_ACTION.finditer(output))
    if not actions:
        return None
    starts = [a.start() for a in actions]
    parens = _Parens(output)
    chosen: tuple[re.Match[str], str] | None = None
    done = 0  # where the last action read ends
    for label in _LABEL.finditer(output):
        if label.start() < done:
            continue  # inside the argument of the action before
        k = bisect_left(starts, label.end())
        if k == len(actions):
            break
        answer, done = _argument(output, actions[k].end(), parens)
        chosen = (actions[k], answer)
    if chosen is None:
        answer, _ = _argument(output, actions[0].end(), parens)
        chosen = (actions[0], answer)
    return chosen


def _argument(text: str, start: int, parens: _Parens) -> tuple[str, int]:
    """The argument that begins at ``start`` (just after its parenthesis), and where it ends."""
    literal = _literal(text, start)
    if literal is not None:
        return literal
    end = parens.close(start - 1)
    raw = text[start : len(text) if end is None else end].strip()
    for quote in ('"""', "'''", "```", *_QUOTES):
        if len(raw) >= 2 * len(quote) and raw.startswith(quote) and raw.endswith(quote):
            raw = raw[len(quote) : -len(quote)]
            break
    return raw, len(text) if end is None else end + 1


def _literal(text: str, start: int) -> tuple[str, int] | None:
    """A quoted string that is the whole argument: its decoded contents and where it ends."""
    i = _skip_space(text, start)
    if i >= len(text) or text[i] not in _QUOTES:
        return None
    q = text[i]
    delim = q * 3 if text.startswith(q * 3, i) else q
    pieces: list[str] = []
    pos = i + len(delim)
    while True:
        found = _IN_QUOTE[q].search(text, pos)
        if found is None:
            return None  # never closed
        j = found.start()
        pieces.append(text[pos:j])
        if text[j] == "\\":
            decoded, pos = _escape(text, j)
            pieces.append(decoded)
        elif text.startswith(delim, j):
            pos = j + len(delim)
            break
        else:  # one quote character inside a tripled string
            pieces.append(q)
            pos = j + 1
    after = _skip_space(text, pos)
    if after < len(text) and text[after] == ")":
        return "".join(pieces), after + 1
    return None


def _skip_space(text: str, i: int) -> int:
    m = _SPACE.match(text, i)
    return i if m is None else m.end()


def _escape(text: str, at: int) -> tuple[str, int]:
    """Decode the escape at ``text[at]`` (a backslash): its text and the index after it."""
    c = text[at + 1 : at + 2]
    if c in _ESCAPES:
        return _ESCAPES[c], at + 2
    width = _WIDTH.get(c)
    if width is not None:
        digits = text[at + 2 : at + 2 + width]
        if len(digits) == width and _HEX.fullmatch(digits):
            code = int(digits, 16)
            end = at + 2 + width
            if c == "u" and 0xD800 <= code < 0xDC00 and text.startswith("\\u", end):
                low = text[end + 2 : end + 6]
                if len(low) == 4 and _HEX.fullmatch(low) and 0xDC00 <= int(low, 16) < 0xE000:
                    pair = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                    return chr(pair), end + 6
            if not 0xD800 <= code < 0xE000 and code <= 0x10FFFF:
                return chr(code), end
    return text[at : at + 2], at + 2  # not an escape we know: kept as written


class _Parens:
    """The reply's parentheses, so each action's closing one is found without rescanning."""

    def __init__(self, text: str) -> None:
        self.pos = [m.start() for m in _PAREN.finditer(text)]
        self.depth: list[int] = []
        depth = 0
        self.last_close = -1
        for k, p in enumerate(self.pos):
            if text[p] == "(":
                depth += 1
            else:
                depth -= 1
                self.last_close = k
            self.depth.append(depth)
        # low[k], first[k]: the lowest depth after parens k.. and the first paren reaching it.
        n = len(self.pos)
        self.low = [0] * n
        self.first = [0] * n
        low, first = 0, -1
        for k in range(n - 1, -1, -1):
            if first < 0 or self.depth[k] <= low:
                low, first = self.depth[k], k
            self.low[k], self.first[k] = low, first

    def close(self, opening: int) -> int | None:
        """Where the argument opened by the parenthesis at ``opening`` ends (see parse_joiner)."""
        o = bisect_left(self.pos, opening)
        if o + 1 < len(self.pos) and self.low[o + 1] <= self.depth[o] - 1:
            return self.pos[self.first[o + 1]]
        if self.last_close > o:
            return self.pos[self.last_close]
        return None


def asks_for_words(question: str) -> bool:
    """Whether ``question`` asks for a choice or a yes or no (English question words and an
    ``... or ...?`` ending), whose answer a joiner must word: then a plan's ``join("$M")`` is
    not taken as the answer without it."""
    from ._checks import expected_kind

    return expected_kind(question) in ("choice", "yesno")


def answer_text(value: object) -> str:
    """A task's result as a final answer (when the plan named it with ``join("$M")``): text
    as it is (stripped), a whole float without its ``.0``, other floats to 12 significant
    digits, anything else as its observation text."""
    from ._result import observation_text

    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and not isinstance(value, bool):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return observation_text(value).strip()


class Joiner:
    """Decides with ``model`` whether a round's results answer the question.

    With ``constrained`` (the default) a model that supports grammars (llama.cpp) decodes its
    reply under :func:`~dagcall._grammar.joiner_grammar`.  With ``planner`` whose
    ``shared_prefix`` is on, the joiner's prompt continues that
    planner's conversation (its system prompt, the question, the plan) instead of a prompt
    of its own, so a prompt cache serves all but the results.
    """

    def __init__(
        self,
        model: Model,
        *,
        idle_timeout: float | None,
        planner: Planner | None = None,
        constrained: bool = True,
    ) -> None:
        self.model = model
        self.constrained = constrained
        self.idle_timeout = idle_timeout
        self.planner = planner

    def messages(
        self,
        question: str,
        rounds: Sequence[Round],
        records: dict[int, TaskRecord],
        *,
        may_replan: bool,
    ) -> list[Message]:
        """The messages asking to answer (or, when ``may_replan``, to ask for a new plan)."""
        from ._prompts import conversation_messages, joiner_messages

        planner = self.planner
        if planner is not None and planner.shared_prefix:
            return conversation_messages(
                question,
                list(planner.tools.values()),
                examples=planner.examples_for(question),
                rounds=rounds,
                records=records,
                ask="join",
                may_replan=may_replan,
                join_answer=planner.join_answer,
            )
        return joiner_messages(question, rounds, records, may_replan=may_replan)

    async def join(
        self,
        messages: Sequence[Message],
        rnd: Round,
        *,
        clock: Clock,
        meter: Meter,
        on_text: Callable[[str], None],
        record: Callable[[LLMCall], None],
        may_replan: bool = True,
        answers: Sequence[str] = (),
    ) -> JoinerDecision:
        """Stream the joiner's reply for round ``rnd``, fill in the round's decision, and
        return it; the call's usage goes to ``record`` however it ends.  ``may_replan`` says
        whether a ``Replan`` is allowed, and ``answers`` which answers are (the options the
        question lists); the grammar of a constrained joiner follows both."""
        from ._streams import ModelCall, model_error

        call = ModelCall(
            "joiner",
            self.model,
            messages,
            round_index=rnd.index,
            clock=clock,
            meter=meter,
            idle_timeout=self.idle_timeout,
        )
        options: dict[str, Any] = {}
        if self.constrained and self.model.supports_grammar:  # one Thought, one Action
            options["grammar"] = joiner_grammar(may_replan=may_replan, answers=answers)
        try:
            async with aclosing(call.deltas(**options)) as deltas:
                async for delta in deltas:
                    call.took(delta)
                    on_text(delta)
        except (UsageError, BudgetError):
            raise
        except Exception as exc:
            raise model_error(exc, self.model, "joiner")  # noqa: B904 - may be exc itself
        finally:
            record(call.record())
        decision = parse_joiner(call.text)
        rnd.joiner_output = call.text
        rnd.joiner_thought = decision.thought
        rnd.decision = decision.action
        if decision.action == "finish":
            rnd.answer = decision.text
        else:
            rnd.replan_reason = decision.text
        return decision
