"""What the fake provider servers share: a scripted streaming HTTP server on 127.0.0.1.

A :class:`FakeHTTPServer` listens on ``127.0.0.1`` (a free port) in a background thread,
records every request it receives and answers each one with the next scripted behaviour:
:class:`Stream` (a 200 event stream, optionally cut, malformed, failing or stalled part-way),
:class:`Status` (an error status such as 429 or 500, with headers), :class:`Stall` (no answer
for a while).  A request with nothing scripted gets HTTP 400 (not retried by clients), so a
test that forgot a behaviour fails fast.  Every wait is bounded by :data:`MAX_WAIT` and
:meth:`FakeHTTPServer.close` interrupts them, so teardown is quick and joins every thread.

Subclasses speak one provider's wire format by setting ``route`` and ``provider`` and
overriding :meth:`FakeHTTPServer.write_stream`, :meth:`~FakeHTTPServer.write_error_event`,
:meth:`~FakeHTTPServer.write_malformed_event` and :meth:`~FakeHTTPServer.error_body`
(see ``openai_server.py`` and ``anthropic_server.py``).
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
from typing import Any, Self, TypeVar

__all__ = [
    "MAX_WAIT",
    "Behaviour",
    "FakeHTTPServer",
    "RecordedRequest",
    "Stall",
    "Status",
    "Stream",
    "StreamWriter",
    "rate_limited",
    "server_error",
    "serving",
]

#: Upper bound on any single wait inside the server (stalls, delays, socket reads).
MAX_WAIT = 10.0


@dataclass(frozen=True)
class Stream:
    """Answer 200 with an event stream carrying ``chunks`` as text deltas.

    ``usage`` is ``(input_tokens, output_tokens)`` for the provider's usage report.  Faults,
    counted in text chunks already sent (``0`` = before the first one):

    - ``cut_after=K``: close the socket after K chunks, without the end of the stream or of
      the chunked body (what a dropped connection looks like to the client).
    - ``malformed_after=K``: after K chunks send an event whose data is not JSON, then end.
    - ``error_after=K``: after K chunks send the provider's in-stream error event, then end.
    - ``end_after=K``: end the body cleanly after K chunks, without the closing events.
    - ``stall_after=K``: after K chunks send nothing for ``stall`` seconds, then go on.

    ``cut_with`` is raw text written just before a ``cut_after`` cut, as the start of a body
    chunk that never ends (a half-sent event); ``error_message`` is the message of the
    ``error_after`` event and ``malformed_data`` the data of the ``malformed_after`` event
    (both with the provider's defaults when empty), e.g. to echo a key in them.

    ``delay`` seconds pass between text chunks.  ``tool_calls`` are ``(name, arguments JSON)``
    native tool calls sent after the text (OpenAI deltas, Anthropic tool_use blocks).
    """

    chunks: Sequence[str] = ()
    tool_calls: Sequence[tuple[str, str]] = ()
    usage: tuple[int, int] | None = None
    delay: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    error_after: int | None = None
    end_after: int | None = None
    cut_with: str = ""
    error_message: str = ""
    malformed_data: str = ""


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error ``status``, the provider's JSON error body and ``headers``."""

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


class StreamWriter(BaseHTTPRequestHandler):
    """The request handler; subclasses of FakeHTTPServer write streams through it."""

    protocol_version = "HTTP/1.1"
    timeout = MAX_WAIT  # socket reads never block longer than this
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # -- writing, for FakeHTTPServer subclasses ------------------------------------------------
    def text_chunks(self, stream: Stream) -> Iterator[str]:
        """The stream's text chunks, with its faults and delays applied between them.

        A fault ends the response by raising out of this iterator (the handler expects it).
        """
        for i, text in enumerate(stream.chunks):
            self._fault_point(stream, i)
            if i and stream.delay:
                self.server.fake.wait(stream.delay)
            yield text
        self._fault_point(stream, len(stream.chunks))

    def event(self, payload: Mapping[str, Any], name: str | None = None) -> None:
        """One server-sent event: an optional ``event:`` line and a JSON ``data:`` line."""
        head = f"event: {name}\n".encode() if name else b""
        self.write_chunk(head + b"data: " + json.dumps(payload).encode() + b"\n\n")

    def write_chunk(self, data: bytes) -> None:
        """One chunk of the chunked body (``b""`` ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- internals --------------------------------------------------------------------------------
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
                self._send_status(Status(404, f"fake {fake.provider} server: no route {self.path}"))
                return
            request = body if isinstance(body, dict) else {}
            refusal = fake.check_request(request, {k.lower(): v for k, v in self.headers.items()})
            if refusal is not None:
                self._send_status(refusal)
                return
            self._perform(fake._next(number), request)
        except (_FaultInjected, ConnectionError, TimeoutError):
            pass  # the scripted fault, or the client hung up / went quiet: both expected

    def _perform(self, behaviour: Behaviour, request: dict[str, Any]) -> None:
        if isinstance(behaviour, Stall):
            self.server.fake.wait(behaviour.seconds)
            if behaviour.then is None or self.server.fake.closing:
                return
            behaviour = behaviour.then
        if isinstance(behaviour, Status):
            self._send_status(behaviour)
        else:
            self._send_stream(behaviour, request)

    def _send_status(self, status: Status) -> None:
        data = json.dumps(self.server.fake.error_body(status)).encode()
        self.send_response(status.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in {**self.server.fake.response_headers(), **status.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, stream: Stream, request: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        for name, value in self.server.fake.response_headers().items():
            self.send_header(name, value)
        self.end_headers()
        self.server.fake.write_stream(self, stream, request)
        self.write_chunk(b"")  # end of the chunked body

    def _fault_point(self, stream: Stream, sent: int) -> None:
        fake = self.server.fake
        if stream.stall_after == sent:
            fake.wait(stream.stall)
        if stream.cut_after == sent:
            if stream.cut_with:
                data = stream.cut_with.encode()
                self.wfile.write(b"%x\r\n%s" % (len(data) + 64, data))  # promises more
                self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            raise _FaultInjected
        if stream.end_after == sent:
            self.write_chunk(b"")
            raise _FaultInjected
        if stream.error_after == sent:
            fake.write_error_event(self, stream)
            self.write_chunk(b"")
            raise _FaultInjected
        if stream.malformed_after == sent:
            fake.write_malformed_event(self, stream)
            self.write_chunk(b"")
            raise _FaultInjected


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # server_close() joins handler threads (all their waits are bounded)

    def __init__(self, fake: FakeHTTPServer) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), StreamWriter)

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


class FakeHTTPServer:
    """A scripted streaming HTTP API on 127.0.0.1; subclasses supply the wire format."""

    #: The path suffix answered (other paths get 404).
    route = "/"
    #: The provider's name, for messages and thread names.
    provider = "HTTP"

    # -- the wire format (override) --------------------------------------------------------
    def write_stream(self, out: StreamWriter, stream: Stream, request: dict[str, Any]) -> None:
        """Write the whole 200 event stream for ``stream`` through ``out``."""
        raise NotImplementedError

    def write_error_event(self, out: StreamWriter, stream: Stream) -> None:
        """An error reported inside a stream that has already started."""
        raise NotImplementedError

    def write_malformed_event(self, out: StreamWriter, stream: Stream) -> None:
        """An event whose data is cut off mid-JSON."""
        out.write_chunk(b'data: {"broken": \n\n')

    def error_body(self, status: Status) -> dict[str, Any]:
        """The JSON body of an error status."""
        return {"error": {"message": status.message or f"HTTP {status.status}"}}

    def check_request(self, request: dict[str, Any], headers: Mapping[str, str]) -> Status | None:
        """A status to answer with instead of the script, for a request the API would refuse.

        ``headers`` has lower-cased names.  Refused requests do not take a scripted behaviour.
        """
        return None

    def response_headers(self) -> Mapping[str, str]:
        """Headers added to every answer (stream or error status)."""
        return {}

    # -- lifecycle ------------------------------------------------------------------------
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._closing = threading.Event()
        #: Unexpected exceptions raised by request handlers (hang-ups are not recorded).
        self.errors: list[BaseException] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.provider.lower()}-server",
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

    def __enter__(self) -> Self:
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
        """``http://127.0.0.1:PORT``; subclasses add the path their SDK expects."""
        return f"http://127.0.0.1:{self.port}"

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

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (at most MAX_WAIT); returns early when the server closes."""
        self._closing.wait(min(max(seconds, 0.0), MAX_WAIT))

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(request)
            return len(self._requests)

    def _next(self, number: int) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return Status(400, f"fake {self.provider} server: nothing scripted for request #{number}")


_Server = TypeVar("_Server", bound=FakeHTTPServer)


def serving(server: _Server) -> Iterator[_Server]:
    """The body of a server fixture: run ``server``, yield it, then close it and fail the test
    if a request handler raised unexpectedly."""
    with server:
        yield server
        errors = list(server.errors)
    assert not errors, f"fake {server.provider} server handler errors: {errors!r}"
