"""The ASGI app: routes for runs, their events, OpenAI's chat completions and the probes;
the gate (auth and limits) in front; the run manager's life bound to the app's."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

import dagcall
from dagcall import Compiler, UsageError
from dagcall.store import Store

from . import _openai
from ._auth import Gate, is_loopback
from ._runs import Busy, LiveRun, NotAccepting, Observer, RunManager, to_json

__all__ = ["STATIC_DIR", "create_app"]

#: Where the web view's files go; served at ``/`` when it holds an ``index.html``.
STATIC_DIR = Path(__file__).parent / "static"
#: Seconds a stream may go on after the server is told to stop (the runs' ``finished``).
SHUTDOWN_GRACE = 10.0
#: The SSE ``id`` of the one event a run known only to the store streams.
FINAL_ID = "final"


class ApiError(Exception):
    """An error answered as OpenAI's API writes them: ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind
        self.headers = headers


def _error(status: int, message: str, code: str | None, kind: str, **headers: str) -> Response:
    body = {"error": {"message": message, "type": kind, "code": code, "param": None}}
    return JSONResponse(body, status_code=status, headers=headers or None)


class RunRequest(BaseModel):
    """``POST /v1/runs``."""

    model_config = ConfigDict(extra="forbid")
    question: str
    max_replans: int | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)


