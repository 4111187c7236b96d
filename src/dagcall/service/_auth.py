"""The service's gate, as plain ASGI middleware in front of the app: the bearer token (checked
before anything is read), the loopback-only rules of an unauthenticated server, JSON bodies
only, and the request body limit (a body is read up to the limit, never past it)."""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Gate", "error_body", "is_loopback"]

REALM = 'Bearer realm="dagcall"'


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, maybe ``[v6]`` or with a port) is this machine."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """An error as OpenAI's API writes them (so OpenAI clients show the message)."""
    return json.dumps(
        {"error": {"message": message, "type": kind, "code": code, "param": None}}
    ).encode()


async def _respond(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Gate:
    """Bearer-token auth for every path under ``/v1`` (``token`` ``None``: none, for a
    server bound to loopback, which then also refuses requests whose ``Host`` is not a
    loopback name, against DNS rebinding); JSON bodies only for POST (so a web page cannot
    send a form-encoded cross-site request); and at most ``max_body_bytes`` of body."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        path: str = scope["path"]
        if self.token is None:
            host = headers.get(b"host", b"").decode("latin-1")
            if host and not is_loopback(host):
                await _respond(
                    send,
                    421,
                    error_body(
                        "this server has no token and answers only to loopback host names",
                        "invalid_request_error",
                        "misdirected_request",
                    ),
                )
                return
        elif path.startswith("/v1") and not self._authorized(headers.get(b"authorization")):
            given = b"authorization" in headers
            message = "a wrong bearer token" if given else "no bearer token"
            challenge = REALM + (', error="invalid_token"' if given else "")
            await _respond(
                send,
                401,
                error_body(
                    f"{message} (send Authorization: Bearer <token>)",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
                [(b"www-authenticate", challenge.encode())],
            )
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        kind = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if kind != b"application/json":
            await _respond(
                send,
                415,
                error_body("send the body as application/json", "invalid_request_error"),
            )
            return
        await self._limited(scope, receive, send, headers.get(b"content-length"))

    def _authorized(self, header: bytes | None) -> bool:
        assert self.token is not None  # noqa: S101 - only called with a token
        if header is None:
            return False
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self.token)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, length: bytes | None
    ) -> None:
        limit = self.max_body_bytes
        too_big = error_body(
            f"the request body is larger than the server's limit of {limit} bytes",
            "invalid_request_error",
            "request_too_large",
        )
        closing = [(b"connection", b"close")]
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _respond(send, 413, too_big, closing)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _respond(send, 413, too_big, closing)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the disconnect, when it comes

        await self.app(scope, replay, send)
