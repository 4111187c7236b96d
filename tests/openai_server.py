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
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
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

#: Upper bound on any single wait inside the server (stalls, delays, socket reads).
MAX_WAIT = 10.0


@dataclass(frozen=True)
class Stream:
    """Answer 200 with an SSE stream of ``chunks`` as ``chat.completion.chunk`` deltas.

    After the text chunks come a chunk with ``finish_reason: "stop"``, then a usage chunk
    (empty ``choices``) when ``usage=(prompt_tokens, completion_tokens)`` is given and the
    request asked for it with ``stream_options.include_usage``, then ``data: [DONE]``.

    Faults, counted in text chunks already sent (``0`` = before the first one):

    - ``cut_after=K``: close the socket after K chunks, without ``[DONE]`` or the end of the
      chunked body (what a dropped connection looks like to the client).
    - ``malformed_after=K``: after K chunks send a ``data:`` line that is not JSON, then end.
    - ``stall_after=K``: after K chunks send nothing for ``stall`` seconds, then go on.

    ``delay`` seconds pass between text chunks.
    """

    chunks: Sequence[str] = ()
    usage: tuple[int, int] | None = None
    delay: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    error_after: int | None = None  # an error event in the stream, then the end
    end_after: int | None = None  # end the body cleanly after K chunks, with no finish


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error ``status``, a JSON error body and extra ``headers``."""

    status: int
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stall:
    """Send nothing for ``seconds`` (bounded by MAX_WAIT), then answer with ``then``.

    With ``then=None`` the connection is closed without any answer.
    """

    seconds: float
    then: Stream | Status | None = None


Behaviour = Stream | Status | Stall


def rate_limited(retry_after: str = "0") -> Status:
    """HTTP 429 with a ``Retry-After`` header."""
    return Status(429, "Rate limit reached (fake)", {"Retry-After": retry_after})


def server_error(status: int = 500) -> Status:
    """An HTTP 5xx provider error."""
    return Status(status, "The server had an error while processing your request (fake)")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received.

    ``headers`` has lower-cased names; ``body`` is the parsed JSON (or the raw text).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = 0.0  # time.monotonic() when it arrived


class _FaultInjected(Exception):
    """Internal: the scripted fault ended the response early."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = MAX_WAIT  # socket reads never block longer than this
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        number = fake._record(
            RecordedRequest(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                time.monotonic(),
            )
        )
        self.close_connection = True
        try:
            if self.command != "POST" or not self.path.rstrip("/").endswith(fake.route):
                self._send_status(Status(404, f"fake server: no route {self.path}"))
                return
            self._perform(fake._next(number), body)
        except (_FaultInjected, ConnectionError, TimeoutError):
            pass  # the scripted fault, or the client hung up / went quiet: both expected

    def _perform(self, behaviour: Behaviour, body: Any) -> None:
        if isinstance(behaviour, Stall):
            self.server.fake._wait(behaviour.seconds)
            if behaviour.then is None or self.server.fake.closing:
                return
            behaviour = behaviour.then
        if isinstance(behaviour, Status):
            self._send_status(behaviour)
        else:
            self._send_stream(behaviour, body)

    def _send_status(self, status: Status) -> None:
        data = json.dumps(self.server.fake.error_body(status)).encode()
        self.send_response(status.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in status.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, stream: Stream, body: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.server.fake.write_stream(self, stream, body if isinstance(body, dict) else {})
        self._write_chunk(b"")  # end of the chunked body

    def text_chunks(self, stream: Stream) -> Iterator[str]:
        """The stream's text chunks, with its faults and delays applied between them."""
        for i, text in enumerate(stream.chunks):
            self._fault_point(stream, i)
            if i and stream.delay:
                self.server.fake._wait(stream.delay)
            yield text
        self._fault_point(stream, len(stream.chunks))

    def _fault_point(self, stream: Stream, sent: int) -> None:
        if stream.stall_after == sent:
            self.server.fake._wait(stream.stall)
        if stream.cut_after == sent:
            self.connection.shutdown(socket.SHUT_RDWR)
            raise _FaultInjected
        if stream.end_after == sent:
            self._write_chunk(b"")
            raise _FaultInjected
        if stream.error_after == sent:
            self.server.fake.write_error_event(self)
            self._write_chunk(b"")
            raise _FaultInjected
        if stream.malformed_after == sent:
            self._write_chunk(b'data: {"id": "chatcmpl-fake", "choices": [{"delta": \n\n')
            self._write_chunk(b"")
            raise _FaultInjected

    def _event(self, payload: dict[str, Any], name: str | None = None) -> None:
        head = f"event: {name}\n".encode() if name else b""
        self._write_chunk(head + b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


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


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # server_close() joins handler threads (all their waits are bounded)

    def __init__(self, fake: FakeOpenAIServer) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def abort_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError | TimeoutError):
            self.fake.errors.append(exc)


class FakeOpenAIServer:
    """A scripted OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1.

    Subclasses serve other APIs by overriding ``route``, :meth:`write_stream` and
    :meth:`error_body` (see ``anthropic_server.py``).
    """

    route = "/chat/completions"

    def write_stream(self, out: _Handler, stream: Stream, request: dict[str, Any]) -> None:
        """Write the stream's events: chat.completion.chunk objects, usage, [DONE]."""
        model = str(request.get("model", "fake-model"))
        options = request.get("stream_options")
        want_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        out._event(_chunk(model, {"role": "assistant", "content": ""}))
        for text in out.text_chunks(stream):
            out._event(_chunk(model, {"content": text}))
        out._event(_chunk(model, {}, finish_reason="stop"))
        if stream.usage is not None and want_usage:
            prompt, completion = stream.usage
            usage_chunk = _chunk(model, None)
            usage_chunk["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            out._event(usage_chunk)
        out._write_chunk(b"data: [DONE]\n\n")

    def write_error_event(self, out: _Handler) -> None:
        """An error reported inside a stream that has already started."""
        out._event({"error": {"message": "fake server overloaded", "type": "server_error"}})

    def error_body(self, status: Status) -> dict[str, Any]:
        return {
            "error": {
                "message": status.message or f"fake OpenAI server: HTTP {status.status}",
                "type": "fake_error",
                "param": None,
                "code": str(status.status),
            }
        }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._closing = threading.Event()
        #: Unexpected exceptions raised by request handlers (hang-ups are not recorded).
        self.errors: list[BaseException] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, interrupt stalls, drop open connections and join all threads."""
        self._closing.set()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.abort_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=MAX_WAIT)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and inspection -------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each request takes the next one."""
        with self._lock:
            self._script.extend(behaviours)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def bodies(self) -> list[Any]:
        """The parsed JSON bodies of the requests received so far."""
        return [r.body for r in self.requests]

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(request)
            return len(self._requests)

    def _next(self, number: int) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return Status(400, f"fake OpenAI server: nothing scripted for request #{number}")

    def _wait(self, seconds: float) -> None:
        self._closing.wait(min(max(seconds, 0.0), MAX_WAIT))


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A running :class:`FakeOpenAIServer`, shut down after the test."""
    with FakeOpenAIServer() as server:
        yield server
        errors = list(server.errors)
    assert not errors, f"fake OpenAI server handler errors: {errors!r}"
