"""Rendering of the planner and joiner prompts from the template files in ``prompts/``.

The planner's system prompt depends only on the tools and examples, never on the question, so
it is a stable prefix that providers' prompt caches can reuse across questions and rounds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from importlib import resources

from ._result import Round, TaskRecord
from ._tools import Tool
from .models import Message

__all__ = ["joiner_messages", "planner_messages", "render", "template"]

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
def planner_system(tools: tuple[Tool, ...], examples: str | None) -> str:
    """The planner's system prompt; it depends only on the tools and examples, so it is
    built once per compiler configuration, not per question."""
    listing = "\n\n".join(f"{i}. {t.render()}" for i, t in enumerate(tools, 1))
    if examples is None:
        examples = template("planner_examples.md")
    elif examples:
        examples = "\n" + examples.strip() + "\n"
    return render(template("planner_system.md"), tools=listing, examples=examples)


def planner_messages(
    question: str,
    tools: Sequence[Tool],
    *,
    examples: str | None = None,
    rounds: Sequence[Round] = (),
    records: dict[int, TaskRecord] | None = None,
    reason: str = "",
    first_id: int = 1,
) -> list[Message]:
    """Messages for a first plan, or for a replan when ``rounds`` holds the earlier rounds."""
    system = Message("system", planner_system(tuple(tools), examples))
    if not rounds:
        return [system, Message("user", f"Question: {question}")]
    user = render(
        template("planner_replan.md"),
        question=question,
        history=history(rounds, records or {}, with_joiner=True),
        reason=reason or "(no reason given)",
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
    system = render(template("joiner_system.md"), replan_rule=rule)
    user = render(
        template("joiner_user.md"),
        question=question,
        history=history(rounds, records, with_joiner=False),
        final_note=final,
    )
    return [Message("system", system), Message("user", user)]


def history(rounds: Iterable[Round], records: dict[int, TaskRecord], *, with_joiner: bool) -> str:
    """The rounds so far: each plan's thoughts, calls and observations, delimited as data."""
    blocks: list[str] = []
    for rnd in rounds:
        lines = [f"Round {rnd.index + 1}:"]
        for task_id in rnd.task_ids:
            rec = records[task_id]
            if rec.thought:
                lines.append(f"Thought: {rec.thought}")
            lines.append(f"{rec.id}. {rec.call}")
            lines.append(observation_element(rec))
        for err in rnd.errors:
            if getattr(err, "task_id", None) is None:
                lines.append(f"Plan problem: {err.message}")
        if rnd.thought:
            lines.append(f"Thought: {rnd.thought}")
        if with_joiner and rnd.joiner_output:
            lines.append(f"Joiner: {rnd.joiner_output.strip()}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def observation_element(rec: TaskRecord) -> str:
    text = rec.observation.replace("</observation", "<\\/observation")
    return f'<observation task="{rec.id}" status="{rec.status.value}">{text}</observation>'
