"""ScriptedModel: a public test double that streams scripted replies with realistic timing."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from .._errors import ScriptExhaustedError
from .._tokens import estimate_tokens, split_tokens
from ._base import Message, Model, StopFilter, TokenUsage

__all__ = ["ScriptedCall", "ScriptedModel"]

Reply = str | BaseException
Responder = Callable[[list[Message]], Reply | Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One call a ScriptedModel received, and what it replied (after stop sequences)."""

    messages: list[Message]
    stop: tuple[str, ...]
    reply: str
    grammar: str | None = None


class ScriptedModel(Model):
    """A model that replies from a script, so agents can be tested offline and deterministically.

    ``replies`` is either a list (call *n* gets item *n*) or a function of the messages that
    returns the reply (sync or async).  A reply that is an exception instance is raised instead,
    which simulates a failing provider.  Each reply streams token by token: the first after
    ``time_to_first_token`` seconds, the rest at ``tokens_per_second`` (``None`` streams as fast
    as the event loop allows, still one token per chunk).  Stop sequences cut the reply like a
    real provider; a grammar is recorded in ``calls`` (set ``supports_grammar`` to be given
    one), not enforced.  Calling it more often than scripted raises :class:`ScriptExhaustedError`;
    :meth:`assert_all_used` fails a test that left replies unused.  Token counts are estimates
    (``dagcall._tokens``).
    """

    def __init__(
        self,
        replies: Sequence[Reply] | Responder,
        *,
        time_to_first_token: float = 0.0,
        tokens_per_second: float | None = None,
        name: str = "scripted",
        supports_grammar: bool = False,
    ) -> None:
        if tokens_per_second is not None and tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive or None")
        if time_to_first_token < 0:
            raise ValueError("time_to_first_token must not be negative")
        self._replies: list[Reply] | None = None
        self._responder: Responder | None = None
        if callable(replies):
            self._responder = replies
        else:
            self._replies = list(replies)
        self.time_to_first_token = time_to_first_token
        self.tokens_per_second = tokens_per_second
        self.name = name
        self.supports_grammar = supports_grammar
        self.calls: list[ScriptedCall] = []
        self._next = 0

    @property
    def remaining(self) -> int | None:
        """Scripted replies not yet used (``None`` for a function-driven model)."""
        return None if self._replies is None else len(self._replies) - self._next

    def assert_all_used(self) -> None:
        """Raise AssertionError if scripted replies were left unused."""
        left = self.remaining
        if left:
            noun = "reply" if left == 1 else "replies"
            raise AssertionError(f"{self.name}: {left} scripted {noun} unused")

    async def _reply_for(self, messages: list[Message]) -> Reply:
        if self._responder is not None:
            reply = self._responder(messages)
            if inspect.isawaitable(reply):
                reply = await reply
            return reply
        if self._replies is None:  # pragma: no cover - set in __init__ when no responder
            raise RuntimeError("ScriptedModel has neither replies nor a responder")
        if self._next >= len(self._replies):
            raise ScriptExhaustedError(
                f"{self.name} was called {self._next + 1} times but has only "
                f"{len(self._replies)} scripted replies; add replies for the extra call",
                model=self.name,
            )
        reply = self._replies[self._next]
        self._next += 1
        return reply

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,
    ) -> AsyncGenerator[str | TokenUsage, None]:
        msgs = list(messages)
        reply = await self._reply_for(msgs)
        if isinstance(reply, BaseException):
            self.calls.append(ScriptedCall(msgs, tuple(stop), "", grammar))
            raise reply
        pieces = split_tokens(reply)
        if max_tokens is not None:
            pieces = pieces[:max_tokens]
        stopper = StopFilter(stop)
        sent: list[str] = []
        start = time.perf_counter()
        try:
            for i, piece in enumerate(pieces):
                due = self.time_to_first_token
                if self.tokens_per_second is not None:
                    due += i / self.tokens_per_second
                delay = start + due - time.perf_counter()
                await asyncio.sleep(max(0.0, delay))
                out = stopper.feed(piece)
                if out:
                    sent.append(out)
                    yield out
                if stopper.stopped:
                    break
            tail = stopper.flush()
            if tail:
                sent.append(tail)
                yield tail
        finally:
            self.calls.append(ScriptedCall(msgs, tuple(stop), "".join(sent), grammar))
        yield TokenUsage(
            input_tokens=estimate_tokens(m.content for m in msgs),
            output_tokens=estimate_tokens("".join(sent)),
            estimated=True,
        )
