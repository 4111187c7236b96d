"""AnthropicModel: Claude models on the Anthropic Messages API, through the official SDK."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import ssl
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

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

from .._errors import (
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelStreamError,
    UsageError,
)
from .._tokens import estimate_tokens
from ._base import Message, Model, StopFilter, TokenUsage, ToolCall
from ._http import (
    Secrets,
    check_base_url,
    plural,
    redact_url,
    response_hook,
    retry_refused,
    tries_text,
    url_secrets,
    with_cause,
)

__all__ = ["AnthropicModel"]

#: The API key sent to Anthropic-compatible servers when none is configured (they ignore it).
PLACEHOLDER_API_KEY = "not-needed"

#: Sent as the first user turn when the conversation has none (the API needs one).
PLACEHOLDER_USER_TURN = "Continue."

_ANTHROPIC_HOST = "api.anthropic.com"
_DETAIL_LIMIT = 300
#: Input token counts in a ``usage`` object; their sum is the request's input.
_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
#: Request fields that the Messages API (version 2026-10-21, sent by SDK 2.x) refuses.
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building a verified SSL context costs tens of milliseconds of blocking work; each call
    # gets a fresh HTTP client (see AnthropicModel), so the context is built once and shared.
    return httpx2.create_ssl_context()


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


def _field(obj: object, name: str) -> int | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class _StreamState:
    """What the events of one stream said, apart from their text."""

    inputs: dict[str, int] = field(default_factory=dict)  # _INPUT_FIELDS that were reported
    output_tokens: int | None = None
    finished: bool = False  # message_stop arrived (or we stopped at a stop sequence)
    tool_uses: dict[int, list[str]] = field(default_factory=dict)  # index: id, name, JSON

    def read(self, event: RawMessageStreamEvent) -> str:
        """Take note of ``event``; return its text (``""`` for events without text)."""
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

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(call_id, name, arguments or "{}")
            for call_id, name, arguments in (self.tool_uses[i] for i in sorted(self.tool_uses))
        ]


class AnthropicModel(Model):
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

    Each :meth:`stream` call uses a fresh HTTP client that is closed when the stream ends;
    pass your own ``client`` (an ``anthropic.AsyncAnthropic``) to share a connection pool, used
    as is, with its own base URL, key, retries and timeout, and closed by you.  Failed
    requests are retried by the SDK (``max_retries``, honouring ``retry-after`` of up to
    60 s; an answer asking for a longer wait is not retried) before the stream starts; once
    text flows, failures are not retried.  Errors say how many requests were made, and
    neither they nor their ``__cause__`` (a scrubbed
    :class:`~dagcall.models._http.ProviderError`, never the SDK's exception) hold the key.
    """

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
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise UsageError(
                "AnthropicModel needs a model name, e.g. AnthropicModel('claude-sonnet-4-5')"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise UsageError(f"max_retries must be a non-negative integer, not {max_retries!r}")
        if not timeout > 0:
            raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise UsageError(f"max_tokens must be a positive integer, not {max_tokens!r}")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0.0 <= temperature <= 1.0
        ):
            raise UsageError(f"temperature must be between 0 and 1 or None, not {temperature!r}")
        if client is not None and (base_url is not None or api_key is not None):
            raise UsageError(
                "pass either client= (a configured AsyncAnthropic) or base_url=/api_key=, not both"
            )
        if base_url is not None:
            check_base_url(base_url)

        if client is None:
            key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
            if key is None:
                if base_url is None:
                    raise UsageError(
                        f"no API key for Anthropic model {model!r}: set the ANTHROPIC_API_KEY "
                        "environment variable, pass api_key=, or pass base_url= to use an "
                        "Anthropic-compatible server"
                    )
                key = PLACEHOLDER_API_KEY
            self._api_key = key
            self._secrets = Secrets([key, *url_secrets(base_url)])
        else:
            self._api_key = ""
            self._secrets = Secrets(
                [
                    *(s for s in (client.api_key, client.auth_token) if isinstance(s, str)),
                    *url_secrets(str(client.base_url)),
                ]
            )

        self.model = model
        self.base_url = base_url
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = client
        shown = base_url
        if client is not None and client.base_url.host != _ANTHROPIC_HOST:
            shown = str(client.base_url).rstrip("/")
        self.name = f"anthropic:{model}" + (f"@{redact_url(shown)}" if shown else "")

    # -- the Model interface --------------------------------------------------------------------
    supports_tools = True

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,  # a GBNF grammar for local models: not supported, ignored
    ) -> AsyncGenerator[str | TokenUsage, None]:
        async with contextlib.aclosing(self._stream(messages, stop, max_tokens, None)) as events:
            async for event in events:
                if not isinstance(event, ToolCall):
                    yield event

    async def stream_tools(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str | ToolCall | TokenUsage, None]:
        """Native tool use: ``tools`` go out with their JSON Schemas as ``input_schema``; the
        text streams, then every ``tool_use`` block the reply held, in order."""
        specs = [
            {
                "name": str(t["name"]),
                "description": str(t.get("description", "")),
                "input_schema": dict(t.get("parameters") or {"type": "object"}),
            }
            for t in tools
        ]
        async with contextlib.aclosing(self._stream(messages, (), max_tokens, specs)) as events:
            async for event in events:
                yield event

    async def _stream(
        self,
        messages: Sequence[Message],
        stop: Sequence[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None,
    ) -> AsyncGenerator[str | ToolCall | TokenUsage, None]:
        system, payload = _to_anthropic(messages)
        if max_tokens is not None and max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {max_tokens!r}")
        stops = [s for s in stop if s]
        stopper = StopFilter(stops)
        received: list[str] = []  # raw text from the server, before local stop filtering
        state = _StreamState()

        client = self._client if self._client is not None else self._new_client()
        try:
            events = await self._open(client, system, payload, stops, max_tokens, tools)
            try:
                while True:
                    failure: ModelStreamError | None = None
                    try:
                        text = state.read(await events.__anext__())
                    except StopAsyncIteration:
                        break
                    except Exception as exc:  # anything raised here is a stream failure
                        failure = self._stream_error(client, exc, sum(map(len, received)))
                        failure = with_cause(failure, exc, self._secrets)
                    if failure is not None:
                        raise failure  # outside the except: the SDK error is not its context
                    if not text:
                        continue
                    received.append(text)
                    out = stopper.feed(text)
                    if out:
                        yield out
                    if stopper.stopped:
                        state.finished = True
                        break  # the rest is past a stop sequence: stop reading now
            finally:
                await self._quietly_close(events)
        finally:
            if client is not self._client:
                await self._quietly_close(client)

        if not state.finished:
            # A body that ends early but cleanly raises nothing in the SDK: without
            # message_stop the reply is incomplete.
            raise ModelStreamError(
                f"{self.name}: the stream from {self._url(client)} ended without message_stop "
                f"after {plural(sum(map(len, received)), 'character')} of text; the reply is "
                "incomplete",
                model=self.name,
            )
        tail = stopper.flush()
        if tail:
            yield tail
        for call in state.tool_calls():
            yield call
        if state.input_tokens is not None and state.output_tokens is not None:
            yield TokenUsage(state.input_tokens, state.output_tokens)
        else:  # we stopped reading before the counts, or the server sent none
            yield TokenUsage(
                input_tokens=state.input_tokens
                if state.input_tokens is not None
                else estimate_tokens(m.content for m in messages),
                output_tokens=estimate_tokens("".join(received)),
                estimated=True,
            )

    # -- helpers --------------------------------------------------------------------------------
    def _new_client(self) -> AsyncAnthropic:
        try:
            return AsyncAnthropic(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=self.max_retries,
                timeout=self.timeout,
                http_client=anthropic.DefaultAsyncHttpxClient(
                    verify=_ssl_context(),
                    event_hooks={"response": [response_hook(self._secrets)]},
                ),
            )
        except Exception as exc:  # e.g. SSL_CERT_FILE naming a missing file
            error = ModelError(
                f"{self.name}: could not set up the HTTP client: "
                f"{type(exc).__name__}: {self._detail(exc)}",
                model=self.name,
            )
            error = with_cause(error, exc, self._secrets)
        raise error  # outside the except: the original error is not its context

    async def _open(
        self,
        client: AsyncAnthropic,
        system: str,
        payload: list[MessageParam],
        stops: list[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncStream[RawMessageStreamEvent]:
        """Send the request (the SDK retries it) and return the event stream."""
        # The API refuses whitespace-only stop sequences; they still apply locally.
        api_stops = [s for s in stops if s.strip()]
        try:
            return await client.messages.create(
                model=self.model,
                max_tokens=max_tokens or self.max_tokens,
                messages=payload,
                stream=True,
                system=system or omit,
                stop_sequences=api_stops or omit,
                tools=cast("list[ToolParam]", tools) if tools else omit,
                # No longer an SDK parameter, and refused by the current API version.
                extra_body=None if self.temperature is None else {"temperature": self.temperature},
            )
        except Exception as exc:
            error = with_cause(self._request_error(client, exc), exc, self._secrets)
        raise error  # outside the except: the SDK error is not its context

    def _request_error(self, client: AsyncAnthropic, exc: Exception) -> ModelError:
        """The ModelError for a request that failed before its stream started."""
        if isinstance(exc, anthropic.APIStatusError):
            return self._status_error(client, exc)
        if isinstance(exc, anthropic.APITimeoutError):
            return ModelConnectionError(
                f"{self.name}: {self._url(client)} did not answer within "
                f"{self._timeout_text(client)}{self._tries(client, exc, None)}; check that the "
                "server is up and not overloaded, or raise timeout=",
                model=self.name,
            )
        if isinstance(exc, anthropic.APIConnectionError):
            reason = self._scrub(str(exc.__cause__ or exc)) or type(exc.__cause__).__name__
            return ModelConnectionError(
                f"{self.name}: could not reach {self._url(client)} ({reason})"
                f"{self._tries(client, exc, None)}; check the network, that the server is "
                "running and that base_url is right",
                model=self.name,
            )
        # whatever else the SDK or its transport raised
        return ModelError(
            f"{self.name}: request to {self._url(client)} failed: "
            f"{type(exc).__name__}: {self._detail(exc)}",
            model=self.name,
        )

    def _status_error(
        self, client: AsyncAnthropic, exc: anthropic.APIStatusError
    ) -> ModelHTTPError:
        code = exc.status_code
        url = self._url(client)
        tries = self._tries(client, exc, code)
        detail = self._detail(exc)
        if code == 400 and any(name in detail for name in _SAMPLING_FIELDS):
            what = (
                f"{url} rejected the request (HTTP 400); the Messages API no longer takes "
                "sampling parameters: leave temperature=None"
            )
        elif code == 401:
            what = (
                f"{url} rejected the API key (HTTP 401); check ANTHROPIC_API_KEY or the api_key "
                "argument"
            )
        elif code == 403:
            what = f"{url} refused access (HTTP 403); check that the API key may use this model"
        elif code == 404:
            what = (
                f"{url} has no model {self.model!r} or no /v1/messages endpoint (HTTP 404); "
                "check the model name, and that base_url is the server's root (without /v1)"
            )
        elif code == 429:
            advice = (
                "wait and try again later"
                if retry_refused(exc)
                else "lower the concurrency, wait, or raise max_retries"
            )
            what = f"rate limited by {url} (HTTP 429){tries}; {advice}"
        elif code == 529:
            advice = "try again later" + ("" if retry_refused(exc) else " or raise max_retries")
            what = f"{url} is overloaded (HTTP 529){tries}; {advice}"
        elif code >= 500:
            what = f"provider error at {url} (HTTP {code}){tries}; try again later"
        else:
            what = f"{url} rejected the request (HTTP {code}){tries}"
        return ModelHTTPError(
            f"{self.name}: {what}: {detail}{self._request_id(exc)}",
            model=self.name,
            status_code=code,
        )

    def _stream_error(self, client: AsyncAnthropic, exc: Exception, chars: int) -> ModelStreamError:
        url = self._url(client)
        arrived = f"after {plural(chars, 'character')} of text had arrived"
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            what = f"the stream from {url} stalled for {self._timeout_text(client)} {arrived}"
        elif isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            reason = self._scrub(str(exc.__cause__ or exc)) or type(exc).__name__
            what = f"the stream from {url} was cut {arrived} ({reason})"
        elif isinstance(exc, anthropic.APIStatusError):  # an `error` event in the stream
            kind = exc.type or "error"
            hint = "; try again later" if kind in ("overloaded_error", "api_error") else ""
            what = (
                f"{url} reported {kind} mid-stream {arrived}: {self._detail(exc)}"
                f"{self._request_id(exc)}{hint}"
            )
        elif isinstance(exc, anthropic.APIError):
            what = f"{url} reported an error mid-stream {arrived}: {self._detail(exc)}"
        else:
            what = (
                f"{url} sent a malformed stream event {arrived} "
                f"({type(exc).__name__}: {self._detail(exc)})"
            )
        return ModelStreamError(f"{self.name}: {what}", model=self.name)

    @staticmethod
    async def _quietly_close(closable: AsyncStream[RawMessageStreamEvent] | AsyncAnthropic) -> None:
        # Cleanup must not hide the real outcome (the text, or the error being raised).
        with contextlib.suppress(Exception):
            await closable.close()

    def _url(self, client: AsyncAnthropic) -> str:
        return redact_url(str(client.base_url).rstrip("/"))

    @staticmethod
    def _timeout_text(client: AsyncAnthropic) -> str:
        timeout = client.timeout
        if isinstance(timeout, int | float):
            return f"{timeout:g}s"
        if isinstance(timeout, httpx2.Timeout) and timeout.read is not None:
            return f"{timeout.read:g}s"
        return "the timeout"

    def _request_id(self, exc: anthropic.APIStatusError) -> str:
        request_id = exc.request_id
        return f" (request id {self._scrub(request_id)})" if request_id else ""

    def _tries(self, client: AsyncAnthropic, exc: Exception, status: int | None) -> str:
        return tries_text(exc, status, client.max_retries, own_client=self._client is None)

    def _scrub(self, text: str) -> str:
        return self._secrets.scrub(text)

    def _detail(self, exc: BaseException) -> str:
        message = getattr(exc, "api_message", None) or getattr(exc, "message", None) or exc
        text = self._secrets.scrub(str(message), _DETAIL_LIMIT).strip()
        return text or type(exc).__name__
