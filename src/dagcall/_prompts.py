"""Rendering of the planner and joiner prompts from the template files in ``prompts/``.

The planner's system prompt depends only on the tools and examples, never on the question, so
it is a stable prefix that providers' prompt caches can reuse across questions and rounds.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from importlib import resources
from typing import Literal

from ._result import Round, TaskRecord, numeric_output, safe_text
from ._tools import BaseTool
from .models import Message

__all__ = [
    "conversation_messages",
    "fence_safe",
    "joiner_messages",
    "planner_messages",
    "render",
    "template",
]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@cache
def template(name: str) -> str:
    """The text of prompt template ``name`` (a file in ``dagcall/prompts``)."""
    return resources.files("dagcall.prompts").joinpath(name).read_text(encoding="utf-8")


def render(text: str, **values: str) -> str:
    """Fill ``{{name}}`` placeholders; every placeholder must be given, and only those."""
    names = set(_PLACEHOLDER.findall(text))
    if names != set(values):
        raise KeyError(f"template needs {sorted(names)}, got {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


@lru_cache(maxsize=64)
def planner_system(
    tools: tuple[BaseTool, ...], examples: str | None, join_answer: bool = False
) -> str:
    """The planner's system prompt; it depends only on the tools, the examples and whether
    the plan may name its answer (``join("$M")``), so it is built once per compiler
    configuration, not per question."""
    listing = "\n\n".join(f"{i}. {t.render()}" for i, t in enumerate(tools, 1))
    if examples is None:
        examples = template("planner_examples.md")
        if join_answer:
            examples = examples.rstrip("\n") + "\n" + template("planner_examples_join.md")
    elif examples:
        examples = "\n" + examples.strip() + "\n"
    rule = template("planner_join_answer.md").rstrip("\n") if join_answer else ""
    return render(template("planner_system.md"), tools=listing, examples=examples, join_rule=rule)


def planner_messages(
    question: str,
    tools: Sequence[BaseTool],
    *,
    examples: str | None = None,
    rounds: Sequence[Round] = (),
    records: dict[int, TaskRecord] | None = None,
    reason: str = "",
    first_id: int = 1,
    join_answer: bool = False,
) -> list[Message]:
    """Messages for a first plan, or for a replan when ``rounds`` holds the earlier rounds."""
    system = Message("system", planner_system(tuple(tools), examples, join_answer))
    if not rounds:
        return [system, Message("user", f"Question: {fence_safe(question)}")]
    user = render(
        template("planner_replan.md"),
        question=fence_safe(question),
        history=history(rounds, records or {}, with_joiner=True),
        reason=fence_safe(reason) or "(no reason given)",
        first_id=str(first_id),
    )
    return [system, Message("user", user)]


def joiner_messages(
    question: str,
    rounds: Sequence[Round],
    records: dict[int, TaskRecord],
    *,
    may_replan: bool,
) -> list[Message]:
    """Messages asking the joiner to answer (or, when allowed, to ask for a new plan)."""
    rule = (
        "or, only when the results are not enough and more tool calls would help:\n"
        "Action: Replan(<what is missing>)"
        if may_replan
        else "Replanning is not available: you must reply with Finish."
    )
    final = (
        ""
        if may_replan
        else "\nThis is the final round: answer now with Finish, from what the results support."
    )
    failed = [
        r
        for rnd in rounds[-1:]
        for i in rnd.task_ids
        if (r := records.get(i)) is not None and getattr(r.status, "value", r.status) == "failed"
    ]
    ranked = ranking(rounds, records)
    if ranked:
        final += "\n" + ranked
    if failed and may_replan:
        final += (
            "\nSome calls failed; their errors say why. If the answer needs them, reply "
            "Replan(...) saying what to call again and how, rather than guessing."
        )
    system = render(template("joiner_system.md"), replan_rule=rule)
    user = render(
        template("joiner_user.md"),
        question=fence_safe(question),
        history=history(rounds, records, with_joiner=False),
        final_note=final,
    )
    return [Message("system", system), Message("user", user)]


@lru_cache(maxsize=64)
def shared_system(tools: tuple[BaseTool, ...], examples: str | None, join_answer: bool) -> str:
    """The system prompt of the shared-prefix layout: the planner's, then the joiner's rules."""
    planner = planner_system(tools, examples, join_answer)
    return planner.rstrip("\n") + "\n" + template("shared_rules.md")


def conversation_messages(
    question: str,
    tools: Sequence[BaseTool],
    *,
    examples: str | None,
    rounds: Sequence[Round],
    records: dict[int, TaskRecord],
    ask: Literal["plan", "join"],
    may_replan: bool = True,
    join_answer: bool = False,
) -> list[Message]:
    """The shared-prefix layout: planner, joiner and replanner calls of one question are one
    conversation, each call's messages continuing the last one's.

    One system prompt (the planner's and the joiner's rules) and the question; then, for each
    round, the plan as the planner wrote it (an assistant turn), its results, the joiner's
    reply, and the request for a new plan.  ``ask="plan"`` ends with a request for a plan
    (``rounds`` are the earlier rounds, each joined); ``ask="join"`` with the last round's
    results and the request to answer.  So the joiner's prompt is the planner's prompt plus
    the plan plus the results: a prompt cache (llama.cpp's live context, a provider's cache)
    holds everything but the results, and only they are paid for again.
    """
    messages = [
        Message("system", shared_system(tuple(tools), examples, join_answer)),
        Message("user", f"Question: {fence_safe(question)}"),
    ]
    seen = 0
    for i, rnd in enumerate(rounds):
        messages.append(Message("assistant", fence_safe(rnd.plan).rstrip() or "(no plan)"))
        seen = max([seen, *rnd.task_ids])
        final = ask == "join" and i == len(rounds) - 1
        note = "Answer the question now, in the form given above."
        if final and not may_replan:
            note = (
                "This is the final round: answer now with Finish, from what the results "
                "support. Replanning is not available."
            )
        messages.append(
            Message(
                "user",
                render(template("shared_results.md"), results=results(rnd, records), ask=note),
            )
        )
        if final:
            break
        messages.append(Message("assistant", fence_safe(rnd.joiner_output).strip() or "-"))
        messages.append(
            Message(
                "user",
                render(
                    template("shared_replan.md"),
                    reason=fence_safe(rnd.replan_reason or "") or "(no reason given)",
                    first_id=str(seen + 1),
                ),
            )
        )
    return messages


def ranking(rounds: Sequence[Round], records: dict[int, TaskRecord]) -> str:
    """The numbers each tool returned, from highest to lowest, when a tool returned two or
    more (``city_population("B") = 52300, city_population("A") = 35100``): comparing
    numbers in text is where small models fail, and "which is highest", "is A more than
    B" are read off this line; the lowest is named again at its end."""
    by_tool: dict[str, list[tuple[float, str]]] = {}
    for rnd in rounds:
        for task_id in rnd.task_ids:
            rec = records.get(task_id)
            number = None if rec is None else numeric_output(rec)
            if rec is None or number is None:
                continue
            by_tool.setdefault(rec.tool, []).append((number, rec.call))
    lines = []
    for tool, values in by_tool.items():
        by_call = {call: v for v, call in values}  # a call repeated across rounds: once
        if len(by_call) < 2:
            continue
        ordered = sorted(by_call.items(), key=lambda kv: -kv[1])
        text = ", ".join(f"{fence_safe(call)} = {_number(v)}" for call, v in ordered[:8])
        low_call, low = ordered[-1]  # named again: "which is lowest" is read off the end,
        # and small models take the first of a list (the end may also be cut off)
        lowest = f"{fence_safe(low_call)} = {_number(low)}"
        lines.append(f"{fence_safe(tool)} results, highest first: {text}; the lowest: {lowest}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def results(rnd: Round, records: dict[int, TaskRecord]) -> str:
    """One round's calls with their observations, and its plan problems, delimited as data."""
    lines: list[str] = []
    for task_id in rnd.task_ids:
        rec = records[task_id]
        lines.append(f"{fence_safe(rec.id)}. {fence_safe(rec.call)}")
        lines.append(observation_element(rec))
    for err in rnd.errors:
        if getattr(err, "task_id", None) is None:
            lines.append(f"Plan problem: {fence_safe(err.message)}")
    return "\n".join(lines) or "(the plan made no calls)"


def history(rounds: Iterable[Round], records: dict[int, TaskRecord], *, with_joiner: bool) -> str:
    """The rounds so far: each plan's thoughts, calls and observations, delimited as data.

    Every piece of model-written text (thoughts, calls, plan problems, the joiner's output)
    goes through :func:`fence_safe` like the observations do, so that nothing but
    :func:`observation_element` writes an observation tag.
    """
    blocks: list[str] = []
    for rnd in rounds:
        lines = [f"Round {rnd.index + 1}:"]
        for task_id in rnd.task_ids:
            rec = records[task_id]
            if rec.thought:
                lines.append(f"Thought: {fence_safe(rec.thought)}")
            lines.append(f"{fence_safe(rec.id)}. {fence_safe(rec.call)}")
            lines.append(observation_element(rec))
        for err in rnd.errors:
            if getattr(err, "task_id", None) is None:
                lines.append(f"Plan problem: {fence_safe(err.message)}")
        if rnd.thought:
            lines.append(f"Thought: {fence_safe(rnd.thought)}")
        if with_joiner and rnd.joiner_output:
            lines.append(f"Joiner: {fence_safe(rnd.joiner_output).strip()}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def observation_element(rec: TaskRecord) -> str:
    """A task's observation as ``<observation task="N" status="...">text</observation>``: the
    text cannot close the element or open another (see :func:`fence_safe`), and the
    attributes cannot leave their quotes."""
    status = getattr(rec.status, "value", rec.status)
    return (
        f'<observation task="{_attribute(rec.id)}" status="{_attribute(status)}">'
        f"{fence_safe(rec.observation)}</observation>"
    )


# -- keeping tool output and model text inside the observation fences ---------------------

# Look-alikes of "<" and "/" (besides those NFKC maps to them, found below).
_LESS_THAN = "<\u02c2\u1438\u2039\u2329\u27e8\u276c\u276e\u2770\u29fc\u3008\u00ab\u300a"
_SLASH = "/\u2044\u2215\u2571\u29f8"
# Characters that show nothing or only change the one before: format characters (Cf, e.g.
# zero-width space, joiners, bidirectional controls, tags), combining marks, variation
# selectors and blank fillers.  They may sit anywhere inside a tag-like string.
_INVISIBLE = (
    "\u00ad\u0300-\u036f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160"
    "\u17b4\u17b5\u180b-\u180f\u1ab0-\u1aff\u1dc0-\u1dff\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u20d0-\u20ff\u2800\u3164\ufe00-\ufe0f\ufe20-\ufe2f\ufeff\uffa0"
    "\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e007f\U000e0100-\U000e01ef"
)
# Letters that read as those of "observation" without being them: Cyrillic, Greek, Armenian
# and small-capital look-alikes (NFKC equivalents such as full-width and mathematical
# letters are added by _tag_pattern).
_LOOK_ALIKES = {
    "o": "\u043e\u041e\u03bf\u039f\u0585\u0555\u1d0f",
    "b": "\u0392\u0412\u0299\u044c\u042c",
    "s": "\u0455\u0405\ua731",
    "e": "\u0435\u0415\u0395\u03b5\u1d07",
    "r": "\u0433\u0280",
    "v": "\u0475\u0474\u03bd\u1d20",
    "a": "\u0430\u0410\u0391\u03b1\u1d00",
    "t": "\u0442\u0422\u03a4\u03c4\u1d1b",
    "i": "\u0130\u0131\u0456\u0406\u0399\u03b9\u026a\u04cf\u04c0",
    "n": "\u0578\u0274\u039d",
}
# The blocks that hold every character whose NFKC form is one ASCII letter or "<" or "/"
# (tests/test_observation_fences.py checks this against all of Unicode).
_COMPATIBILITY_BLOCKS = (
    (0x0000, 0x0300),
    (0x1D00, 0x1DC0),
    (0x2000, 0x2500),
    (0x2C00, 0x2C80),
    (0xFE50, 0xFE70),
    (0xFF00, 0xFFF0),
    (0x1D400, 0x1D800),
    (0x1F100, 0x1F200),
)


@cache
def _compatibility_forms() -> dict[str, str]:
    """For each ASCII letter, "<" and "/": every character NFKC maps to it (case-folded)."""
    forms: dict[str, list[str]] = {}
    for start, end in _COMPATIBILITY_BLOCKS:
        for point in range(start, end):
            char = chr(point)
            folded = unicodedata.normalize("NFKC", char).casefold()
            if len(folded) == 1 and folded.isascii() and folded != char:
                forms.setdefault(folded, []).append(char)
    return {key: "".join(chars) for key, chars in forms.items()}


@cache
def _tag_pattern() -> re.Pattern[str]:
    forms = _compatibility_forms()

    def cls(chars: str) -> str:
        return "[" + "".join(re.escape(c) for c in sorted(set(chars))) + "]"

    def letter(c: str) -> str:
        return cls(c + c.upper() + forms.get(c, "") + _LOOK_ALIKES[c])

    gap = f"[\\s{_INVISIBLE}]*+"
    name = gap.join(letter(c) for c in "observation")
    less_than = cls(_LESS_THAN + forms.get("<", ""))
    slashes = "".join(re.escape(c) for c in _SLASH + forms.get("/", ""))
    # A "<" look-alike, then any spacing, invisible characters and "/" look-alikes, then the
    # letters of "observation" in any case or look-alike, with spacing or invisible
    # characters allowed between them.
    return re.compile(f"({less_than})(?=[\\s{_INVISIBLE}{slashes}]*+{name})")


def fence_safe(text: object) -> str:
    """``text`` made safe to put inside or next to an observation element.

    Anything that could read as an observation tag -- a ``<`` (or a look-alike such as the
    full-width ``＜``), then any spacing, invisible characters (zero-width, format, combining)
    and ``/`` (or look-alikes), then "observation" in any case, in look-alike letters
    (full-width, mathematical, Cyrillic, Greek ...) and with spacing or invisible characters
    between its letters -- gets a backslash after its ``<``, so ``</observation>``
    becomes ``<\\/observation>`` and ``<Observation task="9">`` becomes
    ``<\\Observation task="9">``; nothing else changes, except that lone surrogates become
    U+FFFD.  Values that are not strings are rendered by ``observation_text`` first.
    """
    return _tag_pattern().sub(_escape_tag, safe_text(text, None))


def _escape_tag(match: re.Match[str]) -> str:
    return match.group(1) + "\\"


def _attribute(value: object) -> str:
    """An attribute value that stays inside its double quotes and on one line."""
    text = " ".join(safe_text(value, 200).split())
    return fence_safe(html.escape(text, quote=True))
