"""AnthropicModel: Claude models through the official ``anthropic`` SDK, streamed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

import anthropic
import httpx2
from anthropic import AsyncAnthropic, AsyncStream
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    RawMessageStreamEvent,
    TextDelta,
)

from .._errors import (
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelStreamError,
    UsageError,
)
from .._tokens import estimate_tokens
from ._base import Message, Model, StopFilter, TokenUsage
from ._http import check_base_url, plural, redact_url, scrub

__all__ = ["AnthropicModel"]

PLACEHOLDER_API_KEY = "not-needed"
_DETAIL_LIMIT = 300


def _messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, str]]]:
    """The system text, and user/assistant turns merged so that roles alternate, user first."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system":
            continue
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": m.role, "content": m.content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "(continue)"})
    return system, turns


class AnthropicModel(Model):
    """A Claude model on the Anthropic Messages API (key from ``ANTHROPIC_API_KEY``).

    System messages become the ``system`` parameter; user and assistant messages are merged
    so that they alternate.  The SDK retries failed requests (``max_retries``, honouring
    ``retry-after``) before the stream starts; failures after that are not retried.  Stop
    sequences are sent and also applied locally.  Token counts come from the stream's
    ``message_start`` and ``message_delta`` events (cache reads and writes count as input).
    ``temperature`` is sent only when given (current models choose their own sampling).
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
        if not model.strip():
            raise UsageError("AnthropicModel needs a model name, e.g. 'claude-3-5-haiku-latest'")
        if max_retries < 0 or timeout <= 0 or max_tokens < 1:
            raise UsageError("max_retries must be >= 0, timeout > 0 and max_tokens >= 1")
        if client is not None and (base_url is not None or api_key is not None):
            raise UsageError("pass either client= or base_url=/api_key=, not both")
        if base_url is not None:
            check_base_url(base_url)
        key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
        if client is None and key is None:
            if base_url is None:
                raise UsageError(
                    f"no API key for Anthropic model {model!r}: set ANTHROPIC_API_KEY or pass "
                    "api_key="
                )
            key = PLACEHOLDER_API_KEY
        self._api_key = key or ""
        self._client = client
        self.model = model
        self.base_url = base_url
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = f"anthropic:{model}" + (f"@{redact_url(base_url)}" if base_url else "")

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,
    ) -> AsyncGenerator[str | TokenUsage, None]:
        system, turns = _messages(messages)
        stops = [s for s in stop if s.strip()]  # the API rejects blank stop sequences
        stopper = StopFilter(stops)
        received: list[str] = []
        input_tokens: int | None = None
        output_tokens: int | None = None
        complete = False  # message_stop seen
        client = self._client or AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )
        try:
            options: dict[str, Any] = {}
            if system:
                options["system"] = system
            if stops:
                options["stop_sequences"] = stops
            if self.temperature is not None:  # no longer a named SDK parameter
                options["extra_body"] = {"temperature": self.temperature}
            try:
                created = await client.messages.create(
                    model=self.model,
                    max_tokens=max_tokens or self.max_tokens,
                    messages=turns,  # type: ignore[arg-type]
                    stream=True,
                    **options,
                )
            except Exception as exc:
                raise self._request_error(exc) from exc
            events = cast(AsyncStream[RawMessageStreamEvent], created)
            try:
                while True:
                    try:
                        event = await events.__anext__()
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        raise self._stream_error(exc, sum(map(len, received))) from exc
                    if isinstance(event, RawMessageStartEvent):
                        usage = event.message.usage
                        input_tokens = (
                            usage.input_tokens
                            + (getattr(usage, "cache_creation_input_tokens", None) or 0)
                            + (getattr(usage, "cache_read_input_tokens", None) or 0)
                        )
                    elif isinstance(event, RawMessageDeltaEvent):
                        output_tokens = event.usage.output_tokens
                    elif isinstance(event, RawMessageStopEvent):
                        complete = True
                    elif isinstance(event, RawContentBlockDeltaEvent) and isinstance(
                        event.delta, TextDelta
                    ):
                        received.append(event.delta.text)
                        out = stopper.feed(event.delta.text)
                        if out:
                            yield out
                        if stopper.stopped:
                            complete = True  # we stopped reading on purpose
                            break
            finally:
                with contextlib.suppress(Exception):
                    await events.close()
        finally:
            if client is not self._client:
                with contextlib.suppress(Exception):
                    await client.close()
        if not complete:
            # The SDK skips events it cannot decode, so a damaged stream can end early
            # without an error: without message_stop the reply is incomplete.
            raise ModelStreamError(
                f"{self.name}: the stream from {self._where()} ended without message_stop "
                f"after {plural(sum(map(len, received)), 'character')} of text; the reply is "
                "incomplete",
                model=self.name,
            )
        tail = stopper.flush()
        if tail:
            yield tail
        if input_tokens is not None and output_tokens is not None:
            yield TokenUsage(input_tokens, output_tokens)
        else:
            yield TokenUsage(
                input_tokens
                if input_tokens is not None
                else estimate_tokens([system, *(t["content"] for t in turns)]),
                estimate_tokens("".join(received)),
                estimated=True,
            )

    # -- errors -------------------------------------------------------------------------------
    def _detail(self, exc: BaseException) -> str:
        text = scrub(str(getattr(exc, "message", None) or exc).strip(), self._api_key)
        return (text[: _DETAIL_LIMIT - 3] + "...") if len(text) > _DETAIL_LIMIT else text

    def _where(self) -> str:
        return redact_url(self.base_url) if self.base_url else "the Anthropic API"

    def _request_error(self, exc: Exception) -> ModelError:
        where, retries = self._where(), plural(self.max_retries, "retry")
        if isinstance(exc, anthropic.APIStatusError):
            code = exc.status_code
            what = {
                401: f"{where} rejected the API key (HTTP 401); check ANTHROPIC_API_KEY",
                403: f"{where} refused access (HTTP 403)",
                404: f"{where} has no model {self.model!r} (HTTP 404)",
                429: f"rate limited by {where} (HTTP 429) after {retries}; wait or lower the "
                "concurrency",
                529: f"{where} is overloaded (HTTP 529) after {retries}; try again later",
            }.get(code)
            if what is None:
                what = (
                    f"provider error at {where} (HTTP {code}) after {retries}"
                    if code >= 500
                    else f"{where} rejected the request (HTTP {code})"
                )
            return ModelHTTPError(
                f"{self.name}: {what}: {self._detail(exc)}", model=self.name, status_code=code
            )
        if isinstance(exc, anthropic.APITimeoutError):
            return ModelConnectionError(
                f"{self.name}: {where} did not answer within {self.timeout:g}s", model=self.name
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return ModelConnectionError(
                f"{self.name}: could not reach {where} ({self._detail(exc.__cause__ or exc)}; "
                f"tried {plural(self.max_retries + 1, 'time')})",
                model=self.name,
            )
        return ModelError(
            f"{self.name}: request failed: {type(exc).__name__}: {self._detail(exc)}",
            model=self.name,
        )

    def _stream_error(self, exc: Exception, chars: int) -> ModelStreamError:
        arrived = f"after {plural(chars, 'character')} of text had arrived"
        if isinstance(
            exc, anthropic.APIConnectionError | anthropic.APITimeoutError | httpx2.TransportError
        ):
            what = f"the stream from {self._where()} was cut {arrived}"
        elif isinstance(exc, anthropic.APIError):
            what = f"{self._where()} reported an error mid-stream {arrived}: {self._detail(exc)}"
        else:
            what = f"{self._where()} sent a malformed stream event {arrived} ({self._detail(exc)})"
        return ModelStreamError(f"{self.name}: {what}", model=self.name)
