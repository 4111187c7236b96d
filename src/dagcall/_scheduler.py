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

from ._context import ToolContext, _CallControl, _current, _ignore_call, _no_limit
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
from ._tools import (
    MAX_ERROR_CHARS,
    Approver,
    Tool,
    _exception_text,
    _safe_text,
    _unwrap_exception,
)

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
        tokens_left: Callable[[], int | None] | None = None,
    ) -> None:
        self._approve = approve
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
                    waiter.error = _cancelled(waiter)
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
    async def _execute(self, record: TaskRecord) -> None:
        tool = self._tools[record.tool]
        spec = self._specs[record.id]
        status = TaskStatus.FAILED
        # Every call gets its context (ids, usage sink, cancellation signal), set in this
        # asyncio task's own context so the tool sees it from its worker thread too.
        ctx = ToolContext(
            record.id,
            tool.name,
            record.round,
            self._t0,
            self._record_llm_call or _ignore_call,
            self._tokens_left or _no_limit,
        )
        _current.set(ctx)
        control = ctx._control
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
                if timeout == float("inf"):
                    timeout = None
                try:
                    async with asyncio.timeout(timeout) as scope:
                        record.output = await tool.invoke(record.resolved_args)
                except TimeoutError:
                    if not scope.expired():
                        raise
                    raise ToolTimeoutError(
                        f"task {record.id}: {tool.name} did not finish within {timeout:g} s"
                        + _stop_text(control),
                        tool=tool.name,
                        task_id=record.id,
                    ) from None
                status = TaskStatus.DONE
        except asyncio.CancelledError as exc:
            if _cancelled_by_us(control):
                abandoned = control.outcome == "abandoned"
                status = TaskStatus.ABANDONED if abandoned else TaskStatus.CANCELLED
                record.error = _cancelled(record, control)
                raise
            record.error = _tool_failure(record, tool, exc)  # the tool's own CancelledError
        except ToolError as exc:
            record.error = _tool_error(record, tool, exc)
        except BaseException as exc:  # whatever a tool raises is its failure
            record.error = _tool_failure(record, tool, exc)
        finally:
            record.ended_at = self._now()
            if status is TaskStatus.CANCELLED and record.error is None:
                record.error = _cancelled(record)
            self._finish(record, status)

    async def _check_approval(self, tool: Tool, record: TaskRecord) -> None:
        """Run the approver; only ``True`` approves (anything else, or its failing, refuses)."""
        if self._approve is None:
            raise ApprovalError(
                f"task {record.id}: {tool.name} has side effects and needs approval; pass "
                "Compiler(approve=...) (dagcall ask --yes approves every call)",
                tool=tool.name,
                task_id=record.id,
            )
        try:
            verdict = self._approve(record)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and _cancelled_by_us(None):
                raise
            raise ApprovalError(
                f"task {record.id}: the approver raised {_exception_text(exc)} deciding on "
                f"{tool.name}{_args_text(record)}; it was not run",
                tool=tool.name,
                task_id=record.id,
            ) from exc
        if verdict is True:
            return
        why = ""
        if not isinstance(verdict, bool):
            why = (
                f" (the approver returned {_safe_text(verdict, 80, use_repr=True)}, a "
                f"{type(verdict).__name__}; only True approves)"
            )
        raise ApprovalError(
            f"task {record.id}: {tool.name}{_args_text(record)} was not approved{why}",
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
        # Waiting tasks were cancelled too, not skipped for a failed input: mark them first, so
        # the running ones' ends do not cascade into skips.
        self._closing = True
        for record in list(self.records.values()):
            if record.status is TaskStatus.WAITING and record.id in self._waiting_on:
                record.error = _cancelled(record)
                self._finish(record, TaskStatus.CANCELLED)
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        for record in list(self.records.values()):
            if not record.status.terminal:
                record.error = _cancelled(record)
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


def _args_text(record: TaskRecord, limit: int = 200) -> str:
    """The resolved arguments as ``(k=v, ...)``, bounded, whatever their reprs do."""
    args = record.resolved_args or {}
    text = ", ".join(f"{k}={_safe_text(v, limit, use_repr=True)}" for k, v in args.items())
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"({text})"


def _stop_text(control: _CallControl) -> str:
    """What a timeout's message adds about a call that could not be stopped, or was killed."""
    if control.outcome == "abandoned":
        return f" and was abandoned: {control.note}"
    return f"; {control.note}" if control.note else ""


def _cancelled(record: TaskRecord, control: _CallControl | None = None) -> DagcallError:
    """The error of a cancelled task; of an abandoned one when its call could not be stopped."""
    if control is not None and control.outcome == "abandoned":
        text = (
            f"task {record.id} ({record.tool}) was abandoned when its run was cancelled: "
            f"{control.note}"
        )
    else:
        text = f"task {record.id} ({record.tool}) was cancelled before it finished"
        if control is not None and control.note:
            text += f"; {control.note}"
    return ToolError(text, tool=record.tool, task_id=record.id)


def _cancelled_by_us(control: _CallControl | None) -> bool:
    """Whether a CancelledError is the run's (task cancelled, or a timeout), not a tool's own."""
    if control is not None and control.outcome:
        return True  # Tool.invoke handled a cancellation of the call
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _tool_failure(record: TaskRecord, tool: Tool, exc: BaseException) -> ToolExecutionError:
    """What a tool raised, as its task's error: bounded, and safe from a broken ``__str__``."""
    exc = _unwrap_exception(exc)
    error = ToolExecutionError(
        f"task {record.id}: {tool.name} raised {_exception_text(exc)}",
        tool=tool.name,
        task_id=record.id,
    )
    error.__cause__ = exc
    return error


def _tool_error(record: TaskRecord, tool: Tool, exc: ToolError) -> ToolError:
    """A ToolError from the call (ours, or the tool's own), with its ids and a bounded text;
    one too broken to keep (a subclass that skipped ``__init__``) is wrapped instead."""
    try:
        message = getattr(exc, "message", None)
        if not isinstance(message, str) or len(message) > 2 * MAX_ERROR_CHARS:
            exc.message = _safe_text(exc if message is None else message, 2 * MAX_ERROR_CHARS)
        if getattr(exc, "task_id", None) is None:
            exc.task_id = record.id
        if not isinstance(getattr(exc, "tool", None), str) or not exc.tool:
            exc.tool = tool.name
    except Exception:
        return _tool_failure(record, tool, exc)
    return exc


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
