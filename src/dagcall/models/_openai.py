"""OpenAIModel: the OpenAI API, or any OpenAI-compatible server, through the official SDK."""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, cast

import httpx2
import openai
from openai import AsyncOpenAI, AsyncStream, omit
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
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

__all__ = ["OpenAIModel"]

#: The most stop sequences the OpenAI API accepts; any further ones are applied locally only.
MAX_API_STOP_SEQUENCES = 4

#: The API key sent to OpenAI-compatible servers when none is configured (they ignore it).
PLACEHOLDER_API_KEY = "not-needed"

_OPENAI_HOST = "api.openai.com"
_DETAIL_LIMIT = 300


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building a verified SSL context costs tens of milliseconds of blocking work; each call
    # gets a fresh HTTP client (see OpenAIModel), so the context is built once and shared.
    return httpx2.create_ssl_context()


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
        return TokenUsage(input_tokens=prompt, output_tokens=completion)
    return None


class OpenAIModel(Model):
    """A chat model served by the OpenAI API or an OpenAI-compatible server.

    ``OpenAIModel("gpt-4o-mini")`` uses the OpenAI API with the key from ``OPENAI_API_KEY``;
    ``OpenAIModel("llama3", base_url="http://127.0.0.1:8000/v1")`` any compatible server
    (vLLM, Ollama, llama.cpp's server), which need no key.

    Each :meth:`stream` call uses a fresh HTTP client that is closed when the stream ends, so
    a model can be shared across event loops and never leaks connections.  To share one
    connection pool instead, pass your own ``client`` (an ``openai.AsyncOpenAI``); it is then
    used as is, with its own base URL, key, retries and timeout, and you close it.

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
        if not isinstance(model, str) or not model.strip():
            raise UsageError("OpenAIModel needs a model name, e.g. OpenAIModel('gpt-4o-mini')")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise UsageError(f"max_retries must be a non-negative integer, not {max_retries!r}")
        if not timeout > 0:
            raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if client is not None and (base_url is not None or api_key is not None):
            raise UsageError(
                "pass either client= (a configured AsyncOpenAI) or base_url=/api_key=, not both"
            )
        if base_url is not None:
            check_base_url(base_url)

        if client is None:
            key = api_key or os.environ.get("OPENAI_API_KEY") or None
            if key is None:
                if base_url is None:
                    raise UsageError(
                        f"no API key for OpenAI model {model!r}: set the OPENAI_API_KEY "
                        "environment variable, pass api_key=, or pass base_url= to use a local "
                        "OpenAI-compatible server"
                    )
                key = PLACEHOLDER_API_KEY
            self._api_key = key
            self._secrets = Secrets([key, *url_secrets(base_url)])
        else:
            self._api_key = client.api_key if isinstance(client.api_key, str) else ""
            self._secrets = Secrets([self._api_key, *url_secrets(str(client.base_url))])

        self.model = model
        self.base_url = base_url
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.temperature = temperature
        self.stream_usage = stream_usage
        self.extra_body: dict[str, Any] | None = dict(extra_body) if extra_body else None
        self._client = client
        shown = base_url
        if client is not None and client.base_url.host != _OPENAI_HOST:
            shown = str(client.base_url).rstrip("/")
        self.name = f"openai:{model}" + (f"@{redact_url(shown)}" if shown else "")

    # -- the Model interface --------------------------------------------------------------------
    supports_tools = True

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,
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
        """Native function calling (``tools`` with ``parallel_tool_calls``): the text, then
        the calls the model made, assembled from their streamed deltas."""
        specs = [
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
        msgs = list(messages)
        calls: dict[int, dict[str, str]] = {}
        payload = [_to_openai(m) for m in msgs]
        stops = [s for s in stop if s]
        if max_tokens is not None and max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {max_tokens!r}")
        stopper = StopFilter(stops)
        received: list[str] = []  # raw text from the server, before local stop filtering
        usage: TokenUsage | None = None
        finished = False  # a finish_reason arrived

        client = self._client if self._client is not None else self._new_client()
        try:
            chunks = await self._open(client, payload, stops, max_tokens, tools)
            try:
                while True:
                    failure: ModelStreamError | None = None
                    try:
                        chunk = await chunks.__anext__()
                        text = _chunk_text(chunk)
                        _chunk_tool_calls(chunk, calls)
                        usage = _chunk_usage(chunk) or usage
                        finished = finished or any(c.finish_reason for c in chunk.choices or ())
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
                        finished = True
                        break  # the rest is past a stop sequence: stop reading now
            finally:
                await self._quietly_close(chunks)
        finally:
            if client is not self._client:
                await self._quietly_close(client)

        if not finished:
            # A server that closes a plain (not chunked) body early looks like a normal end:
            # without a finish_reason the reply is incomplete.
            raise ModelStreamError(
                f"{self.name}: the stream from {self._url(client)} ended without a "
                f"finish_reason after {plural(sum(map(len, received)), 'character')} of text; "
                "the reply is incomplete",
                model=self.name,
            )
        tail = stopper.flush()
        if tail:
            yield tail
        made: list[ToolCall] = []
        for index in sorted(calls):
            call = calls[index]
            if not call.get("name"):
                raise ModelStreamError(
                    f"{self.name}: the stream sent a tool call without a name", model=self.name
                )
            made.append(
                ToolCall(call.get("id") or f"call_{index}", call["name"], call.get("arguments", ""))
            )
            yield made[-1]
        if usage is None:
            written = "".join(received) + "".join(c.name + c.arguments for c in made)
            usage = TokenUsage(
                input_tokens=estimate_tokens(m.content for m in msgs),
                output_tokens=estimate_tokens(written),
                estimated=True,
            )
        yield usage

    # -- helpers --------------------------------------------------------------------------------
    def _new_client(self) -> AsyncOpenAI:
        try:
            return AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=self.max_retries,
                timeout=self.timeout,
                http_client=openai.DefaultAsyncHttpxClient(
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
        client: AsyncOpenAI,
        payload: list[ChatCompletionMessageParam],
        stops: list[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncStream[ChatCompletionChunk]:
        """Send the request (the SDK retries it) and return the chunk stream."""
        # OpenAI's own API wants max_completion_tokens (reasoning models reject max_tokens);
        # compatible servers widely understand only max_tokens.
        official = client.base_url.host == _OPENAI_HOST
        try:
            return await client.chat.completions.create(
                model=self.model,
                messages=payload,
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
        except Exception as exc:
            error = with_cause(self._request_error(client, exc), exc, self._secrets)
        raise error  # outside the except: the SDK error is not its context

    def _request_error(self, client: AsyncOpenAI, exc: Exception) -> ModelError:
        """The ModelError for a request that failed before its stream started."""
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(client, exc)
        if isinstance(exc, openai.APITimeoutError):
            return ModelConnectionError(
                f"{self.name}: {self._url(client)} did not answer within "
                f"{self._timeout_text(client)}{self._tries(client, exc, None)}; check that the "
                "server is up and not overloaded, or raise timeout=",
                model=self.name,
            )
        if isinstance(exc, openai.APIConnectionError):
            reason = self._scrub(str(exc.__cause__ or exc)) or type(exc.__cause__).__name__
            return ModelConnectionError(
                f"{self.name}: could not reach {self._url(client)} ({reason})"
                f"{self._tries(client, exc, None)}; check that the server is running and that "
                "base_url is right",
                model=self.name,
            )
        # whatever else the SDK or its transport raised
        return ModelError(
            f"{self.name}: request to {self._url(client)} failed: "
            f"{type(exc).__name__}: {self._detail(exc)}",
            model=self.name,
        )

    def _status_error(self, client: AsyncOpenAI, exc: openai.APIStatusError) -> ModelHTTPError:
        code = exc.status_code
        url = self._url(client)
        tries = self._tries(client, exc, code)
        if code == 401:
            what = (
                f"{url} rejected the API key (HTTP 401); check OPENAI_API_KEY or the api_key "
                "argument"
            )
        elif code == 403:
            what = f"{url} refused access (HTTP 403); check that the API key may use this model"
        elif code == 404:
            what = (
                f"{url} has no model {self.model!r} or no chat completions endpoint (HTTP 404); "
                "check the model name and that base_url ends in /v1"
            )
        elif code == 429:
            advice = (
                "wait and try again later"
                if retry_refused(exc)
                else "lower the concurrency, wait, or raise max_retries"
            )
            what = f"rate limited by {url} (HTTP 429){tries}; {advice}"
        elif code >= 500:
            what = f"provider error at {url} (HTTP {code}){tries}; try again later"
        else:
            what = f"{url} rejected the request (HTTP {code}){tries}"
        return ModelHTTPError(
            f"{self.name}: {what}: {self._detail(exc)}", model=self.name, status_code=code
        )

    def _stream_error(self, client: AsyncOpenAI, exc: Exception, chars: int) -> ModelStreamError:
        url = self._url(client)
        arrived = f"after {plural(chars, 'character')} of text had arrived"
        if isinstance(exc, openai.APITimeoutError):
            what = f"the stream from {url} stalled for {self._timeout_text(client)} {arrived}"
        elif isinstance(exc, openai.APIConnectionError):
            reason = self._scrub(str(exc.__cause__ or exc))
            what = f"the stream from {url} was cut {arrived} ({reason})"
        elif isinstance(exc, openai.APIError):
            what = f"{url} reported an error mid-stream {arrived}: {self._detail(exc)}"
        else:
            what = (
                f"{url} sent a malformed stream chunk {arrived} "
                f"({type(exc).__name__}: {self._detail(exc)})"
            )
        return ModelStreamError(f"{self.name}: {what}", model=self.name)

    @staticmethod
    async def _quietly_close(closable: AsyncStream[ChatCompletionChunk] | AsyncOpenAI) -> None:
        # Cleanup must not hide the real outcome (the text, or the error being raised).
        with contextlib.suppress(Exception):
            await closable.close()

    def _url(self, client: AsyncOpenAI) -> str:
        return redact_url(str(client.base_url).rstrip("/"))

    @staticmethod
    def _timeout_text(client: AsyncOpenAI) -> str:
        timeout = client.timeout
        if isinstance(timeout, int | float):
            return f"{timeout:g}s"
        if isinstance(timeout, httpx2.Timeout) and timeout.read is not None:
            return f"{timeout.read:g}s"
        return "the timeout"

    def _tries(self, client: AsyncOpenAI, exc: Exception, status: int | None) -> str:
        return tries_text(exc, status, client.max_retries, own_client=self._client is None)

    def _scrub(self, text: str) -> str:
        return self._secrets.scrub(text)

    def _detail(self, exc: BaseException) -> str:
        text = self._secrets.scrub(str(getattr(exc, "message", None) or exc), _DETAIL_LIMIT).strip()
        return text or type(exc).__name__
