"""The service's runs: each live run's task, its numbered events (a bounded buffer that
followers read from and resume in), the concurrency limit, saving to the store, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from dagcall import Compiler, DagcallError, RunEvent, RunResult, StopReason, UsageError
from dagcall.store import RunNotFoundError, Store, StoredRun

#: Wraps a run's event handler, given the run's id (for tracing each run).
Observer = Callable[[Callable[[RunEvent], None], str], Callable[[RunEvent], None]]

__all__ = ["Busy", "Event", "LiveRun", "NotAccepting", "RunManager", "to_json"]

log = logging.getLogger("dagcall.service")


def to_json(data: Any) -> str:
    """Strict, compact JSON (dagcall's exports are strict JSON already)."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class Busy(Exception):
    """The concurrent-run limit is reached."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"{limit} runs are already running (the server's limit); retry later")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The service is shutting down (or not started)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event of a run: its sequence number (the SSE ``id``), kind and data."""

    seq: int
    kind: str
    data: str  # JSON


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


class LiveRun:
    """One run the service started: its events so far (the last ``buffer`` of them), its
    result as it stands, and once it has ended its final result and store id."""

    def __init__(self, run_id: str, question: str, buffer: int) -> None:
        self.id = run_id
        self.question = question
        self.created = time.time()
        self.created_at = _iso(self.created)
        self.events: deque[Event] = deque(maxlen=buffer)
        self.seq = 0
        self.result: RunResult | None = None  # the run's own result object, as it grows
        self.final: RunResult | None = None
        self.stored_id: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False
        self.concluding = False
        self._wake = asyncio.Event()
        self._done = asyncio.Event()

    # -- state -----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def current(self) -> RunResult:
        """The result as it stands (the final one once the run has ended)."""
        if self.final is not None:
            return self.final
        if self.result is not None:
            return self.result
        return RunResult(question=self.question, start_time=self.created)

    async def wait(self) -> RunResult:
        await self._done.wait()
        return self.current

    def record(self) -> dict[str, Any]:
        """The run as ``GET /v1/runs/{id}`` gives it while it is in memory (the typed schema,
        plus the service's fields)."""
        data = self.current.to_dict()
        data.update(
            id=self.id,
            stored_id=self.stored_id,
            created_at=self.created_at,
            live=not self.done,
        )
        return data

    # -- events ----------------------------------------------------------------------------
    def on_event(self, event: RunEvent) -> None:
        """The run's ``on_event``: number the event and keep it (``finished`` is published by
        the manager once the run is saved, so that a follower who sees it can load it)."""
        if self.result is None:
            self.result = event.result
        if event.kind == "finished":
            return
        self.publish(
            event.kind,
            {
                "kind": event.kind,
                "round": event.round,
                "text": event.text,
                "task": event.task.to_dict() if event.task is not None else None,
            },
        )

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        self.seq += 1
        item = Event(self.seq, kind, to_json(data))
        self.events.append(item)
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()
        return item

    def finish(self, result: RunResult, stored_id: str | None) -> None:
        self.final = result
        self.stored_id = stored_id
        rounds = result.rounds
        self.publish(
            "finished",
            {
                "kind": "finished",
                "round": rounds[-1].index if rounds else 0,
                "text": "",
                "task": None,
                "run_id": self.id,
                "stored_id": stored_id,
                "stop_reason": str(result.stop_reason),
                "result": result.to_dict(),
            },
        )
        self._done.set()

    def snapshot(self) -> Event:
        """The run as it stands, as one ``snapshot`` event numbered as the last event it
        covers (sent to a follower whose next event has left the buffer)."""
        data = {
            "kind": "snapshot",
            "round": self.current.rounds[-1].index if self.current.rounds else 0,
            "text": "",
            "task": None,
            "run_id": self.id,
            "stop_reason": str(self.current.stop_reason),
            "result": self.current.to_dict(),
        }
        return Event(self.seq, "snapshot", to_json(data))

    async def follow(self, after: int = 0) -> AsyncIterator[Event]:
        """The run's events after number ``after``, live until ``finished``.  When events a
        follower has not seen were dropped from the buffer, a ``snapshot`` of the run as it
        stands stands in for them (or, once the run has ended, its ``finished`` event, which
        holds the whole run): a follower never misses state and never gets an event twice."""
        last = after
        while True:
            if self.events:
                first = self.events[0].seq
                if last < first - 1:  # the next event it needs has left the buffer
                    if self.done:  # ``finished`` holds the whole run: go straight to it
                        last = self.seq - 1
                        continue
                    shot = self.snapshot()
                    last = shot.seq
                    yield shot
                    continue
                start = last + 1 - first
                pending = list(islice(self.events, max(start, 0), None))
                for item in pending:
                    last = item.seq
                    yield item
                if pending:
                    continue  # more may have come while the follower was being written to
            if self.done:
                return
            await self._wake.wait()


class RunManager:
    """The service's runs: starts them under the concurrent-run limit, keeps the live ones
    and the last ``keep_finished`` finished ones in memory, saves each finished run to the
    store, and at shutdown cancels the live ones (saved as cancelled)."""

    def __init__(
        self,
        compiler: Compiler,
        *,
        store: Store | None = None,
        max_concurrent_runs: int = 16,
        run_timeout: float | None = None,
        event_buffer: int = 4096,
        keep_finished: int = 256,
        retry_after: int = 1,
        observe: Observer | None = None,
    ) -> None:
        if max_concurrent_runs < 1:
            raise UsageError("max_concurrent_runs must be at least 1")
        if run_timeout is not None and run_timeout <= 0:
            raise UsageError("run_timeout must be positive (or None for the compiler's own)")
        if event_buffer < 16:
            raise UsageError("event_buffer must be at least 16 events")
        if keep_finished < 0:
            raise UsageError("keep_finished must be 0 or more")
        self.compiler = compiler
        self.store = store
        self.max_concurrent_runs = max_concurrent_runs
        self.run_timeout = run_timeout
        self.event_buffer = event_buffer
        self.keep_finished = keep_finished
        self.retry_after = retry_after
        self.observe = observe  # wraps each run's event handler (tracing)
        self.accepting = False
        self.live: dict[str, LiveRun] = {}
        self.recent: OrderedDict[str, LiveRun] = OrderedDict()
        self._variants: dict[int, Compiler] = {compiler.max_replans: compiler}
        self._by_store_id: dict[str, str] = {}
        self._endings: set[asyncio.Future[None]] = set()

    # -- starting --------------------------------------------------------------------------
    def budget(self, timeout: float | None) -> float | None:
        """A run's time budget: the one asked for, held to ``run_timeout``."""
        if timeout is None:
            return self.run_timeout
        return timeout if self.run_timeout is None else min(timeout, self.run_timeout)

    def _compiler_for(self, max_replans: int | None) -> Compiler:
        if max_replans is None:
            return self.compiler
        if not 0 <= max_replans <= self.compiler.max_replans:
            raise UsageError(
                f"max_replans must be between 0 and {self.compiler.max_replans} "
                "(the server's limit)"
            )
        variant = self._variants.get(max_replans)
        if variant is None:  # the same tools, models and toolsets; only the limit differs
            variant = copy.copy(self.compiler)
            variant.max_replans = max_replans
            self._variants[max_replans] = variant
        return variant

    def start(
        self,
        question: str,
        *,
        max_replans: int | None = None,
        timeout: float | None = None,
    ) -> LiveRun:
        """Start a run now (raises :class:`Busy` past the limit, :class:`NotAccepting` while
        shutting down, :class:`~dagcall.UsageError` for a bad limit)."""
        if not self.accepting:
            raise NotAccepting("the service is not accepting runs (shutting down)")
        if timeout is not None and timeout <= 0:
            raise UsageError("timeout must be positive")
        compiler = self._compiler_for(max_replans)
        if len(self.live) >= self.max_concurrent_runs:
            raise Busy(self.max_concurrent_runs, self.retry_after)
        run_id = secrets.token_hex(6)
        while run_id in self.live or run_id in self.recent:
            run_id = secrets.token_hex(6)
        run = LiveRun(run_id, question, self.event_buffer)
        self.live[run_id] = run
        run.task = asyncio.create_task(
            self._execute(run, compiler, self.budget(timeout)), name=f"dagcall run {run_id}"
        )
        run.task.add_done_callback(lambda task: self._settle(run, task))
        return run

    async def _execute(self, run: LiveRun, compiler: Compiler, budget: float | None) -> None:
        try:
            handler = run.on_event if self.observe is None else self.observe(run.on_event, run.id)
            result = await compiler.arun(run.question, timeout=budget, on_event=handler)
        except asyncio.CancelledError:
            result = run.current
        except DagcallError as exc:
            partial = getattr(exc, "result", None)
            result = partial if isinstance(partial, RunResult) else run.current
            if result.error is None:
                result.error = exc
        except Exception as exc:
            log.exception("dagcall service: run %s failed unexpectedly", run.id)
            result = run.current
            if result.error is None:
                result.error = UsageError(f"{type(exc).__name__}: {exc}")
            result.stop_reason = StopReason.ERROR
        await self._conclude(run, result)

    def _settle(self, run: LiveRun, task: asyncio.Task[None]) -> None:
        """The run task's done callback: a task cancelled before it began never ran its own
        ending, so it is ended here (saved as cancelled)."""
        if run.final is None and not run.concluding:
            ending = asyncio.ensure_future(self._conclude(run, run.current))
            self._endings.add(ending)
            ending.add_done_callback(self._endings.discard)

    async def _conclude(self, run: LiveRun, result: RunResult) -> None:
        """Save a run that has ended, then publish its ``finished`` event (so whoever sees it
        can load it) and move it from the live runs to the recent ones."""
        run.concluding = True
        if result.stop_reason is StopReason.RUNNING:  # it ended without being closed
            result.stop_reason = (
                StopReason.CANCELLED
                if run.cancel_requested or not self.accepting
                else StopReason.ERROR
            )
        try:
            stored_id = await _to_the_end(self._save(result, run.id))
        finally:
            self.live.pop(run.id, None)
        run.finish(result, stored_id)
        if stored_id is not None:
            self._by_store_id[stored_id] = run.id
        if self.keep_finished:
            self.recent[run.id] = run
            while len(self.recent) > self.keep_finished:
                _, old = self.recent.popitem(last=False)
                if old.stored_id is not None:
                    self._by_store_id.pop(old.stored_id, None)

    async def _save(self, result: RunResult, run_id: str | None = None) -> str | None:
        if self.store is None:
            return None
        try:
            return await asyncio.to_thread(
                self.store.save,
                result,
                planner=self.compiler.planner.name,
                joiner=self.compiler.joiner.name,
                run_id=run_id,
            )
        except Exception as exc:  # the run stays in memory; the service goes on
            log.error("dagcall service: the run could not be stored: %s", exc)
            return None

    # -- reading ---------------------------------------------------------------------------
    def find(self, run_id: str) -> LiveRun | None:
        """A run in memory (live or recently finished), by its id or its store id."""
        run = self.live.get(run_id) or self.recent.get(run_id)
        if run is None and run_id in self._by_store_id:
            run = self.recent.get(self._by_store_id[run_id])
        return run

    async def load(self, run_id: str) -> StoredRun | None:
        """A stored run by its exact store id (``None`` when there is none)."""
        if self.store is None or not run_id:
            return None
        try:
            stored = await asyncio.to_thread(self.store.load, run_id)
        except RunNotFoundError:
            return None
        return stored if stored.id == run_id else None  # no prefix look-ups over HTTP

    async def record(self, run_id: str) -> dict[str, Any] | None:
        """``GET /v1/runs/{id}``: a live run as it stands, a finished one from the store."""
        run = self.find(run_id)
        if run is not None and (not run.done or run.stored_id is None):
            return run.record()
        stored_id = run.stored_id if run is not None else run_id
        stored = await self.load(stored_id or "")
        if stored is None:
            return run.record() if run is not None else None
        data = stored.to_dict()
        data.update(
            id=run.id if run is not None else stored.id,
            stored_id=stored.id,
            live=False,
        )
        return data

    async def listing(self, limit: int) -> list[dict[str, Any]]:
        """Live runs (newest first), then stored runs (newest first), ``limit`` in all."""
        rows: list[dict[str, Any]] = []
        for run in sorted(self.live.values(), key=lambda r: r.created, reverse=True)[:limit]:
            current = run.current
            rows.append(
                {
                    "id": run.id,
                    "stored_id": None,
                    "live": True,
                    "created_at": run.created_at,
                    "question": run.question,
                    "answer": current.answer,
                    "stop_reason": str(StopReason.RUNNING),
                    "wall_time": time.time() - run.created,
                    "tasks": len(current.tasks),
                }
            )
        left = limit - len(rows)
        if left > 0 and self.store is not None:
            summaries = await asyncio.to_thread(self.store.list_runs, left)
            rows += [
                {
                    "id": self._by_store_id.get(s.id, s.id),
                    "stored_id": s.id,
                    "live": False,
                    "created_at": s.created_at,
                    "question": s.question,
                    "answer": s.answer,
                    "wall_time": s.wall_time,
                    "llm_calls": s.llm_calls,
                    "input_tokens": s.input_tokens,
                    "output_tokens": s.output_tokens,
                }
                for s in summaries
            ]
        elif left > 0:  # no store: the finished runs still in memory
            for run in reversed(self.recent.values()):
                if len(rows) >= limit:
                    break
                final = run.current
                rows.append(
                    {
                        "id": run.id,
                        "stored_id": None,
                        "live": False,
                        "created_at": run.created_at,
                        "question": run.question,
                        "answer": final.answer,
                        "stop_reason": str(final.stop_reason),
                        "wall_time": final.wall_time,
                        "tasks": len(final.tasks),
                    }
                )
        return rows

    # -- stopping --------------------------------------------------------------------------
    async def cancel(self, run: LiveRun) -> RunResult:
        """Cancel a live run and wait until it has ended and been saved."""
        if run.task is not None and not run.done and not run.cancel_requested:
            run.cancel_requested = True
            run.task.cancel()
        return await run.wait()

    def open(self) -> None:
        self.accepting = True

    async def shutdown(self) -> None:
        """Refuse new runs, cancel the live ones and wait until they are saved (idempotent)."""
        self.accepting = False
        runs = list(self.live.values())
        if runs:
            log.info("dagcall service: cancelling %d live run(s)", len(runs))
        await asyncio.gather(*(self.cancel(run) for run in runs))

    @property
    def ready(self) -> bool:
        return self.accepting and self.compiler.toolbox.is_open


async def _to_the_end(work: Coroutine[Any, Any, str | None]) -> str | None:
    """Await ``work`` to the end even if this task is cancelled meanwhile: a run that has
    ended must be saved (the task is the service's own, so nothing waits for it to stop)."""
    future = asyncio.ensure_future(work)
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)
    return future.result()
