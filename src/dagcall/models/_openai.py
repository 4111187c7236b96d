"""OpenAIModel: the OpenAI API, or any OpenAI-compatible server, through the official SDK."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import httpx2
import openai
from openai import AsyncOpenAI, AsyncStream, omit
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from .._errors import ModelStreamError, UsageError
from .._tokens import estimate_tokens
from ._base import Message, TokenUsage, ToolCall
from ._provider import HTTPModel, SDKErrors, StreamState

__all__ = ["OpenAIModel"]

#: The most stop sequences the OpenAI API accepts; any further ones are applied locally only.
MAX_API_STOP_SEQUENCES = 4

_OPENAI_HOST = "api.openai.com"


def _to_openai(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        if message.tool_calls:
            return {
                "role": "assistant",
                "content": message.content or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in message.tool_calls
                ],
            }
        return {"role": "assistant", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "tool":
        if not message.tool_call_id:
            raise UsageError("a tool message needs the tool_call_id of the call it answers")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    raise UsageError(
        f"message role must be 'system', 'user', 'assistant' or 'tool', not {message.role!r}"
    )


def _chunk_tool_calls(chunk: object, calls: dict[int, dict[str, str]]) -> None:
    """Add the first choice's tool-call deltas to ``calls`` (by index: id, name, arguments)."""
    for choice in getattr(chunk, "choices", None) or ():
        if getattr(choice, "index", 0) not in (0, None):
            continue
        for delta in getattr(getattr(choice, "delta", None), "tool_calls", None) or ():
            index = getattr(delta, "index", None)
            slot = calls.setdefault(index if isinstance(index, int) else len(calls), {})
            if getattr(delta, "id", None):
                slot["id"] = str(delta.id)
            function = getattr(delta, "function", None)
            name = getattr(function, "name", None)
            arguments = getattr(function, "arguments", None)
            if name:
                slot["name"] = slot.get("name", "") + str(name)
            if arguments:
                slot["arguments"] = slot.get("arguments", "") + str(arguments)


def _chunk_text(chunk: object) -> str:
    """The text of the first choice's delta (``""`` for usage-only and role-only chunks)."""
    parts: list[str] = []
    for choice in getattr(chunk, "choices", None) or ():
        if getattr(choice, "index", 0) not in (0, None):
            continue
        content = getattr(getattr(choice, "delta", None), "content", None)
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


def _chunk_usage(chunk: object) -> TokenUsage | None:
    usage = getattr(chunk, "usage", None)
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        # OpenAI caches long prompts' prefixes by itself and says how much it read back.
        cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)
        if not isinstance(cached, int) or isinstance(cached, bool) or not 0 <= cached <= prompt:
            cached = 0
        return TokenUsage(input_tokens=prompt, output_tokens=completion, cached_input_tokens=cached)
    return None


@dataclass
class _ChunkState(StreamState):
    """What the chunks of one chat completions stream said, apart from their text."""

    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    reported: TokenUsage | None = None

    def read(self, event: Any) -> str:
        text = _chunk_text(event)
        _chunk_tool_calls(event, self.calls)
        self.reported = _chunk_usage(event) or self.reported
        self.finished = self.finished or any(c.finish_reason for c in event.choices or ())
        return text

    def tool_calls(self, model: str) -> Iterator[ToolCall]:
        for index in sorted(self.calls):
            call = self.calls[index]
            if not call.get("name"):
                raise ModelStreamError(
                    f"{model}: the stream sent a tool call without a name", model=model
                )
            yield ToolCall(
                call.get("id") or f"call_{index}", call["name"], call.get("arguments", "")
            )

    def usage(self, messages: Sequence[Message], text: str, calls: list[ToolCall]) -> TokenUsage:
        if self.reported is not None:
            return self.reported
        written = text + "".join(c.name + c.arguments for c in calls)
        return TokenUsage(
            input_tokens=estimate_tokens(m.content for m in messages),
            output_tokens=estimate_tokens(written),
            estimated=True,
        )


