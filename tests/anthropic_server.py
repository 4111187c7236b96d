"""A fake Anthropic Messages API (``POST /v1/messages``, streamed) on 127.0.0.1.

The stream follows the documented event sequence: ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta`` (``text_delta``) per chunk, ``content_block_stop``,
``message_delta`` (stop reason and output tokens), ``message_stop``.  Scripting, faults and
recording are those of :class:`FakeOpenAIServer`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from openai_server import FakeOpenAIServer, Status, Stream, _Handler

__all__ = ["FakeAnthropicServer", "anthropic_server", "overloaded"]


def overloaded() -> Status:
    return Status(529, "Overloaded")


class FakeAnthropicServer(FakeOpenAIServer):
    route = "/messages"

    @property
    def base_url(self) -> str:
        """The Anthropic-style base URL (the SDK adds ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    def write_stream(self, out: _Handler, stream: Stream, request: dict[str, Any]) -> None:
        model = str(request.get("model", "claude-fake"))
        prompt, completion = stream.usage if stream.usage is not None else (None, None)
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt or 0, "output_tokens": 1},
        }
        out._event({"type": "message_start", "message": message}, "message_start")
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        out._event(block, "content_block_start")
        out._event({"type": "ping"}, "ping")
        for text in out.text_chunks(stream):
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            }
            out._event(delta, "content_block_delta")
        out._event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": completion or 0},
        }
        out._event(end, "message_delta")
        out._event({"type": "message_stop"}, "message_stop")

    def write_error_event(self, out: _Handler) -> None:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        out._event(error, "error")

    def error_body(self, status: Status) -> dict[str, Any]:
        kinds = {429: "rate_limit_error", 401: "authentication_error", 529: "overloaded_error"}
        return {
            "type": "error",
            "error": {
                "type": kinds.get(status.status, "api_error"),
                "message": status.message or f"fake Anthropic server: HTTP {status.status}",
            },
        }


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    """A running :class:`FakeAnthropicServer`, shut down after the test."""
    with FakeAnthropicServer() as server:
        yield server
        errors = list(server.errors)
    assert not errors, f"fake Anthropic server handler errors: {errors!r}"
