"""A fake Anthropic Messages API (``POST /v1/messages`` with ``"stream": true``) on 127.0.0.1.

A :class:`~fake_http.Stream` is answered with the documented event sequence::

    event: message_start        {"type": "message_start", "message": {id, type, role, model,
                                 content: [], stop_reason, stop_sequence, usage}}
    event: content_block_start  {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}
    event: ping                 {"type": "ping"}
    event: content_block_delta  {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": ...}}   (one per chunk)
    event: content_block_stop   {"type": "content_block_stop", "index": 0}
    event: message_delta        {"type": "message_delta", "delta": {"stop_reason": ...,
                                 "stop_sequence": ...}, "usage": {"output_tokens": N}}
    event: message_stop         {"type": "message_stop"}

``usage=(input_tokens, output_tokens)`` fills ``message_start.message.usage.input_tokens`` and
the final ``message_delta.usage.output_tokens``; :class:`MessageStream` adds cache token
counts, an ``error`` event's type and whether ``stop_sequences`` are honoured.  Like the real
API, the server stops at the first requested stop sequence (leaving it out and reporting
``stop_reason: "stop_sequence"``) unless ``ignore_stop=True``.  Faults (``cut_after``,
``malformed_after``, ``error_after``, ``end_after``, stalls) and scripting, recording and
shutdown are those of :mod:`fake_http`.  Errors have the API's body,
``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``.

Requests the API would refuse get its HTTP 400 without taking a scripted behaviour: one
without ``stream: true``, ``model``, a positive ``max_tokens`` or user/assistant ``messages``,
and (API version 2026-10-21, which SDK 2.x sends) one carrying ``temperature``, ``top_p`` or
``top_k``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from fake_http import (
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
    "FakeAnthropicServer",
    "MessageStream",
    "RecordedRequest",
    "Stall",
    "Status",
    "Stream",
    "anthropic_server",
    "overloaded",
    "rate_limited",
    "server_error",
]

#: The API version from which sampling parameters are refused (sent by anthropic SDK 2.x).
SAMPLING_REMOVED_IN = "2026-10-21"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class MessageStream(Stream):
    """A :class:`Stream` with the Messages API's extras.

    ``cache_read``/``cache_creation`` are reported as ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens`` in ``message_start``; ``error_type`` is the type of the
    ``error`` event sent by ``error_after``; ``ignore_stop`` makes the server stream past the
    request's stop sequences (as a proxy that drops them would).
    """

    cache_read: int | None = None
    cache_creation: int | None = None
    error_type: str = "overloaded_error"
    ignore_stop: bool = False


def overloaded(retry_after: str | None = "0") -> Status:
    """HTTP 529 ``overloaded_error``, as the API answers when it is overloaded."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Status(529, "Overloaded", headers)


def _invalid(message: str) -> Status:
    return Status(400, message)


class FakeAnthropicServer(FakeHTTPServer):
    """A scripted Anthropic Messages API on 127.0.0.1 (use the :func:`anthropic_server` fixture).

    ``base_url`` is the address to give the SDK (it adds ``/v1/messages``).
    """

    route = "/v1/messages"
    provider = "Anthropic"

    def response_headers(self) -> Mapping[str, str]:
        return {"request-id": "req_fake0123456789"}

    def check_request(self, request: dict[str, Any], headers: Mapping[str, str]) -> Status | None:
        if request.get("stream") is not True:
            return _invalid("fake Anthropic server: only streamed requests are served")
        if not isinstance(request.get("model"), str) or not request["model"]:
            return _invalid("model: Field required")
        max_tokens = request.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return _invalid("max_tokens: Field required (a positive integer)")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return _invalid("messages: at least one message is required")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                return _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if not message.get("content"):
                return _invalid(f"messages.{i}: all messages must have non-empty content")
        if headers.get("anthropic-version", "") >= SAMPLING_REMOVED_IN:
            for name in ("temperature", "top_p", "top_k"):
                if name in request:
                    return _invalid(f"{name}: Extra inputs are not permitted")
        return None

    def write_stream(self, out: StreamWriter, stream: Stream, request: dict[str, Any]) -> None:
        extras = stream if isinstance(stream, MessageStream) else MessageStream()
        model = request.get("model")
        if stream.usage is not None:
            input_tokens, output_tokens = stream.usage
        else:  # roughly what the API would count
            input_tokens = max(1, len(json.dumps(request.get("messages"))) // 4)
            output_tokens = max(1, len("".join(stream.chunks)) // 4)
        usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": 1}
        if extras.cache_creation is not None:
            usage["cache_creation_input_tokens"] = extras.cache_creation
        if extras.cache_read is not None:
            usage["cache_read_input_tokens"] = extras.cache_read
        message: dict[str, Any] = {
            "id": "msg_fake0123456789",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.event({"type": "message_start", "message": message}, "message_start")
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        out.event(block, "content_block_start")
        out.event({"type": "ping"}, "ping")

        # Like the API, stop before the first stop sequence in the reply, never sending any
        # of it (not even a prefix that the next chunk completes).
        whole = "".join(stream.chunks)
        stops = [] if extras.ignore_stop else [s for s in request.get("stop_sequences") or () if s]
        hits = [(i, s) for s in stops if (i := whole.find(s)) >= 0]
        limit, matched = min(hits) if hits else (len(whole), None)
        sent = 0
        for text in out.text_chunks(stream):
            text = text[: limit - sent]
            if text:
                delta = {"type": "text_delta", "text": text}
                out.event(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
                sent += len(text)
            if matched is not None and sent >= limit:
                break

        out.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        for index, (name, arguments) in enumerate(stream.tool_calls, 1):
            # as the API streams tool use: the block with empty input, then JSON in pieces
            use = {"type": "tool_use", "id": f"toolu_{index}", "name": name, "input": {}}
            start = {"type": "content_block_start", "index": index, "content_block": use}
            out.event(start, "content_block_start")
            for at in range(0, len(arguments), 7):
                piece = {"type": "input_json_delta", "partial_json": arguments[at : at + 7]}
                delta_event = {"type": "content_block_delta", "index": index, "delta": piece}
                out.event(delta_event, "content_block_delta")
            out.event({"type": "content_block_stop", "index": index}, "content_block_stop")
        reason = "end_turn" if matched is None else "stop_sequence"
        end = {
            "type": "message_delta",
            "delta": {
                "stop_reason": "tool_use" if stream.tool_calls else reason,
                "stop_sequence": matched,
            },
            "usage": {"output_tokens": output_tokens},
        }
        out.event(end, "message_delta")
        out.event({"type": "message_stop"}, "message_stop")

    def write_error_event(self, out: StreamWriter, stream: Stream) -> None:
        kind = stream.error_type if isinstance(stream, MessageStream) else "overloaded_error"
        message = stream.error_message or (
            "Overloaded" if kind == "overloaded_error" else f"fake {kind}"
        )
        out.event({"type": "error", "error": {"type": kind, "message": message}}, "error")

    def write_malformed_event(self, out: StreamWriter, stream: Stream) -> None:
        data = stream.malformed_data or (
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_d'
        )
        out.write_chunk(b"event: content_block_delta\ndata: " + data.encode() + b"\n\n")

    def error_body(self, status: Status) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status.status, "api_error")
        return {
            "type": "error",
            "error": {
                "type": kind,
                "message": status.message or f"fake Anthropic server: HTTP {status.status}",
            },
            "request_id": "req_fake0123456789",
        }


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    """A running :class:`FakeAnthropicServer`, shut down after the test."""
    yield from serving(FakeAnthropicServer())
