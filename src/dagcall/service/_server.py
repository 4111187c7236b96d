"""Serving the app with uvicorn, shutting down gracefully: live runs are cancelled (and saved
as cancelled) as soon as shutdown begins, so their event streams end and the connections
close, instead of the server waiting on them."""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from dagcall import Compiler
from dagcall.store import Store

from ._app import create_app
from ._runs import Observer, RunManager

__all__ = ["TOKEN_ENV", "Server", "serve"]

log = logging.getLogger("dagcall.service")

#: The environment variable ``serve`` reads the token from when none is given.
TOKEN_ENV = "DAGCALL_TOKEN"  # noqa: S105 - a variable's name, not a secret


class Server(uvicorn.Server):
    """``uvicorn.Server`` for a dagcall app: at shutdown it first refuses new runs and
    cancels the live ones (saved as cancelled), then shuts down as uvicorn does."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.config.app, "state", None)
        runs = getattr(state, "dagcall_runs", None)
        if isinstance(runs, RunManager):
            await runs.shutdown()
        await super().shutdown(sockets)


def serve(
    compiler: Compiler,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    store: Store | None = None,
    max_concurrent_runs: int = 16,
    max_body_bytes: int = 1_000_000,
    max_question_chars: int = 20_000,
    run_timeout: float | None = None,
    shutdown_timeout: int = 30,
    log_level: str = "info",
    observe: Observer | None = None,
) -> None:
    """Serve ``compiler`` over HTTP until SIGINT/SIGTERM (see :func:`create_app` for the
    options); ``token`` defaults to ``$DAGCALL_TOKEN``.  Shutdown cancels live runs and saves
    them as cancelled; connections still open after ``shutdown_timeout`` seconds are cut."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    app = create_app(
        compiler,
        store=store,
        token=token,
        host=host,
        max_concurrent_runs=max_concurrent_runs,
        max_body_bytes=max_body_bytes,
        max_question_chars=max_question_chars,
        run_timeout=run_timeout,
        observe=observe,
    )
    if token is None:
        log.warning("dagcall service: no token; serving %s without authentication", host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=shutdown_timeout,
        proxy_headers=False,
    )
    Server(config).run()
