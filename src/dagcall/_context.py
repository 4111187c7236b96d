"""What a running tool can reach of its run: its task, a cooperative cancellation signal, and
model calls that count in the run's usage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from ._errors import BudgetError
from ._result import CallRole, LLMCall
from ._tokens import estimate_tokens
from .models import Completion, Message, Model, TokenUsage, complete

__all__ = ["ToolContext", "call_model", "current_tool_context", "measured_call"]

#: How a call ended once it had been told to stop: ``"stopped"`` (it returned or raised within
#: its grace), ``"abandoned"`` (a worker thread was still running when the grace ran out),
#: ``"terminated"`` (its process was killed).  ``""`` while it has not been told to stop.
StopOutcome = Literal["", "stopped", "abandoned", "terminated"]


def _ignore_call(call: LLMCall) -> None:
    """The usage sink of a context with no run to record into."""


def _no_limit() -> int | None:
    """The token budget left of a context with no run (none)."""
    return None


class _CallControl:
    """The cancellation state of one tool call, shared by the scheduler, ``Tool.invoke`` and
    the tool's own thread (so it is thread-safe: an Event and plain attribute writes)."""

    __slots__ = ("event", "note", "outcome")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.outcome: StopOutcome = ""
        self.note = ""  # what became of the call, for its task's error message

    def stopped(self, outcome: StopOutcome, note: str = "") -> None:
        self.outcome = outcome
        self.note = note

    def cancel(self) -> None:
        self.event.set()


@dataclass(frozen=True)
class ToolContext:
    """The task a tool call is running for, inside a compiler run.

    :func:`current_tool_context` returns it from inside any tool a run calls, sync or async
    (in a ``isolation="process"`` tool it carries the ids, but its cancellation signal is
    never set: the process is terminated instead, and ``call_model`` usage there is not
    added to the run).

    Cancellation is cooperative for code Python cannot interrupt: when the task is cancelled
    (the run was cancelled or ran out of time) or its tool timeout expires, :attr:`cancelled`
    becomes true.  A sync tool that polls it, or calls :meth:`check_cancelled` between
    steps, or sleeps with :meth:`wait_cancelled`, stops promptly and is recorded as
    cancelled; one that does not is, after its ``cancel_grace``, recorded as abandoned,
    because its thread may still finish its side effects.
    """

    task_id: int
    tool: str
    round: int
    t0: float  # the run's start, perf_counter seconds
    record: Callable[[LLMCall], None] = _ignore_call
    #: LLM tokens the run may still spend (``max_tokens`` less what it used), or ``None``.
    tokens_left: Callable[[], int | None] = _no_limit
    _control: _CallControl = field(default_factory=_CallControl, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """Whether this call has been told to stop (task cancelled, or its timeout expired)."""
        return self._control.event.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`asyncio.CancelledError` if this call has been told to stop.

        ``CancelledError`` is a ``BaseException``, so a tool's ``except Exception`` does not
        swallow it; the task is then recorded as cancelled (or timed out)."""
        if self._control.event.is_set():
            raise asyncio.CancelledError(
                f"task {self.task_id} ({self.tool}) was told to stop: its run was cancelled "
                "or its timeout expired"
            )

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (``None``: forever) until this call is told to
        stop; true if it was.  A cancellable ``time.sleep`` for sync tools."""
        return self._control.event.wait(timeout)


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
        if ctx.tokens_left() is None:
            completion = await complete(model, messages, stop=stop, max_tokens=max_tokens)
            return completion
        metered = _Metered(ctx, model, messages)
        try:
            completion = await complete(
                model, messages, stop=stop, max_tokens=max_tokens, on_text=metered
            )
        except BudgetError:
            completion = metered.partial()  # recorded below: the run sees it went over
            raise
        return completion
    finally:
        ended = time.perf_counter() - ctx.t0
        call = measured_call(
            "tool", model, ctx.round, messages, completion, started, ended, task_id=ctx.task_id
        )
        ctx.record(call)


class _Metered:
    """Counts a tool's model call chunk by chunk against the run's ``max_tokens`` (as
    :func:`~dagcall.models.complete`'s ``on_text``), so a model that streams for ever inside a
    tool is stopped within one chunk of the limit too."""

    def __init__(self, ctx: ToolContext, model: Model, messages: Sequence[Message]) -> None:
        self.ctx = ctx
        self.model = model
        self.prompt = estimate_tokens(m.content for m in messages)
        self.streamed = 0
        self.parts: list[str] = []
        self.started = time.perf_counter()
        self.first: float | None = None

    def __call__(self, text: str) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.started
        self.parts.append(text)
        self.streamed += estimate_tokens(text)
        left = self.ctx.tokens_left()
        if left is not None and self.prompt + self.streamed > left:
            raise BudgetError(
                f"task {self.ctx.task_id} ({self.ctx.tool}): its model call "
                f"{self.model.name} went over the run's max_tokens while still streaming "
                "(it was stopped)",
                limit="max_tokens",
            )

    def partial(self) -> Completion:
        """What streamed before the call was stopped, with its metered token counts."""
        usage = TokenUsage(self.prompt, self.streamed, estimated=True)
        return Completion(
            "".join(self.parts), usage, time.perf_counter() - self.started, self.first
        )


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
        cached_input_tokens=usage.cached_input_tokens if usage else 0,
        cache_write_tokens=usage.cache_write_tokens if usage else 0,
    )
