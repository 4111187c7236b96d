"""The task fetching unit: dependency bookkeeping and dispatch (the executor runs the calls).

Tasks arrive from the parser one at a time while the planner is still streaming.  A task whose
dependencies are all done starts at once; otherwise it waits, and the completion of its last
dependency starts it.  Dispatch is driven entirely by task arrival and task completion
callbacks: nothing polls.  A task whose dependency failed, was skipped or was cancelled is
skipped with a :class:`DependencyError` naming the culprit, and that cascades.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._context import ToolContext, _ignore_call, _no_limit
from ._errors import DependencyError, PlanError, ToolExecutionError
from ._executor import (
    AsyncioExecutor,
    Executor,
    Invocation,
    cancelled_by_us,
    cancelled_error,
    tool_failure,
)
from ._plan import Ref, TaskSpec, Template
from ._result import LLMCall, TaskRecord, TaskStatus, observation_text
from ._tools import Approver, BaseTool

__all__ = ["Scheduler"]


class Scheduler:
    """The task fetching unit: starts each task of a run the moment its dependencies are done,
    and hands it to the ``executor`` (by default an :class:`AsyncioExecutor` built from
    ``max_concurrency``, ``tool_timeout`` and ``approve``).

    ``records`` holds every task of the run (all rounds), so later rounds can use earlier
    results.  ``record_llm_call`` receives a tool's own model calls; ``tokens_left`` tells
    them the run's remaining token budget; ``on_change`` sees every task transition.
    """

    def __init__(
        self,
        tools: Mapping[str, BaseTool],
        *,
        t0: float,
        max_concurrency: int | None = None,
        tool_timeout: float | None = None,
        record_llm_call: Callable[[LLMCall], None] | None = None,
        on_change: Callable[[TaskRecord], None] | None = None,
        approve: Approver | None = None,
        tokens_left: Callable[[], int | None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        if executor is None:
            executor = AsyncioExecutor(
                max_concurrency=max_concurrency, tool_timeout=tool_timeout, approve=approve
            )
        self._executor = executor
        self._tokens_left = tokens_left
        self._tools = tools
        self._record_llm_call = record_llm_call
        self._on_change = on_change
        self._t0 = t0
        self.records: dict[int, TaskRecord] = {}
        self._waiting_on: dict[int, set[int]] = {}  # task -> unfinished deps
        self._dependents: dict[int, list[int]] = {}  # dep -> tasks waiting for it
        self._specs: dict[int, TaskSpec] = {}
        self._root_cause: dict[int, int] = {}  # skipped task -> the failure its chain began at
        self._closing = False  # cancel_all has begun: waiters of ending tasks are cancelled
        self._running: set[asyncio.Task[None]] = set()
        self._unfinished = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    # -- intake ----------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, round_index: int) -> TaskRecord:
        """Accept a parsed task; start it now if its dependencies are done."""
        record = TaskRecord(
            id=spec.id,
            tool=spec.tool,
            call=spec.call,
            round=round_index,
            args=spec.raw_args,
            kwargs=spec.raw_kwargs,
            deps=tuple(sorted(spec.deps)),
            thought=spec.thought,
            parsed_at=self._now(),
        )
        self.records[spec.id] = record
        self._specs[spec.id] = spec
        self._changed(record)
        self._unfinished += 1
        self._idle.clear()
        pending: set[int] = set()
        for dep in spec.deps:
            dep_record = self.records[dep]
            if not dep_record.status.terminal:
                pending.add(dep)
            elif dep_record.status is not TaskStatus.DONE:
                self._skip(record, dep_record)
                return record
        if pending:
            self._waiting_on[spec.id] = pending
            for dep in pending:
                self._dependents.setdefault(dep, []).append(spec.id)
        else:
            self._start(record)
        return record

    def reject(self, error: PlanError, round_index: int) -> TaskRecord | None:
        """Record a task line that could not be parsed as a failed task, when it had an id."""
        if error.task_id is None or error.task_id in self.records:
            return None
        record = TaskRecord(
            id=error.task_id,
            tool="",
            call=error.line,
            round=round_index,
            status=TaskStatus.FAILED,
            error=error,
            parsed_at=self._now(),
        )
        self.records[error.task_id] = record
        self._changed(record)
        return record

    # -- dispatch --------------------------------------------------------------------------
    def _start(self, record: TaskRecord) -> None:
        record.ready_at = self._now()
        task = asyncio.create_task(self._run(record), name=f"dagcall:{record.tool}#{record.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _skip(self, record: TaskRecord, culprit: TaskRecord) -> None:
        """Skip ``record`` because ``culprit`` did not finish, and cascade to its waiters."""
        self._mark_skipped(record, culprit)
        self._finish(record, TaskStatus.SKIPPED)

    def _mark_skipped(self, record: TaskRecord, culprit: TaskRecord) -> None:
        # The message names the direct culprit and the first failure of the chain only, so a
        # chain of 10,000 skips has 10,000 short messages, not nested ones of quadratic size.
        root_id = self._root_cause.get(culprit.id, culprit.id)
        self._root_cause[record.id] = root_id
        root = self.records[root_id]
        why = _status_text(culprit)
        if root is not culprit:
            why += f"; the chain started at task {root.id} ({root.tool or 'invalid'}), "
            why += _status_text(root)
        record.status = TaskStatus.SKIPPED  # terminal now, so a cascade reaches it only once
        record.error = DependencyError(
            f"task {record.id} ({record.tool}) was skipped because task {culprit.id} "
            f"({culprit.tool or 'invalid'}) did not finish ({why})",
            tool=record.tool,
            task_id=record.id,
        )

    def _changed(self, record: TaskRecord) -> None:
        if self._on_change is not None:
            self._on_change(record)

    def _finish(self, record: TaskRecord, status: TaskStatus) -> None:
        """Make ``record`` terminal; start the waiters it was the last dependency of, and skip
        (iteratively, to any depth) those it leaves without an input."""
        stack = [(record, status)]
        while stack:
            rec, st = stack.pop()
            rec.status = st
            if rec.ended_at is None:
                rec.ended_at = self._now()
            self._changed(rec)
            self._waiting_on.pop(rec.id, None)
            self._unfinished -= 1
            for waiter_id in self._dependents.pop(rec.id, ()):
                waiter = self.records[waiter_id]
                if waiter.status.terminal:
                    continue
                if self._closing:
                    waiter.status = TaskStatus.CANCELLED
                    waiter.error = cancelled_error(waiter)
                    stack.append((waiter, TaskStatus.CANCELLED))
                    continue
                if st is not TaskStatus.DONE:
                    self._mark_skipped(waiter, rec)
                    stack.append((waiter, TaskStatus.SKIPPED))
                    continue
                pending = self._waiting_on.get(waiter_id)
                if pending is not None:
                    pending.discard(rec.id)
                    if not pending:
                        del self._waiting_on[waiter_id]
                        self._start(waiter)
        if self._unfinished == 0:
            self._idle.set()

    # -- execution -------------------------------------------------------------------------
    async def _run(self, record: TaskRecord) -> None:
        """Hand one task to the executor and record how it ended."""
        tool = self._tools[record.tool]
        spec = self._specs[record.id]
        context = ToolContext(
            record.id,
            tool.name,
            record.round,
            self._t0,
            self._record_llm_call or _ignore_call,
            self._tokens_left or _no_limit,
        )
        control = context._control
        status = TaskStatus.FAILED
        try:
            invocation = Invocation(
                record,
                tool,
                tuple(self._resolve(a) for a in spec.args),
                {k: self._resolve(v) for k, v in spec.kwargs.items()},
                context,
                lambda: self._started(record),
            )
            outcome = await self._executor.execute(invocation)
            status = outcome.status if outcome.status.terminal else TaskStatus.FAILED
            record.output, record.error = outcome.output, outcome.error
            if status is not TaskStatus.DONE and record.error is None:
                record.error = ToolExecutionError(
                    f"task {record.id}: the executor reported {outcome.status.value} with no error",
                    tool=tool.name,
                    task_id=record.id,
                )
        except asyncio.CancelledError as exc:
            if cancelled_by_us(control):
                abandoned = control.outcome == "abandoned"
                status = TaskStatus.ABANDONED if abandoned else TaskStatus.CANCELLED
                record.error = cancelled_error(record, control)
                raise
            record.error = tool_failure(record, tool, exc)
        except BaseException as exc:  # an executor that broke its contract
            record.error = tool_failure(record, tool, exc)
        finally:
            record.ended_at = self._now()
            self._finish(record, status)

    def _started(self, record: TaskRecord) -> None:
        record.started_at = self._now()
        record.status = TaskStatus.RUNNING
        self._changed(record)

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return self.records[value.task_id].output
        if isinstance(value, Template):
            return "".join(
                observation_text(self.records[p.task_id].output, None) if isinstance(p, Ref) else p
                for p in value.parts
            )
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value

    # -- waiting and cancelling ------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        """Tasks accepted but not yet finished (waiting or running)."""
        return self._unfinished

    async def wait_idle(self) -> None:
        """Wait until every accepted task has finished."""
        await self._idle.wait()

    async def cancel_all(self) -> None:
        """Cancel every running task, mark every waiting one cancelled, and wait for them."""
        # Waiting tasks were cancelled too, not skipped for a failed input: mark them first, so
        # the running ones' ends do not cascade into skips.
        self._closing = True
        for record in list(self.records.values()):
            if record.status is TaskStatus.WAITING and record.id in self._waiting_on:
                record.error = cancelled_error(record)
                self._finish(record, TaskStatus.CANCELLED)
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        for record in list(self.records.values()):
            if not record.status.terminal:
                record.error = cancelled_error(record)
                self._finish(record, TaskStatus.CANCELLED)


_REASON_CHARS = 300


def _status_text(record: TaskRecord) -> str:
    """``failed: <message>`` for a task that did not finish, bounded in length."""
    why = record.status.value
    if record.error is not None and not isinstance(record.error, DependencyError):
        message = record.error.message
        if len(message) > _REASON_CHARS:
            message = message[:_REASON_CHARS] + "…"
        why += f": {message}"
    return why