def create_app(
    compiler: Compiler,
    *,
    store: Store | None = None,
    token: str | None = None,
    host: str = "127.0.0.1",
    max_concurrent_runs: int = 16,
    max_body_bytes: int = 1_000_000,
    max_question_chars: int = 20_000,
    run_timeout: float | None = None,
    event_buffer: int = 4096,
    keep_finished: int = 256,
    retry_after: int = 1,
    ping_seconds: float = 15.0,
    static_dir: str | os.PathLike[str] | None = None,
    observe: Observer | None = None,
) -> FastAPI:
    """dagcall as an HTTP service: an ASGI app answering questions with ``compiler``.

    ``token`` is the bearer token every ``/v1`` request must carry; ``None`` is allowed only
    for a server bound to a loopback ``host`` (the host it will be served on: it is checked
    here, and such a server answers only requests addressed to a loopback name).  Runs are
    saved to ``store`` when they end; at most ``max_concurrent_runs`` run at once (429 with
    ``Retry-After: retry_after`` past it); bodies over ``max_body_bytes`` and questions over
    ``max_question_chars`` get 413; ``run_timeout`` caps every run's time budget (a request
    may ask for less).  Each live run keeps its last ``event_buffer`` events for followers
    and resumes; the last ``keep_finished`` finished runs stay in memory too.  The compiler's
    toolsets are opened when the app starts and closed when it stops; stopping cancels the
    live runs and saves them as cancelled.  ``observe(handler, run_id)`` may wrap each run's
    event handler (``dagcall serve --otel`` traces each run so).  A ``static_dir`` (default
    :data:`STATIC_DIR`)
    with an ``index.html`` is served at ``/``.
    """
    if token is not None and not token.strip():
        raise UsageError("the service token is empty; give a real token or none at all")
    if token is None and not is_loopback(host):
        raise UsageError(
            f"refusing to serve on {host} without a token: anyone who can reach it could run "
            "the agent's tools; set a token (--token or DAGCALL_TOKEN) or bind to 127.0.0.1"
        )
    for label, value in (
        ("max_body_bytes", max_body_bytes),
        ("max_question_chars", max_question_chars),
        ("retry_after", retry_after),
    ):
        if value < 1:
            raise UsageError(f"{label} must be at least 1")
    runs = RunManager(
        compiler,
        store=store,
        max_concurrent_runs=max_concurrent_runs,
        run_timeout=run_timeout,
        event_buffer=event_buffer,
        keep_finished=keep_finished,
        retry_after=retry_after,
        observe=observe,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with compiler:  # the toolsets, opened once on the server's event loop
            runs.open()
            try:
                yield
            finally:
                await runs.shutdown()

    app = FastAPI(
        title="dagcall",
        version=dagcall.__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
        lifespan=lifespan,
    )
    app.state.dagcall_runs = runs
    app.add_middleware(Gate, token=token, max_body_bytes=max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message, exc.code, exc.kind, **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        message = f"invalid request: {problems}"
        return _error(422, message, "invalid_request", "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), None, "invalid_request_error")

    def start(question: str, max_replans: int | None, timeout: float | None) -> LiveRun:
        if not question.strip():
            raise ApiError(422, "the question is empty", "empty_question")
        if len(question) > max_question_chars:
            raise ApiError(
                413,
                f"the question is {len(question)} characters; the server's limit is "
                f"{max_question_chars}",
                "question_too_long",
            )
        try:
            return runs.start(question, max_replans=max_replans, timeout=timeout)
        except Busy as exc:
            raise ApiError(
                429,
                str(exc),
                "too_many_runs",
                kind="rate_limit_error",
                headers={"Retry-After": str(exc.retry_after)},
            ) from exc
        except NotAccepting as exc:
            raise ApiError(
                503, str(exc), "shutting_down", kind="server_error", headers={"Retry-After": "5"}
            ) from exc
        except UsageError as exc:
            raise ApiError(422, str(exc), "invalid_request") from exc

    def sse(stream: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
        # At shutdown (a signal to uvicorn) a stream gets time to end on its own: the live
        # runs are being cancelled and saved, and their ``finished`` events are on the way.
        return EventSourceResponse(
            stream, ping=ping_seconds, sep="\n", shutdown_grace_period=SHUTDOWN_GRACE
        )

    # -- probes ----------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive (the process answers)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Ready: the toolsets are open and runs are accepted."""
        body = {
            "status": "ready" if runs.ready else "not ready",
            "accepting": runs.accepting,
            "toolsets_open": compiler.toolbox.is_open,
            "live_runs": len(runs.live),
            "max_concurrent_runs": runs.max_concurrent_runs,
        }
        return JSONResponse(body, status_code=200 if runs.ready else 503)

    # -- runs ------------------------------------------------------------------------------
    @app.post("/v1/runs", status_code=202)
    async def create_run(body: RunRequest) -> Response:
        """Start a run; its events stream from ``/v1/runs/{id}/events``."""
        run = start(body.question, body.max_replans, body.timeout)
        data = {
            "id": run.id,
            "status": "running",
            "created_at": run.created_at,
            "url": f"/v1/runs/{run.id}",
            "events_url": f"/v1/runs/{run.id}/events",
        }
        return JSONResponse(data, status_code=202, headers={"Location": data["url"]})

    @app.get("/v1/runs")
    async def list_runs(limit: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:
        """Live runs first, then stored ones, newest first."""
        return {"runs": await runs.listing(limit)}

    @app.get("/v1/runs/{run_id}")
    async def get_run(run_id: str) -> Response:
        """The run as the typed schema's JSON (``stop_reason`` ``running`` while live)."""
        data = await runs.record(run_id)
        if data is None:
            raise ApiError(404, f"no run {run_id}", "run_not_found")
        return Response(to_json(data), media_type="application/json")

    @app.delete("/v1/runs/{run_id}")
    async def cancel_run(run_id: str) -> Response:
        """Cancel a live run; answers once it is saved (as cancelled)."""
        run = runs.find(run_id)
        if run is None:
            if await runs.load(run_id) is not None:
                raise ApiError(409, f"run {run_id} has already ended", "run_not_live")
            raise ApiError(404, f"no run {run_id}", "run_not_found")
        if run.done:
            raise ApiError(409, f"run {run_id} has already ended", "run_not_live")
        result = await runs.cancel(run)
        data = {"id": run.id, "stored_id": run.stored_id, "stop_reason": str(result.stop_reason)}
        return JSONResponse(data)

    @app.get("/v1/runs/{run_id}/events", response_model=None)
    async def run_events(
        request: Request, run_id: str, last_event_id: str | None = None
    ) -> Response:
        """The run's events as server-sent events, live until ``finished``; resumable with
        ``Last-Event-ID`` (or ``?last_event_id=``)."""
        resume = request.headers.get("last-event-id", last_event_id)
        run = runs.find(run_id)
        if run is None:
            stored = await runs.load(run_id)
            if stored is None:
                raise ApiError(404, f"no run {run_id}", "run_not_found")
            if resume == FINAL_ID:
                return Response(status_code=204)
            data = {
                "kind": "finished",
                "round": stored.rounds[-1].index if stored.rounds else 0,
                "text": "",
                "task": None,
                "run_id": stored.id,
                "stored_id": stored.id,
                "stop_reason": str(stored.stop_reason),
                "result": stored.to_dict(),
            }

            async def once() -> AsyncIterator[ServerSentEvent]:
                yield ServerSentEvent(data=to_json(data), event="finished", id=FINAL_ID)

            return sse(once())
        after = 0
        if resume is not None and resume.strip():
            if resume == FINAL_ID:
                return Response(status_code=204)
            if not resume.strip().isdigit():
                raise ApiError(422, "Last-Event-ID must be an event number", "bad_event_id")
            after = int(resume)
        if run.done and after >= run.seq:
            return Response(status_code=204)  # all seen: tells EventSource not to reconnect

        async def events() -> AsyncIterator[ServerSentEvent]:
            async for item in run.follow(after):
                yield ServerSentEvent(data=item.data, event=item.kind, id=str(item.seq))

        return sse(events())

    # -- OpenAI's chat completions ---------------------------------------------------------
    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: _openai.ChatRequest) -> Response:
        """OpenAI-compatible: the last user message is the question, the answer the
        assistant message; the run rides along in ``dagcall``."""
        question = _openai.question_of(body)
        if question is None:
            raise ApiError(422, "no user message with text content", "no_question")
        options = body.dagcall or _openai.DagcallOptions()
        run = start(question, options.max_replans, options.timeout)
        if body.stream:
            include = body.stream_options is not None and body.stream_options.include_usage
            chunks = _openai.stream(run, body.model, include)
            return sse(ServerSentEvent(data=c) async for c in chunks)
        result = await run.wait()
        if result.stop_reason not in _openai.ANSWERED:
            status, failure = _openai.failure(run, result)
            return Response(to_json(failure), status_code=status, media_type="application/json")
        return Response(
            to_json(_openai.completion(run, result, body.model)), media_type="application/json"
        )

    static = Path(static_dir) if static_dir is not None else STATIC_DIR
    if (static / "index.html").is_file():
        app.mount("/", StaticFiles(directory=static, html=True), name="static")

    return app
