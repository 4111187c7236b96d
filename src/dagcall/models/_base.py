"""The provider-neutral model interface: one required async streaming method."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._errors import UsageError

__all__ = [
    "Completion",
    "Message",
    "Model",
    "StopFilter",
    "TokenUsage",
    "ToolCall",
    "complete",
    "complete_with_tools",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A native tool call a model asked for: ``arguments`` is the JSON text it wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message sent to a model.

    With native tool calling, an assistant message may carry the ``tool_calls`` it made, and
    each result goes back as a ``"tool"`` message naming its call in ``tool_call_id``.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens a model call consumed, as the provider reported them.

    ``estimated`` is true when the numbers are an estimate (the provider reported none).
    ``cached_input_tokens`` of the input were read from a prompt cache (a provider's, or
    llama.cpp's saved state) and ``cache_write_tokens`` written to one; both are part of
    ``input_tokens``.
    """

    input_tokens: int
    output_tokens: int
    estimated: bool = False
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


class Model(ABC):
    """A chat model that streams text.

    Implement :meth:`stream` as an async generator: yield text deltas as they arrive and, at
    the end, at most one :class:`TokenUsage` with the call's token counts.  The output must not
    contain any of ``stop`` nor anything after it (:class:`StopFilter` does that for providers
    that ignore stop sequences).  Errors are raised as :class:`~dagcall.ModelError` subclasses.

    ``grammar`` is a GBNF grammar the reply must follow; it is passed only to models whose
    ``supports_grammar`` is true (llama.cpp models), and others may ignore it.
    """

    #: A short human-readable name such as ``"openai:gpt-4o-mini"``, used in usage records.
    name: str = "model"
    #: Whether the model can constrain its output to a GBNF grammar.
    supports_grammar: bool = False
    #: Whether the model implements :meth:`stream_tools` (native function calling).
    supports_tools: bool = False

    @abstractmethod
    def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,
    ) -> AsyncGenerator[str | TokenUsage, None]:
        """Stream the reply to ``messages`` as text deltas, then optionally a TokenUsage."""

    def stream_tools(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str | ToolCall | TokenUsage, None]:
        """Stream a reply that may call ``tools`` natively (each ``{"name", "description",
        "parameters"}``, parameters a JSON Schema): text deltas, then every :class:`ToolCall`
        the model made (several at once where it calls in parallel), then optionally a
        TokenUsage.  Only models whose ``supports_tools`` is true implement it."""
        raise UsageError(f"{self.name} has no native tool calls; use a JSON format in text")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole model reply gathered from a stream."""

    text: str
    usage: TokenUsage | None
    latency: float
    time_to_first_token: float | None
    tool_calls: tuple[ToolCall, ...] = ()


async def complete(
    model: Model,
    messages: Sequence[Message],
    *,
    stop: Sequence[str] = (),
    max_tokens: int | None = None,
    grammar: str | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Completion:
    """Run ``model`` to the end of its reply and return the text with its usage and timing;
    ``on_text`` sees each text delta as it arrives (and may raise to stop the call)."""
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage: TokenUsage | None = None
    options: dict[str, Any] = {"grammar": grammar} if grammar is not None else {}
    async for event in model.stream(messages, stop=stop, max_tokens=max_tokens, **options):
        if isinstance(event, TokenUsage):
            usage = event
        elif event:
            if first is None:
                first = time.perf_counter() - start
            parts.append(event)
            if on_text is not None:
                on_text(event)
    return Completion("".join(parts), usage, time.perf_counter() - start, first)


class StopFilter:
    """Cuts a text stream at the first stop sequence, however the stream is split.

    ``feed`` returns the text that is safe to emit now; a tail that could be the start of a
    stop sequence is held back until the next chunk decides it.  ``stopped`` turns true once a
    stop sequence was seen; everything after it is dropped.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False

    def feed(self, chunk: str) -> str:
        if self.stopped:
            return ""
        if not self._stop:
            return chunk
        text = self._held + chunk
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The held-back tail, at the end of the stream (it was not a stop sequence)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


async def complete_with_tools(
    model: Model,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int | None = None,
) -> Completion:
    """Run ``model.stream_tools`` to the end: the text, the tool calls, usage and timing."""
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    calls: list[ToolCall] = []
    usage: TokenUsage | None = None
    async for event in model.stream_tools(messages, tools, max_tokens=max_tokens):
        if isinstance(event, TokenUsage):
            usage = event
            continue
        if first is None and event:
            first = time.perf_counter() - start
        if isinstance(event, ToolCall):
            calls.append(event)
        elif event:
            parts.append(event)
    return Completion(
        "".join(parts), usage, time.perf_counter() - start, first, tool_calls=tuple(calls)
    )
