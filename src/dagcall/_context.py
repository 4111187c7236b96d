"""What a running tool can reach of its run: model calls that count in the run's usage."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from ._result import LLMCall
from ._tokens import estimate_tokens
from .models import Completion, Message, Model, complete

__all__ = ["ToolContext", "call_model", "current_tool_context"]


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
    try:
        completion = await complete(model, messages, stop=stop, max_tokens=max_tokens)
    except BaseException:
        ctx.record(_call(ctx, model, messages, "", None, started, None))
        raise
    ctx.record(
        _call(
            ctx,
            model,
            messages,
            completion.text,
            completion,
            started,
            completion.time_to_first_token,
        )
    )
    return completion


def _call(
    ctx: ToolContext,
    model: Model,
    messages: Sequence[Message],
    text: str,
    completion: Completion | None,
    started: float,
    first: float | None,
) -> LLMCall:
    usage = completion.usage if completion is not None else None
    return LLMCall(
        role="tool",
        model=model.name,
        round=ctx.round,
        input_tokens=usage.input_tokens if usage else estimate_tokens(m.content for m in messages),
        output_tokens=usage.output_tokens if usage else estimate_tokens(text),
        started_at=started,
        ended_at=time.perf_counter() - ctx.t0,
        time_to_first_token=first,
        estimated=usage is None or usage.estimated,
        task_id=ctx.task_id,
    )
