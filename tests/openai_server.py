"""A fake OpenAI-compatible chat-completions server for tests.

It listens on ``127.0.0.1`` (a free port) in a background thread, records every request it
receives and answers each one with the next scripted behaviour::

    with FakeOpenAIServer() as server:
        server.script(rate_limited(retry_after="0"), Stream(["Hel", "lo"], usage=(12, 2)))
        model = OpenAIModel("fake", base_url=server.base_url)
        ...
        assert len(server.requests) == 2

Behaviours: :class:`Stream` (SSE chunks, optionally cut, malformed or stalled part-way),
:class:`Status` (an error status such as 429 or 500), :class:`Stall` (no answer for a while).
A request with nothing scripted gets HTTP 400 (not retried by clients), so a test that forgot
a behaviour fails fast.  Every wait is bounded and :meth:`FakeOpenAIServer.close` interrupts
them, so teardown is quick.  Use the :func:`openai_server` fixture or the context manager.
The server machinery is shared with the other fakes (``fake_http.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fake_http import (
    MAX_WAIT,
    Behaviour,
    FakeHTTPServer,
    RecordedRequest,
    Stall,
    Status,
    Stream,
    StreamWriter,
    rate_limited,
    server_error,
    serving,
)

__all__ = [
    "MAX_WAIT",
    "Behaviour",
    "FakeOpenAIServer",
    "RecordedRequest",
    "Stall",
    "Status",
    "Stream",
    "openai_server",
    "rate_limited",
    "server_error",
]


def _chunk(
    model: str, delta: dict[str, Any] | None, *, finish_reason: str | None = None
) -> dict[str, Any]:
    choices = []
    if delta is not None:
        choices.append({"index": 0, "delta": delta, "finish_reason": finish_reason})
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": choices,
    }


@dataclass(frozen=True)
class ChatStream(Stream):
    """A :class:`Stream` whose usage chunk also says ``cached_tokens`` of the prompt were read
    from OpenAI's prompt cache (``usage.prompt_tokens_details.cached_tokens``)."""

    cached_tokens: int | None = None


class FakeOpenAIServer(FakeHTTPServer):
    """A scripted OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1.

    A :class:`Stream` becomes ``chat.completion.chunk`` deltas, then a chunk with
    ``finish_reason: "stop"``, then a usage chunk (empty ``choices``) when
    ``usage=(prompt_tokens, completion_tokens)`` is given and the request asked for it with
    ``stream_options.include_usage``, then ``data: [DONE]``.
    """

    route = "/chat/completions"
    provider = "OpenAI"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def write_stream(self, out: StreamWriter, stream: Stream, request: dict[str, Any]) -> None:
        """Write the stream's events: chat.completion.chunk objects, usage, [DONE]."""
        model = str(request.get("model", "fake-model"))
        options = request.get("stream_options")
        want_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        out.event(_chunk(model, {"role": "assistant", "content": ""}))
        for text in out.text_chunks(stream):
            out.event(_chunk(model, {"content": text}))
        for index, (name, arguments) in enumerate(stream.tool_calls):
            # as OpenAI streams them: id and name first, the arguments in pieces after
            head = {"index": index, "id": f"call_{index}", "type": "function"}
            head["function"] = {"name": name, "arguments": ""}
            out.event(_chunk(model, {"tool_calls": [head]}))
            for start in range(0, len(arguments), 7):
                piece = {"index": index, "function": {"arguments": arguments[start : start + 7]}}
                out.event(_chunk(model, {"tool_calls": [piece]}))
        finish = "tool_calls" if stream.tool_calls else "stop"
        out.event(_chunk(model, {}, finish_reason=finish))
        if stream.usage is not None and want_usage:
            prompt, completion = stream.usage
            usage_chunk = _chunk(model, None)
            usage_chunk["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            if isinstance(stream, ChatStream) and stream.cached_tokens is not None:
                usage_chunk["usage"]["prompt_tokens_details"] = {
                    "cached_tokens": stream.cached_tokens
                }
            out.event(usage_chunk)
        out.write_chunk(b"data: [DONE]\n\n")

    def write_error_event(self, out: StreamWriter, stream: Stream) -> None:
        message = stream.error_message or "fake server overloaded"
        out.event({"error": {"message": message, "type": "server_error"}})

    def write_malformed_event(self, out: StreamWriter, stream: Stream) -> None:
        data = stream.malformed_data or '{"id": "chatcmpl-fake", "choices": [{"delta": '
        out.write_chunk(b"data: " + data.encode() + b"\n\n")

    def error_body(self, status: Status) -> dict[str, Any]:
        return {
            "error": {
                "message": status.message or f"fake OpenAI server: HTTP {status.status}",
                "type": "fake_error",
                "param": None,
                "code": str(status.status),
            }
        }


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A running :class:`FakeOpenAIServer`, shut down after the test."""
    yield from serving(FakeOpenAIServer())
