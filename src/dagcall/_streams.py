"""What the planner and the joiner share: one streamed model call, guarded against a silent
model, metered against the token budget, and recorded as an :class:`~dagcall.LLMCall`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any

from ._budget import Meter
from ._errors import ModelError, ModelStreamError
from ._result import CallRole, LLMCall
from ._tokens import estimate_tokens
from .models import Message, Model, TokenUsage

__all__ = ["ModelCall", "idle_guard", "model_error"]

Clock = Callable[[], float]


class ModelCall:
    """One streamed call of the planner or joiner: :meth:`deltas` streams its text (guarded by
    ``llm_idle_timeout`` and metered), and :meth:`record` gives its usage record."""

    def __init__(
        self,
        role: CallRole,
        model: Model,
        messages: Sequence[Message],
        *,
        round_index: int,
        clock: Clock,
        meter: Meter,
        idle_timeout: float | None,
    ) -> None:
        self.role: CallRole = role
        self.model = model
        self.messages = messages
        self.round_index = round_index
        self.clock = clock
        self.meter = meter
        self.idle_timeout = idle_timeout
        self.parts: list[str] = []  # everything streamed
        self.usage: TokenUsage | None = None
        self.started = clock()
        self.first: float | None = None

    async def deltas(self, **options: Any) -> AsyncGenerator[str, None]:
        """The reply's text deltas (``options`` go to ``model.stream``); the consumer calls
        :meth:`took` with each one it uses."""
        stream = idle_guard(
            self.model.stream(self.messages, **options), self.idle_timeout, self.model, self.role
        )
        async with aclosing(stream) as events:
            async for event in events:
                if isinstance(event, TokenUsage):
                    self.usage = event
                elif event:
                    yield event

    def took(self, delta: str) -> None:
        """Count a delta the consumer used: its first-token time, the text, the token meter
        (which raises BudgetError past ``max_tokens``)."""
        if self.first is None:
            self.first = self.clock() - self.started
        self.parts.append(delta)
        self.meter(delta)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def record(self) -> LLMCall:
        """The call's usage record: the provider's counts, else the metered or estimated ones."""
        usage = self.meter.usage(self.usage)
        estimated = usage is None or usage.estimated
        if usage is None:
            usage = TokenUsage(
                input_tokens=estimate_tokens(m.content for m in self.messages),
                output_tokens=estimate_tokens(self.text),
            )
        return LLMCall(
            role=self.role,
            model=self.model.name,
            round=self.round_index,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            started_at=self.started,
            ended_at=self.clock(),
            time_to_first_token=self.first,
            estimated=estimated,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )


async def idle_guard(
    stream: AsyncGenerator[str | TokenUsage, None],
    idle: float | None,
    model: Model,
    role: str,
) -> AsyncGenerator[str | TokenUsage, None]:
    """The model's stream, failing with ModelStreamError when it sends nothing for ``idle`` s.

    One timer per stream, re-armed lazily when it fires (a chunk costs a clock read, not a
    timeout scope); it cancels only while the stream itself is being awaited, so time the
    consumer spends between chunks is never counted against the model.
    """
    async with aclosing(stream):
        if idle is None:
            async for event in stream:
                yield event
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - an async generator runs inside a task
        last = loop.time()
        waiting = False
        fired = False
        handle: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal handle, fired
            due = last + idle
            if waiting and loop.time() >= due:
                fired = True
                task.cancel()
            else:
                handle = loop.call_at(max(due, loop.time() + idle / 10), check)

        handle = loop.call_at(last + idle, check)
        try:
            while True:
                last = loop.time()
                waiting = True
                try:
                    event = await anext(stream)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if fired and task.uncancel() == 0:
                        raise ModelStreamError(
                            f"the {role} model {model.name} sent nothing for {idle:g} s and "
                            "was given up (llm_idle_timeout)",
                            model=model.name,
                        ) from None
                    raise
                finally:
                    waiting = False
                if fired:  # the stream swallowed our cancellation and went on: take it back
                    fired = False
                    task.uncancel()
                yield event
        finally:
            if handle is not None:
                handle.cancel()


def model_error(exc: Exception, model: Model, role: str) -> ModelError:
    """``exc`` as a ModelError: itself if it is one (its cause chain untouched: raise it as is,
    never ``from exc``, which would make it its own cause), else a ModelError caused by it."""
    if isinstance(exc, ModelError):
        return exc
    error = ModelError(
        f"the {role} model {model.name} failed: {type(exc).__name__}: {exc}", model=model.name
    )
    error.__cause__ = exc
    return error
