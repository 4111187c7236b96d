"""The executor: runs one tool call with its limits, timeout and approval.

The task fetching unit (``_scheduler.py``) decides *when* a task runs; an :class:`Executor`
decides *how*.  :class:`AsyncioExecutor` is the default: tool calls as asyncio tasks (sync
tools in worker threads, ``isolation="process"`` tools in their own processes), with global and
per-tool concurrency limits, per-call timeouts and approval of side effects.  Plug another in
with ``Compiler(executor=...)`` (a remote executor, a recording wrapper around the default).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._context import ToolContext, _CallControl, _current
from ._errors import (
    ApprovalError,
    DagcallError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
)
from ._result import TaskRecord, TaskStatus
from ._tools import (
    MAX_ERROR_CHARS,
    Approver,
    BaseTool,
    _exception_text,
    _safe_text,
    _unwrap_exception,
)

__all__ = ["AsyncioExecutor", "Executor", "Invocation", "Outcome"]


@dataclass(frozen=True)
class Invocation:
    """One tool call handed to an executor.

    ``record`` is the task (its id, tool, call and round; the executor sets
    ``record.resolved_args`` once the arguments are validated, so an approver sees them);
    ``args`` / ``kwargs`` are the plan's arguments with ``$N`` references substituted, not yet
    validated; ``context`` is what the tool sees as :func:`~dagcall.current_tool_context`
    (set it in the task that runs the tool); call ``started()`` when the call really starts,
    after any queueing, so the task's ``started_at`` is true.
    """

    record: TaskRecord
    tool: BaseTool
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    context: ToolContext
    started: Callable[[], None]


@dataclass(frozen=True)
class Outcome:
    """How a call ended: ``done`` with its ``output``, or ``failed`` with its ``error``.

    Cancellation is not an outcome: an executor lets the ``CancelledError`` of its task
    through, and the task fetching unit records the task cancelled (or abandoned).
    """

    status: TaskStatus
    output: Any = None
    error: DagcallError | None = None

    @classmethod
    def done(cls, output: Any) -> Outcome:
        return cls(TaskStatus.DONE, output)

    @classmethod
    def failed(cls, error: DagcallError) -> Outcome:
        return cls(TaskStatus.FAILED, error=error)


@runtime_checkable
class Executor(Protocol):
    """Runs tool calls: ``await execute(invocation)`` returns the call's :class:`Outcome`."""

    async def execute(self, invocation: Invocation) -> Outcome: ...


class AsyncioExecutor:
    """The default executor: each call in the caller's asyncio task, sync tools in worker
    threads (``isolation="process"`` ones in processes), with ``max_concurrency`` calls at
    once across all tools, each tool's own ``max_concurrency``, ``tool_timeout`` for tools
    without a timeout of their own (``None``: no limit), and ``approve`` for side effects.
    Anything a tool raises becomes a failed outcome with a bounded message."""

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        tool_timeout: float | None = None,
        approve: Approver | None = None,
    ) -> None:
        self._approve = approve
        self._tool_timeout = tool_timeout
        self._max_concurrency = max_concurrency
        self._global = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._per_tool: dict[str, asyncio.Semaphore] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _limits(self, tool: BaseTool) -> tuple[asyncio.Semaphore | None, asyncio.Semaphore | None]:
        """The tool's own limit and the global one, made anew when the event loop changed (an
        executor kept across ``Compiler.run`` calls, each on its own loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            cap = self._max_concurrency
            self._global = asyncio.Semaphore(cap) if cap else None
            self._per_tool = {}
        return self._tool_limit(tool), self._global

    def _tool_limit(self, tool: BaseTool) -> asyncio.Semaphore | None:
        if not tool.max_concurrency:
            return None
        sem = self._per_tool.get(tool.name)
        if sem is None:
            sem = self._per_tool[tool.name] = asyncio.Semaphore(tool.max_concurrency)
        return sem

    async def execute(self, invocation: Invocation) -> Outcome:
        tool, record = invocation.tool, invocation.record
        # Set in this asyncio task's own context, so the tool sees it from its thread too.
        _current.set(invocation.context)
        control = invocation.context._control
        per_tool, overall = self._limits(tool)
        try:
            async with _maybe(per_tool), _maybe(overall):
                invocation.started()
                record.resolved_args = tool.validate(
                    invocation.args, invocation.kwargs, task_id=record.id
                )
                if tool.side_effects:
                    await self._check_approval(tool, record)
                timeout = tool.timeout if tool.timeout is not None else self._tool_timeout
                if timeout == float("inf"):
                    timeout = None
                try:
                    async with asyncio.timeout(timeout) as scope:
                        output = await self._run_call(invocation)
                except TimeoutError:
                    if not scope.expired():
                        raise
                    raise ToolTimeoutError(
                        f"task {record.id}: {tool.name} did not finish within {timeout:g} s"
                        + _stop_text(control),
                        tool=tool.name,
                        task_id=record.id,
                    ) from None
                return Outcome.done(output)
        except asyncio.CancelledError as exc:
            if cancelled_by_us(control):
                raise
            return Outcome.failed(tool_failure(record, tool, exc))  # the tool's own
        except ToolError as exc:
            return Outcome.failed(_tool_error(record, tool, exc))
        except BaseException as exc:  # whatever a tool raises is its failure
            return Outcome.failed(tool_failure(record, tool, exc))

    async def _run_call(self, invocation: Invocation) -> Any:
        """Run the validated, approved call (``invocation.record.resolved_args``) and return
        its output: the one step an executor that runs calls elsewhere overrides.

        Everything around it is shared: the limits are held, ``started()`` was called, the
        timeout is running and ``current_tool_context()`` is set.  Raise what the tool raised
        (it becomes a failed outcome); when cancelled (the run's cancellation, or the timeout),
        stop the call, note how on ``invocation.context._control`` and let the
        ``CancelledError`` through."""
        return await invocation.tool.invoke(invocation.record.resolved_args or {})

    async def _check_approval(self, tool: BaseTool, record: TaskRecord) -> None:
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
            if isinstance(exc, asyncio.CancelledError) and cancelled_by_us(None):
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


def cancelled_error(record: TaskRecord, control: _CallControl | None = None) -> DagcallError:
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


def cancelled_by_us(control: _CallControl | None) -> bool:
    """Whether a CancelledError is the run's (task cancelled, or a timeout), not a tool's own."""
    if control is not None and control.outcome:
        return True  # Tool.invoke handled a cancellation of the call
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def tool_failure(record: TaskRecord, tool: BaseTool, exc: BaseException) -> ToolExecutionError:
    """What a tool raised, as its task's error: bounded, and safe from a broken ``__str__``."""
    exc = _unwrap_exception(exc)
    error = ToolExecutionError(
        f"task {record.id}: {tool.name} raised {_exception_text(exc)}",
        tool=tool.name,
        task_id=record.id,
    )
    error.__cause__ = exc
    return error


def _tool_error(record: TaskRecord, tool: BaseTool, exc: ToolError) -> ToolError:
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
        return tool_failure(record, tool, exc)
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
