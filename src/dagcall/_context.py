"""What a running tool can reach of its run: model calls that count in the run's usage."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from ._result import CallRole, LLMCall
from ._tokens import estimate_tokens
from .models import Completion, Message, Model, complete

__all__ = ["ToolContext", "call_model", "current_tool_context", "measured_call"]


@dataclass(frozen=True)
class ToolContext:
    """The task a tool call is running for, inside a compiler run."""

    task_id: int
    tool: str
    round: int
    t0: float  # the run's start, perf_counter seconds
    record: Callable[[LLMCall], None]


_current: ContextVar[ToolContext | None] = ContextVar("dagcall_tool_context", default=None)


def current_tool_context() -> ToolContext | None:
    """The running task's context, or ``None`` outside a compiler run."""
    return _current.get()


async def call_model(
    model: Model,
    messages: Sequence[Message],
    *,
    stop: Sequence[str] = (),
    max_tokens: int | None = None,
) -> Completion:
    """Call ``model`` from inside a tool; inside a run the call is added to the run's usage
    (role ``"tool"``, with the task's id), so a tool's LLM calls count in its cost."""
    ctx = _current.get()
    if ctx is None:
        return await complete(model, messages, stop=stop, max_tokens=max_tokens)
    started = time.perf_counter() - ctx.t0
    completion: Completion | None = None
    try:
        completion = await complete(model, messages, stop=stop, max_tokens=max_tokens)
        return completion
    finally:
        ended = time.perf_counter() - ctx.t0
        call = measured_call(
            "tool", model, ctx.round, messages, completion, started, ended, task_id=ctx.task_id
        )
        ctx.record(call)


def measured_call(
    role: CallRole,
    model: Model,
    round_index: int,
    messages: Sequence[Message],
    completion: Completion | None,
    started: float,
    ended: float,
    *,
    task_id: int | None = None,
) -> LLMCall:
    """The usage record of one model call made through :func:`complete` (``completion`` is
    ``None`` when it failed); token counts are estimated where the model reported none."""
    usage = completion.usage if completion is not None else None
    written = ""
    if completion is not None:
        written = completion.text + "".join(c.name + c.arguments for c in completion.tool_calls)
    return LLMCall(
        role=role,
        model=model.name,
        round=round_index,
        input_tokens=usage.input_tokens if usage else estimate_tokens(m.content for m in messages),
        output_tokens=usage.output_tokens if usage else estimate_tokens(written),
        started_at=started,
        ended_at=ended,
        time_to_first_token=completion.time_to_first_token if completion is not None else None,
        estimated=usage is None or usage.estimated,
        task_id=task_id,
    )