class OpenAIModel(HTTPModel):
    """A chat model served by the OpenAI API or an OpenAI-compatible server.

    ``OpenAIModel("gpt-4o-mini")`` uses the OpenAI API with the key from ``OPENAI_API_KEY``;
    ``OpenAIModel("llama3", base_url="http://127.0.0.1:8000/v1")`` any compatible server
    (vLLM, Ollama, llama.cpp's server), which need no key.

    The model makes one HTTP client per event loop and reuses it for every call on that loop;
    it is closed when the loop shuts down or by :meth:`aclose`, so a model can be shared
    across event loops.  To share one connection pool of your own instead, pass ``client``
    (an ``openai.AsyncOpenAI``); it is then used as is, with its own base URL, key, retries
    and timeout, and you close it.

    Failed requests are retried by the SDK (``max_retries``, with backoff that honours
    ``Retry-After`` of up to 60 s; an answer asking for a longer wait is not retried) before
    the stream starts; once text flows, failures are not retried.  Errors say how many
    requests were made, and neither they nor their ``__cause__`` (a scrubbed
    :class:`~dagcall.models._http.ProviderError`, never the SDK's exception) hold the key.
    Up to four stop sequences are sent to the server, and all of them are also applied
    locally, as some servers ignore ``stop``.  ``temperature=None`` leaves the server's
    default; ``extra_body`` adds provider-specific request fields.  Set
    ``stream_usage=False`` for servers that reject ``stream_options``; token counts are then
    estimated.
    """

    provider: ClassVar[str] = "openai"
    label: ClassVar[str] = "OpenAI"
    example: ClassVar[str] = "gpt-4o-mini"
    key_env: ClassVar[str] = "OPENAI_API_KEY"
    compatible: ClassVar[str] = "a local OpenAI-compatible server"
    official_host: ClassVar[str] = _OPENAI_HOST
    client_class: ClassVar[str] = "AsyncOpenAI"
    errors: ClassVar[SDKErrors] = SDKErrors(
        status=openai.APIStatusError,
        timeout=openai.APITimeoutError,
        connection=openai.APIConnectionError,
        api=openai.APIError,
    )
    finish_marker: ClassVar[str] = "a finish_reason"
    event_word: ClassVar[str] = "chunk"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: AsyncOpenAI | None = None,
        max_retries: int = 3,
        timeout: float = 60.0,
        temperature: float | None = 0.0,
        stream_usage: bool = True,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            model,
            base_url=base_url,
            api_key=api_key,
            client=client,
            max_retries=max_retries,
            timeout=timeout,
        )
        self.temperature = temperature
        self.stream_usage = stream_usage
        self.extra_body: dict[str, Any] | None = dict(extra_body) if extra_body else None

    # -- the wire mapping -------------------------------------------------------------------------
    @staticmethod
    def _client_secrets(client: Any) -> list[str]:
        return [client.api_key] if isinstance(client.api_key, str) else []

    def _http_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        return openai.DefaultAsyncHttpxClient(**kwargs)

    def _build_client(self, http_client: httpx2.AsyncClient) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=self.max_retries,
            timeout=self.timeout,
            http_client=http_client,
        )

    def _prepare(self, messages: Sequence[Message]) -> list[ChatCompletionMessageParam]:
        return [_to_openai(m) for m in messages]

    def _new_state(self) -> StreamState:
        return _ChunkState()

    def _tool_specs(self, tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Native function calling (``tools`` with ``parallel_tool_calls``)."""
        return [
            {
                "type": "function",
                "function": {
                    "name": str(t["name"]),
                    "description": str(t.get("description", "")),
                    "parameters": dict(t.get("parameters") or {"type": "object"}),
                },
            }
            for t in tools
        ]

    async def _create(
        self,
        client: AsyncOpenAI,
        prepared: list[ChatCompletionMessageParam],
        stops: list[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None,
    ) -> AsyncStream[ChatCompletionChunk]:
        # OpenAI's own API wants max_completion_tokens (reasoning models reject max_tokens);
        # compatible servers widely understand only max_tokens.
        official = client.base_url.host == _OPENAI_HOST
        return await client.chat.completions.create(
            model=self.model,
            messages=prepared,
            stream=True,
            stop=stops[:MAX_API_STOP_SEQUENCES] or omit,
            max_tokens=omit if max_tokens is None or official else max_tokens,
            max_completion_tokens=omit if max_tokens is None or not official else max_tokens,
            temperature=omit if self.temperature is None else self.temperature,
            stream_options={"include_usage": True} if self.stream_usage else omit,
            tools=cast("list[ChatCompletionToolParam]", tools) if tools else omit,
            parallel_tool_calls=True if tools else omit,
            extra_body=self.extra_body,
        )

    def _not_found(self, url: str) -> str:
        return (
            f"{url} has no model {self.model!r} or no chat completions endpoint (HTTP 404); "
            "check the model name and that base_url ends in /v1"
        )
