"""The task fetching unit and executor.

Tasks arrive from the parser one at a time while the planner is still streaming.  A task whose
dependencies are all done starts at once; otherwise it waits, and the completion of its last
dependency starts it.  Dispatch is driven entirely by task arrival and task completion
callbacks: nothing polls.  A task whose dependency failed, was skipped or was cancelled is
skipped with a :class:`DependencyError` naming the culprit, and that cascades.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._context import ToolContext, _current
from ._errors import (
    ApprovalError,
    DagcallError,
    DependencyError,
    PlanError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
)
from ._plan import Ref, TaskSpec, Template
from ._result import LLMCall, TaskRecord, TaskStatus, observation_text
from ._tools import Approver, Tool

__all__ = ["Scheduler"]


class Scheduler:
    """Runs the tasks of a run as their dependencies complete.

    ``records`` holds every task of the run (all rounds), so later rounds can use earlier
    results.  ``max_concurrency`` bounds the tool calls running at once across all tools;
    each tool's own ``max_concurrency`` bounds its calls.  ``tool_timeout`` applies to tools
    that set no timeout of their own (``None``: no limit).
    """

    def __init__(
        self,
        tools: Mapping[str, Tool],
        *,
        t0: float,
        max_concurrency: int | None = None,
        tool_timeout: float | None = None,
        record_llm_call: Callable[[LLMCall], None] | None = None,
        on_change: Callable[[TaskRecord], None] | None = None,
        approve: Approver | None = None,
    ) -> None:
        self._approve = approve
        self._tools = tools
        self._record_llm_call = record_llm_call
        self._on_change = on_change
        self._t0 = t0
        self.records: dict[int, TaskRecord] = {}
        self._waiting_on: dict[int, set[int]] = {}  # task -> unfinished deps
        self._dependents: dict[int, list[int]] = {}  # dep -> tasks waiting for it
        self._specs: dict[int, TaskSpec] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._unfinished = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._global = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._per_tool = {
            name: asyncio.Semaphore(t.max_concurrency)
            for name, t in tools.items()
            if t.max_concurrency
        }
        self._tool_timeout = tool_timeout

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
        task = asyncio.create_task(self._execute(record), name=f"dagcall:{record.tool}#{record.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _skip(self, record: TaskRecord, culprit: TaskRecord) -> None:
        why = culprit.status.value
        if culprit.error is not None:
            why += f": {culprit.error.message}"
        record.error = DependencyError(
            f"task {record.id} ({record.tool}) was skipped because task {culprit.id} "
            f"({culprit.tool or 'invalid'}) did not finish ({why})",
            tool=record.tool,
            task_id=record.id,
        )
        self._finish(record, TaskStatus.SKIPPED)

    def _changed(self, record: TaskRecord) -> None:
        if self._on_change is not None:
            self._on_change(record)

    def _finish(self, record: TaskRecord, status: TaskStatus) -> None:
        record.status = status
        if record.ended_at is None:
            record.ended_at = self._now()
        self._changed(record)
        self._waiting_on.pop(record.id, None)
        self._unfinished -= 1
        for waiter_id in self._dependents.pop(record.id, []):
            waiter = self.records[waiter_id]
            if waiter.status.terminal:
                continue
            if status is not TaskStatus.DONE:
                self._skip(waiter, record)
                continue
            pending = self._waiting_on.get(waiter_id)
            if pending is not None:
                pending.discard(record.id)
                if not pending:
                    del self._waiting_on[waiter_id]
                    self._start(waiter)
        if self._unfinished == 0:
            self._idle.set()

    # -- execution -------------------------------------------------------------------------
    async def _execute(self, record: TaskRecord) -> None:
        tool = self._tools[record.tool]
        spec = self._specs[record.id]
        status = TaskStatus.FAILED
        if self._record_llm_call is not None:  # this asyncio task's own context
            _current.set(
                ToolContext(record.id, tool.name, record.round, self._t0, self._record_llm_call)
            )
        try:
            async with _maybe(self._per_tool.get(tool.name)), _maybe(self._global):
                record.started_at = self._now()
                record.status = TaskStatus.RUNNING
                self._changed(record)
                args = tuple(self._resolve(a) for a in spec.args)
                kwargs = {k: self._resolve(v) for k, v in spec.kwargs.items()}
                record.resolved_args = tool.validate(args, kwargs, task_id=record.id)
                if tool.side_effects:
                    await self._check_approval(tool, record)
                timeout = tool.timeout if tool.timeout is not None else self._tool_timeout
                try:
                    async with asyncio.timeout(timeout) as scope:
                        record.output = await tool.invoke(record.resolved_args)
                except TimeoutError:
                    if not scope.expired():
                        raise
                    raise ToolTimeoutError(
                        f"task {record.id}: {tool.name} did not finish within {timeout:g} s",
                        tool=tool.name,
                        task_id=record.id,
                    ) from None
                status = TaskStatus.DONE
        except ToolError as exc:
            record.error = exc
        except asyncio.CancelledError:
            status = TaskStatus.CANCELLED
            raise
        except Exception as exc:
            record.error = ToolExecutionError(
                f"task {record.id}: {tool.name} raised {type(exc).__name__}: {exc}",
                tool=tool.name,
                task_id=record.id,
            )
            record.error.__cause__ = exc
        finally:
            record.ended_at = self._now()
            if status is TaskStatus.CANCELLED and record.error is None:
                record.error = _cancelled(record)
            self._finish(record, status)

    async def _check_approval(self, tool: Tool, record: TaskRecord) -> None:
        if self._approve is None:
            raise ApprovalError(
                f"task {record.id}: {tool.name} has side effects and needs approval; pass "
                "Compiler(approve=...) (dagcall ask --yes approves every call)",
                tool=tool.name,
                task_id=record.id,
            )
        verdict = self._approve(record)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if not verdict:
            raise ApprovalError(
                f"task {record.id}: {tool.name}{_args_text(record)} was not approved",
                tool=tool.name,
                task_id=record.id,
            )

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
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        for record in list(self.records.values()):
            if not record.status.terminal:
                record.error = _cancelled(record)
                self._finish(record, TaskStatus.CANCELLED)


def _args_text(record: TaskRecord) -> str:
    args = record.resolved_args or {}
    return "(" + ", ".join(f"{k}={v!r}" for k, v in args.items())[:200] + ")"


def _cancelled(record: TaskRecord) -> DagcallError:
    return ToolError(
        f"task {record.id} ({record.tool}) was cancelled before it finished",
        tool=record.tool,
        task_id=record.id,
    )


class _maybe:
    """``async with`` a semaphore when there is one."""

    __slots__ = ("_sem",)

    def __init__(self, sem: asyncio.Semaphore | None) -> None:
        self._sem = sem

    async def __aenter__(self) -> None:
        if self._sem is not None:
            await self._sem.acquire()

    async def __aexit__(self, *exc: object) -> None:
        if self._sem is not None:
            self._sem.release()
