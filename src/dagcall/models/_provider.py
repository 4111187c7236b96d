"""What the HTTP provider models share: options, keys, client lifetime, the stream, errors.

:class:`HTTPModel` holds everything OpenAIModel and AnthropicModel have in common; each of
them keeps only its wire mapping (how messages, tools and the request look, how a stream's
events read) and the few answers whose advice is its own.

Clients: a model builds one SDK client per running event loop and reuses it for every call
on that loop (one connection pool and TLS setup, not one per call), so a model can still be
shared across event loops.  A loop's client is closed when the loop shuts down (through
``loop.shutdown_asyncgens()``, which ``asyncio.run`` and ``asyncio.Runner`` call) or by
:meth:`HTTPModel.aclose`.  A ``client=`` the caller passes is used as is and never closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import weakref
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx2

from .._errors import (
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelStreamError,
    UsageError,
)
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

__all__ = ["PLACEHOLDER_API_KEY", "HTTPModel", "SDKErrors", "StreamState", "split_server"]

#: The API key sent to compatible servers when none is configured (they ignore it).
PLACEHOLDER_API_KEY = "not-needed"
_DETAIL_LIMIT = 300


@functools.cache
def ssl_context() -> ssl.SSLContext:
    # Building a verified SSL context costs tens of milliseconds of blocking work: it is
    # built once per process and shared by every client dagcall makes.
    return httpx2.create_ssl_context()


def split_server(prefix: str, rest: str) -> tuple[str, str | None]:
    """``"MODEL"`` or ``"MODEL@URL"`` (the part of a model string after ``prefix:``) as the
    model name and the server URL (``None`` for the provider's own API)."""
    spec = f"{prefix}:{rest}"
    name, at, base_url = rest.partition("@")
    if not name.strip():
        raise UsageError(
            f"model string {spec!r} must look like 'provider:model', e.g. 'openai:gpt-4o-mini' "
            "or 'openai:MODEL@http://127.0.0.1:8000/v1'"
        )
    if at and not base_url.strip():
        raise UsageError(f"model string {spec!r} has '@' but no server address after it")
    return name, base_url or None


@dataclass(frozen=True)
class SDKErrors:
    """The exception classes of one provider SDK that dagcall maps to its own errors."""

    status: type[Exception]  # an HTTP answer other than 2xx (status_code, request_id)
    timeout: type[Exception]
    connection: type[Exception]  # no answer at all (timeout is a subclass)
    api: type[Exception]  # any other error of the SDK


class StreamState:
    """What one stream's events said: each provider reads its own events into one."""

    finished: bool = False  # the end-of-reply event arrived (or we stopped at a stop sequence)

    @abstractmethod
    def read(self, event: Any) -> str:
        """Take note of ``event``; return its text (``""`` for events without text)."""

    @abstractmethod
    def tool_calls(self, model: str) -> Iterator[ToolCall]:
        """The tool calls the reply made, in order."""

    @abstractmethod
    def usage(self, messages: Sequence[Message], text: str, calls: list[ToolCall]) -> TokenUsage:
        """The token counts: reported, else estimated from ``messages`` and the reply."""


@dataclass
class _Lease:
    client: Any
    closer: AsyncGenerator[None, None]


async def _quietly_close(closable: Any) -> None:
    # Cleanup must not hide the real outcome (the text, or the error being raised).
    with contextlib.suppress(Exception):
        await closable.close()


async def _close_with_loop(client: Any) -> AsyncGenerator[None, None]:
    """Suspended for as long as ``client`` lives; the loop's ``shutdown_asyncgens`` (or
    :meth:`HTTPModel.aclose`) closes it, which closes the client on its own loop."""
    try:
        yield
    finally:
        await _quietly_close(client)


class HTTPModel(Model):
    """A model on a provider's HTTP API, through the provider's official async SDK."""

    #: The model string prefix and the provider's name in messages.
    provider: ClassVar[str]
    label: ClassVar[str]
    example: ClassVar[str]  # a model name for the "needs a model name" message
    key_env: ClassVar[str]  # the environment variable holding the API key
    compatible: ClassVar[str]  # what base_url= is for, in the "no API key" message
    official_host: ClassVar[str]
    client_class: ClassVar[str]  # the SDK client's name, for messages
    errors: ClassVar[SDKErrors]
    finish_marker: ClassVar[str]  # what a complete stream ends with, for messages
    event_word: ClassVar[str] = "event"  # what one item of the stream is called
    show_request_id: ClassVar[bool] = False  # append the request id to HTTP errors

    supports_tools = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str | None,
        client: Any,
        max_retries: int,
        timeout: float,
    ) -> None:
        cls = type(self).__name__
        if not isinstance(model, str) or not model.strip():
            raise UsageError(f"{cls} needs a model name, e.g. {cls}({self.example!r})")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise UsageError(f"max_retries must be a non-negative integer, not {max_retries!r}")
        if not timeout > 0:
            raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if client is not None and (base_url is not None or api_key is not None):
            raise UsageError(
                f"pass either client= (a configured {self.client_class}) or base_url=/api_key=, "
                "not both"
            )
        if base_url is not None:
            check_base_url(base_url)

        if client is None:
            key = api_key or os.environ.get(self.key_env) or None
            if key is None:
                if base_url is None:
                    raise UsageError(
                        f"no API key for {self.label} model {model!r}: set the {self.key_env} "
                        f"environment variable, pass api_key=, or pass base_url= to use "
                        f"{self.compatible}"
                    )
                key = PLACEHOLDER_API_KEY
            self._api_key = key
            self._secrets = Secrets([key, *url_secrets(base_url)])
        else:
            self._api_key = ""
            self._secrets = Secrets(
                [*self._client_secrets(client), *url_secrets(str(client.base_url))]
            )

        self.model = model
        self.base_url = base_url
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self._client = client
        self._leases: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lease] = (
            weakref.WeakKeyDictionary()
        )
        shown = base_url
        if client is not None and client.base_url.host != self.official_host:
            shown = str(client.base_url).rstrip("/")
        self.name = f"{self.provider}:{model}" + (f"@{redact_url(shown)}" if shown else "")

    # -- what each provider supplies --------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def _client_secrets(client: Any) -> list[str]:
        """The secrets a caller's client holds (its key or token)."""

    @abstractmethod
    def _build_client(self, http_client: httpx2.AsyncClient) -> Any:
        """The SDK client, with dagcall's settings, over ``http_client``."""

    @abstractmethod
    def _http_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        """The SDK's default async HTTP client class, built with ``kwargs``."""

    @abstractmethod
    def _prepare(self, messages: Sequence[Message]) -> Any:
        """The messages in the provider's shape (raises UsageError for bad ones)."""

    @abstractmethod
    async def _create(
        self,
        client: Any,
        prepared: Any,
        stops: list[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None,
    ) -> Any:
        """Send the request (the SDK retries it) and return the SDK's event stream."""

    @abstractmethod
    def _tool_specs(self, tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The provider's form of dagcall's tool descriptions."""

    @abstractmethod
    def _new_state(self) -> StreamState: ...

    def _special_status(self, code: int, exc: Any, url: str, tries: str, detail: str) -> str | None:
        """A provider's own text for an HTTP answer, or ``None`` for the shared one."""
        return None

    def _not_found(self, url: str) -> str:
        return f"{url} has no model {self.model!r} (HTTP 404); check the model name and base_url"

    def _stream_status(self, exc: Any, url: str, arrived: str) -> str | None:
        """A provider's text for an error event inside the stream, or ``None``."""
        return None

    # -- the Model interface ----------------------------------------------------------------------
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
        specs = self._tool_specs(tools)
        async with contextlib.aclosing(self._stream(messages, (), max_tokens, specs)) as events:
            async for event in events:
                yield event

    async def aclose(self) -> None:
        """Close the HTTP clients this model made (a ``client=`` passed in is left open).

        The client of the running loop is closed now; those of other loops are closed on
        their own loops.  The model stays usable: the next call makes a new client.
        """
        leases = list(self._leases.items())
        self._leases.clear()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, lease in leases:
            if loop is running:
                await lease.closer.aclose()
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(loop.create_task, lease.closer.aclose())

    async def _stream(
        self,
        messages: Sequence[Message],
        stop: Sequence[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None,
    ) -> AsyncGenerator[str | ToolCall | TokenUsage, None]:
        msgs = list(messages)
        prepared = self._prepare(msgs)
        if max_tokens is not None and max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {max_tokens!r}")
        stops = [s for s in stop if s]
        stopper = StopFilter(stops)
        received: list[str] = []  # raw text from the server, before local stop filtering
        state = self._new_state()

        client = self._client if self._client is not None else await self._loop_client()
        events = await self._open(client, prepared, stops, max_tokens, tools)
        try:
            iterator: AsyncIterator[Any] = events.__aiter__()
            while True:
                failure: ModelStreamError | None = None
                try:
                    text = state.read(await iterator.__anext__())
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
            await _quietly_close(events)

        if not state.finished:
            # A body that ends early but cleanly raises nothing in the SDK: without its
            # closing event the reply is incomplete.
            raise ModelStreamError(
                f"{self.name}: the stream from {self._url(client)} ended without "
                f"{self.finish_marker} after {plural(sum(map(len, received)), 'character')} of "
                "text; the reply is incomplete",
                model=self.name,
            )
        tail = stopper.flush()
        if tail:
            yield tail
        made: list[ToolCall] = []
        for call in state.tool_calls(self.name):
            made.append(call)
            yield call
        yield state.usage(msgs, "".join(received), made)

    # -- the client -------------------------------------------------------------------------------
    async def _loop_client(self) -> Any:
        """The running loop's client, made on first use."""
        loop = asyncio.get_running_loop()
        lease = self._leases.get(loop)
        if lease is not None and not lease.client.is_closed():
            return lease.client
        client = self._new_client()
        closer = _close_with_loop(client)
        self._leases[loop] = _Lease(client, closer)
        await closer.__anext__()  # registered with the loop, which closes it at shutdown
        return client

    def _new_client(self) -> Any:
        try:
            return self._build_client(
                self._http_client(
                    verify=ssl_context(),
                    event_hooks={"response": [response_hook(self._secrets)]},
                )
            )
        except Exception as exc:  # e.g. SSL_CERT_FILE naming a missing file
            error = ModelError(
                f"{self.name}: could not set up the HTTP client: "
                f"{type(exc).__name__}: {self._detail(exc)}",
                model=self.name,
            )
            error = with_cause(error, exc, self._secrets)
        raise error  # outside the except: the original error is not its context

    # -- errors: one table from SDK errors to dagcall's ------------------------------------------
    async def _open(
        self,
        client: Any,
        prepared: Any,
        stops: list[str],
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None,
    ) -> Any:
        try:
            return await self._create(client, prepared, stops, max_tokens, tools)
        except Exception as exc:
            error = with_cause(self._request_error(client, exc), exc, self._secrets)
        raise error  # outside the except: the SDK error is not its context

    def _request_error(self, client: Any, exc: Exception) -> ModelError:
        """The ModelError for a request that failed before its stream started."""
        if isinstance(exc, self.errors.status):
            return self._status_error(client, exc)
        if isinstance(exc, self.errors.timeout):
            return ModelConnectionError(
                f"{self.name}: {self._url(client)} did not answer within "
                f"{self._timeout_text(client)}{self._tries(client, exc, None)}; check that the "
                "server is up and not overloaded, or raise timeout=",
                model=self.name,
            )
        if isinstance(exc, self.errors.connection):
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

    def _status_error(self, client: Any, exc: Any) -> ModelHTTPError:
        code: int = exc.status_code
        url = self._url(client)
        tries = self._tries(client, exc, code)
        detail = self._detail(exc)
        what = self._special_status(code, exc, url, tries, detail)
        if what is not None:
            pass
        elif code == 401:
            what = (
                f"{url} rejected the API key (HTTP 401); check {self.key_env} or the api_key "
                "argument"
            )
        elif code == 403:
            what = f"{url} refused access (HTTP 403); check that the API key may use this model"
        elif code == 404:
            what = self._not_found(url)
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
        request_id = self._request_id(exc) if self.show_request_id else ""
        return ModelHTTPError(
            f"{self.name}: {what}: {detail}{request_id}", model=self.name, status_code=code
        )

    def _stream_error(self, client: Any, exc: Exception, chars: int) -> ModelStreamError:
        url = self._url(client)
        arrived = f"after {plural(chars, 'character')} of text had arrived"
        if isinstance(exc, self.errors.timeout | httpx2.TimeoutException):
            what = f"the stream from {url} stalled for {self._timeout_text(client)} {arrived}"
        elif isinstance(exc, self.errors.connection | httpx2.TransportError):
            reason = self._scrub(str(exc.__cause__ or exc)) or type(exc).__name__
            what = f"the stream from {url} was cut {arrived} ({reason})"
        elif (special := self._stream_status(exc, url, arrived)) is not None:
            what = special
        elif isinstance(exc, self.errors.api):
            what = f"{url} reported an error mid-stream {arrived}: {self._detail(exc)}"
        else:
            what = (
                f"{url} sent a malformed stream {self.event_word} {arrived} "
                f"({type(exc).__name__}: {self._detail(exc)})"
            )
        return ModelStreamError(f"{self.name}: {what}", model=self.name)

    def _url(self, client: Any) -> str:
        return redact_url(str(client.base_url).rstrip("/"))

    @staticmethod
    def _timeout_text(client: Any) -> str:
        timeout = client.timeout
        if isinstance(timeout, int | float):
            return f"{timeout:g}s"
        if isinstance(timeout, httpx2.Timeout) and timeout.read is not None:
            return f"{timeout.read:g}s"
        return "the timeout"

    def _request_id(self, exc: Any) -> str:
        request_id = getattr(exc, "request_id", None)
        if not isinstance(request_id, str) or not request_id:
            return ""
        return f" (request id {self._scrub(request_id)})"

    def _tries(self, client: Any, exc: Exception, status: int | None) -> str:
        return tries_text(exc, status, client.max_retries, own_client=self._client is None)

    def _scrub(self, text: str) -> str:
        return self._secrets.scrub(text)

    def _detail(self, exc: BaseException) -> str:
        message = getattr(exc, "api_message", None) or getattr(exc, "message", None) or exc
        text = self._secrets.scrub(str(message), _DETAIL_LIMIT).strip()
        return text or type(exc).__name__
