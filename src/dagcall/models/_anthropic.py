"""AnthropicModel: Claude models on the Anthropic Messages API, through the official SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import anthropic
import httpx2
from anthropic import AsyncAnthropic, AsyncStream, omit
from anthropic.types import (
    AssistantMessageParam,
    MessageParam,
    RawMessageStreamEvent,
    ToolParam,
    UserMessageParam,
)

from .._errors import UsageError
from .._tokens import estimate_tokens
from ._base import Message, TokenUsage, ToolCall
from ._http import retry_refused as _refused
from ._provider import HTTPModel, SDKErrors, StreamState

__all__ = ["AnthropicModel"]

#: Sent as the first user turn when the conversation has none (the API needs one).
PLACEHOLDER_USER_TURN = "Continue."

_ANTHROPIC_HOST = "api.anthropic.com"
#: Input token counts in a ``usage`` object; their sum is the request's input.
_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
#: Request fields that the Messages API (version 2026-10-21, sent by SDK 2.x) refuses.
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


def _blocks(message: Message) -> list[dict[str, Any]]:
    """The content blocks of one message (text, tool_use or tool_result)."""
    if message.role == "tool":
        if not message.tool_call_id:
            raise UsageError("a tool message needs the tool_call_id of the call it answers")
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content or "(empty)",
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {"_raw": call.arguments}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _to_anthropic(messages: Sequence[Message]) -> tuple[str, list[MessageParam]]:
    """The system prompt, and the conversation as the Messages API wants it.

    System messages are joined into the ``system`` parameter.  User and assistant messages
    keep their order; consecutive ones of the same role are merged into one turn, so roles
    alternate, and the conversation starts with a user turn.  Blank messages are left out
    (the API refuses them), as is trailing whitespace of a final assistant turn.  Native tool
    calls become ``tool_use`` blocks of the assistant turn and tool results ``tool_result``
    blocks of the next user turn.
    """
    system: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for message in messages:
        role: str = message.role
        if role not in ("system", "user", "assistant", "tool"):
            raise UsageError(
                f"message role must be 'system', 'user', 'assistant' or 'tool', not {role!r}"
            )
        if role == "system":
            if message.content.strip():
                system.append(message.content)
            continue
        blocks = _blocks(message)
        if not blocks:
            continue
        role = "user" if role == "tool" else role
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    if not turns or turns[0][0] != "user":
        turns.insert(0, ("user", [{"type": "text", "text": PLACEHOLDER_USER_TURN}]))
    payload: list[MessageParam] = []
    for i, (role, blocks) in enumerate(turns):
        last = i == len(turns) - 1
        if all(b["type"] == "text" for b in blocks):  # plain text, as a string
            content = "\n\n".join(b["text"] for b in blocks)
            if role == "user":
                payload.append(UserMessageParam(role="user", content=content))
            else:
                text = content.rstrip() if last else content
                payload.append(AssistantMessageParam(role="assistant", content=text))
        else:
            payload.append(cast(MessageParam, {"role": role, "content": blocks}))
    return "\n\n".join(system), payload


#: Marks the end of a prefix for the API's prompt cache (kept five minutes after each use).
_EPHEMERAL = {"type": "ephemeral"}


def _cache_breakpoints(
    system: str, payload: list[MessageParam], tools: list[dict[str, Any]] | None
) -> tuple[Any, list[MessageParam], list[dict[str, Any]] | None]:
    """The request with prompt-cache breakpoints (three of the API's four): after the tools,
    after the system prompt, and after the last message.  The API caches the prefix up to each
    breakpoint; a later call whose prompt continues this one (the joiner after the planner, a
    replan) reads it back at a tenth of the input price, and a prefix shorter than the
    model's minimum (1,024 tokens or more) is just not cached."""
    if tools:
        tools = [*tools[:-1], {**tools[-1], "cache_control": _EPHEMERAL}]
    system_param: Any = (
        [{"type": "text", "text": system, "cache_control": _EPHEMERAL}] if system else omit
    )
    if payload:
        last: dict[str, Any] = dict(payload[-1])
        content = last["content"]
        blocks: list[Any] = (
            [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        )
        if blocks:
            blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
            last["content"] = blocks
        payload = [*payload[:-1], cast(MessageParam, last)]
    return system_param, payload, tools


def _field(obj: object, name: str) -> int | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class _EventState(StreamState):
    """What the events of one Messages stream said, apart from their text."""

    inputs: dict[str, int] = field(default_factory=dict)  # _INPUT_FIELDS that were reported
    output_tokens: int | None = None
    finished: bool = False  # message_stop arrived (or we stopped at a stop sequence)
    tool_uses: dict[int, list[str]] = field(default_factory=dict)  # index: id, name, JSON

    def read(self, event: RawMessageStreamEvent) -> str:
        if event.type == "content_block_delta":
            if event.delta.type == "input_json_delta" and event.index in self.tool_uses:
                self.tool_uses[event.index][2] += event.delta.partial_json
            return event.delta.text if event.delta.type == "text_delta" else ""
        if event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                self.tool_uses[event.index] = [block.id, block.name, ""]
        elif event.type == "message_start":
            self._note_inputs(event.message.usage)
        elif event.type == "message_delta":
            # Counts here are cumulative: output always, input fields when reported.
            self._note_inputs(event.usage)
            self.output_tokens = _field(event.usage, "output_tokens")
        elif event.type == "message_stop":
            self.finished = True
        return ""

    def _note_inputs(self, usage: object) -> None:
        for name in _INPUT_FIELDS:
            count = _field(usage, name)
            if count is not None:
                self.inputs[name] = count

    @property
    def input_tokens(self) -> int | None:
        return sum(self.inputs.values()) if "input_tokens" in self.inputs else None

    def tool_calls(self, model: str) -> Iterator[ToolCall]:
        for i in sorted(self.tool_uses):
            call_id, name, arguments = self.tool_uses[i]
            yield ToolCall(call_id, name, arguments or "{}")

    def usage(self, messages: Sequence[Message], text: str, calls: list[ToolCall]) -> TokenUsage:
        if self.input_tokens is not None and self.output_tokens is not None:
            return TokenUsage(
                self.input_tokens,
                self.output_tokens,
                cached_input_tokens=self.inputs.get("cache_read_input_tokens", 0),
                cache_write_tokens=self.inputs.get("cache_creation_input_tokens", 0),
            )
        # we stopped reading before the counts, or the server sent none
        return TokenUsage(
            input_tokens=self.input_tokens
            if self.input_tokens is not None
            else estimate_tokens(m.content for m in messages),
            output_tokens=estimate_tokens(text),
            estimated=True,
        )


class AnthropicModel(HTTPModel):
    """A Claude model on the Anthropic Messages API, or on an Anthropic-compatible server.

    ``AnthropicModel("claude-sonnet-4-5")`` uses the key from ``ANTHROPIC_API_KEY``;
    ``AnthropicModel("m", base_url="http://127.0.0.1:8080")`` a compatible server, which needs
    no key (the SDK adds ``/v1/messages`` to ``base_url``).

    System messages become the ``system`` parameter; user and assistant messages are merged
    so that roles alternate, starting with the user.  ``max_tokens`` (required by the API)
    is the default reply limit; a call's own ``max_tokens`` overrides it.  Stop sequences are
    sent as ``stop_sequences`` and also applied locally.  Token counts come from the stream:
    input from ``message_start`` (cache reads and writes included), output from the last
    ``message_delta``.

    ``temperature`` is not sent by default: the API version that the SDK (2.x) speaks refuses
    sampling parameters, even at their default values.  Set it only for a compatible server
    that still takes one; it is then sent in the request body.

    The model makes one HTTP client per event loop, reused for every call on that loop and
    closed when the loop shuts down or by :meth:`aclose`; pass your own ``client`` (an
    ``anthropic.AsyncAnthropic``) to share a pool of your own, used as is, with its own base
    URL, key, retries and timeout, and closed by you.  Failed requests are retried by the SDK
    (``max_retries``, honouring ``retry-after`` of up to 60 s; an answer asking for a longer
    wait is not retried) before the stream starts; once text flows, failures are not retried.
    Errors say how many requests were made, and neither they nor their ``__cause__`` (a
    scrubbed :class:`~dagcall.models._http.ProviderError`, never the SDK's exception) hold the
    key.
    """

    provider: ClassVar[str] = "anthropic"
    label: ClassVar[str] = "Anthropic"
    example: ClassVar[str] = "claude-sonnet-4-5"
    key_env: ClassVar[str] = "ANTHROPIC_API_KEY"
    compatible: ClassVar[str] = "an Anthropic-compatible server"
    official_host: ClassVar[str] = _ANTHROPIC_HOST
    client_class: ClassVar[str] = "AsyncAnthropic"
    errors: ClassVar[SDKErrors] = SDKErrors(
        status=anthropic.APIStatusError,
        timeout=anthropic.APITimeoutError,
        connection=anthropic.APIConnectionError,
        api=anthropic.APIError,
    )
    finish_marker: ClassVar[str] = "message_stop"
    event_word: ClassVar[str] = "event"
    show_request_id: ClassVar[bool] = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: AsyncAnthropic | None = None,
        max_retries: int = 3,
        timeout: float = 60.0,
        temperature: float | None = None,
        max_tokens: int = 4096,
        prompt_cache: bool = True,
    ) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise UsageError(f"max_tokens must be a positive integer, not {max_tokens!r}")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0.0 <= temperature <= 1.0
        ):
            raise UsageError(f"temperature must be between 0 and 1 or None, not {temperature!r}")
        super().__init__(
            model,
            base_url=base_url,
            api_key=api_key,
            client=client,
            max_retries=max_retries,
            timeout=timeout,
        )
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.prompt_cache = bool(prompt_cache)

    # -- the wire mapping -------------------------------------------------------------------------
    @staticmethod
    def _client_secrets(client: Any) -> list[str]:
        return [s for s in (client.api_key, client.auth_token) if isinstance(s, str)]

    def _http_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        return anthropic.DefaultAsyncHttpxClient(**kwargs)

    def _build_client(self, http_client: httpx2.AsyncClient) -> AsyncAnthropic:
        return AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=self.max_retries,
            timeout=self.timeout,
            http_client=http_client,
        )

    def _prepare(self, messages: Sequence[Message]) -> tuple[str, list[MessageParam]]:
        return _to_anthropic(messages)

    def _new_state(self) -> StreamState:
        return _EventState()

    def _tool_specs(self, tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Native tool use: ``tools`` go out with their JSON Schemas as ``input_schema``; the
        text streams, then every ``tool_use`` block the reply held, in order."""
        return [
            {
                "name": str(t["name"]),
                "description": str(t.get("description", "")),
                "input_schema": dict(t.get("parameters") or {"type": "object"}),
            }
            for t in tools
        ]

    async def _create(
        self,
        client: AsyncAnthropic,
        prepared: tuple[str, list[MessageParam]],
        stops: list[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None,
    ) -> AsyncStream[RawMessageStreamEvent]:
        system, payload = prepared
        # The API refuses whitespace-only stop sequences; they still apply locally.
        api_stops = [s for s in stops if s.strip()]
        system_param: Any = system or omit
        if self.prompt_cache:
            system_param, payload, tools = _cache_breakpoints(system, payload, tools)
        return await client.messages.create(
            model=self.model,
            max_tokens=max_tokens or self.max_tokens,
            messages=payload,
            stream=True,
            system=system_param,
            stop_sequences=api_stops or omit,
            tools=cast("list[ToolParam]", tools) if tools else omit,
            # No longer an SDK parameter, and refused by the current API version.
            extra_body=None if self.temperature is None else {"temperature": self.temperature},
        )

    def _special_status(self, code: int, exc: Any, url: str, tries: str, detail: str) -> str | None:
        if code == 400 and any(name in detail for name in _SAMPLING_FIELDS):
            return (
                f"{url} rejected the request (HTTP 400); the Messages API no longer takes "
                "sampling parameters: leave temperature=None"
            )
        if code == 529:
            advice = "try again later" + ("" if _refused(exc) else " or raise max_retries")
            return f"{url} is overloaded (HTTP 529){tries}; {advice}"
        return None

    def _not_found(self, url: str) -> str:
        return (
            f"{url} has no model {self.model!r} or no /v1/messages endpoint (HTTP 404); "
            "check the model name, and that base_url is the server's root (without /v1)"
        )

    def _stream_status(self, exc: Any, url: str, arrived: str) -> str | None:
        if not isinstance(exc, anthropic.APIStatusError):
            return None
        # an `error` event in the stream
        kind = exc.type or "error"
        hint = "; try again later" if kind in ("overloaded_error", "api_error") else ""
        return (
            f"{url} reported {kind} mid-stream {arrived}: {self._detail(exc)}"
            f"{self._request_id(exc)}{hint}"
        )
