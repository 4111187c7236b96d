"""What every agent's run shares: the clock, the result being built, the task fetching unit,
the budgets, the events, and how a run ends (its time budget, partial results, clean-up).

The compiler's run loop (``_compiler.py``) and the baselines (ReAct, parallel function
calling, Tree of Thoughts) are each a :class:`RunScope` subclass with a ``body``; :func:`drive`
runs one under its time budget, so they all have the same timeouts, token budgets, events and
errors carrying the partial result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from ._budget import Budget
from ._context import measured_call
from ._errors import BudgetError, DagcallError, RunTimeoutError, UsageError
from ._executor import Executor
from ._result import (
    CallRole,
    EventKind,
    LLMCall,
    RunEvent,
    RunResult,
    StopReason,
    TaskRecord,
    revive_error,
)
from ._scheduler import Scheduler
from ._tools import Approver, BaseTool
from .models import Completion, Message, Model, complete, complete_with_tools

__all__ = ["Agent", "EventHandler", "RunLimits", "RunScope", "check_limits", "drive"]

log = logging.getLogger("dagcall")
EventHandler = Callable[[RunEvent], None]


class RunLimits:
    """The limits and policies a run is held to (shared by the compiler and the baselines)."""

    def __init__(
        self,
        *,
        timeout: float | None = None,
        tool_timeout: float | None = 60.0,
        max_concurrency: int | None = None,
        max_tasks: int | None = None,
        max_tokens: int | None = None,
        approve: Approver | None = None,
        executor: Executor | None = None,
    ) -> None:
        check_limits(
            timeout=timeout,
            tool_timeout=tool_timeout,
            max_concurrency=max_concurrency,
            max_tasks=max_tasks,
            max_tokens=max_tokens,
            executor=executor,
        )
        self.timeout = timeout
        self.tool_timeout = tool_timeout
        self.max_concurrency = max_concurrency
        self.max_tasks = max_tasks
        self.max_tokens = max_tokens
        self.approve = approve
        self.executor = executor


def check_limits(
    *,
    timeout: float | None = None,
    tool_timeout: float | None = None,
    llm_idle_timeout: float | None = None,
    max_concurrency: int | None = None,
    max_tasks: int | None = None,
    max_tokens: int | None = None,
    executor: object = None,
) -> None:
    """Raise :class:`~dagcall.UsageError` for a limit that cannot be one."""
    for label, value in (
        ("timeout", timeout),
        ("tool_timeout", tool_timeout),
        ("llm_idle_timeout", llm_idle_timeout),
    ):
        if value is not None and value <= 0:
            raise UsageError(f"{label} must be positive (or None for no limit)")
    if max_concurrency is not None and max_concurrency < 1:
        raise UsageError("max_concurrency must be at least 1 (or None for no limit)")
    for label, limit in (("max_tasks", max_tasks), ("max_tokens", max_tokens)):
        if limit is not None and limit < 1:
            raise UsageError(f"{label} must be at least 1 (or None for no limit)")
    if executor is not None and not isinstance(executor, Executor):
        raise UsageError(
            f"executor must have an async execute(invocation) method, not {executor!r}"
        )


class RunScope:
    """One question's run as it is being made: ``result`` (the :class:`RunResult` it fills
    in), ``scheduler`` (the task fetching unit), ``budget`` and ``round``; ``now()`` is the
    run's clock, ``emit`` sends a :class:`RunEvent`, ``add_call`` records an LLM call.
    Subclasses implement :meth:`body`, which sets ``result.answer`` and ``stop_reason``."""

    def __init__(
        self,
        question: str,
        tools: Mapping[str, BaseTool],
        limits: RunLimits,
        on_event: EventHandler | None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.result = RunResult(question=question, start_time=time.time())
        self.on_event = on_event
        self.round = 0
        self.budget = Budget(max_tokens=limits.max_tokens, max_tasks=limits.max_tasks)
        self.scheduler = Scheduler(
            tools,
            t0=self.t0,
            max_concurrency=limits.max_concurrency,
            tool_timeout=limits.tool_timeout,
            record_llm_call=self.add_call,
            approve=limits.approve,
            on_change=self.task_changed if on_event else None,
            tokens_left=self.budget.tokens_left if limits.max_tokens is not None else None,
            executor=limits.executor,
        )

    async def body(self) -> None:
        raise NotImplementedError

    def add_call(self, call: LLMCall) -> None:
        """Record an LLM call (also a tool's own, from its callback); never raises: going over
        ``max_tokens`` is noted, and raised by the loop at its next check."""
        self.result.usage.append(call)
        self.budget.add(call)

    async def wait_for_tasks(self) -> None:
        """Wait until every task has finished, or a tool's model calls spend the budget."""
        if self.scheduler.outstanding == 0:
            return
        idle = asyncio.ensure_future(self.scheduler.wait_idle())
        spent = asyncio.ensure_future(self.budget.spent.wait())
        try:
            await asyncio.wait((idle, spent), return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            spent.cancel()

    async def close(self, stop_reason: StopReason, error: BaseException | None = None) -> None:
        """Cancel anything outstanding and fill in the result's totals."""
        await self.scheduler.cancel_all()
        records = self.scheduler.records
        self.result.tasks = [records[i] for i in sorted(records)]
        self.result.usage.sort(key=lambda call: call.started_at)
        self.result.wall_time = self.now()
        if self.result.stop_reason is StopReason.RUNNING:
            self.result.stop_reason = stop_reason
        if error is not None and self.result.error is None:
            self.result.error = (
                error
                if isinstance(error, DagcallError)
                else revive_error({"type": type(error).__name__, "message": str(error)})
            )
        self.emit("finished")

    # -- events ----------------------------------------------------------------------------
    def now(self) -> float:
        return time.perf_counter() - self.t0

    def emit(self, kind: EventKind, *, task: TaskRecord | None = None, text: str = "") -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(RunEvent(kind, self.result, self.round, task, text))
        except Exception as exc:  # a broken live view must not break the run
            log.warning(
                "dagcall: the on_event handler raised %s; the run goes on",
                type(exc).__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )

    def task_changed(self, record: TaskRecord) -> None:
        self.emit("task", task=record)

    async def call_model(
        self,
        role: CallRole,
        model: Model,
        messages: Sequence[Message],
        *,
        round_index: int = 0,
        stop: Sequence[str] = (),
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Completion:
        """One model call of the run's own, recorded and held to the budget: streamed text is
        metered against ``max_tokens`` (stopping a model that streams past it) and sent as
        ``plan_text`` events; with ``tools``, the call goes through the provider's native
        tool calls instead."""
        started = self.now()
        if tools is None:
            meter = self.budget.meter(messages, role)

            def on_text(text: str) -> None:
                meter(text)
                self.emit("plan_text", text=text)

            completion = await complete(model, messages, stop=stop, on_text=on_text)
        else:
            completion = await complete_with_tools(model, messages, tools)
        ended = self.now()
        self.add_call(measured_call(role, model, round_index, messages, completion, started, ended))
        self.budget.check()
        return completion


class Agent:
    """An agent whose runs are :class:`RunScope` objects: ``arun`` drives one under the
    time budget (``timeout=``, else ``self.limits.timeout``), ``run`` is its sync form.
    Subclasses set ``limits`` and implement :meth:`scope`."""

    limits: RunLimits

    def scope(self, question: str, on_event: EventHandler | None) -> RunScope:
        raise NotImplementedError

    async def arun(
        self,
        question: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a run budget, not a call's timeout
        on_event: EventHandler | None = None,
    ) -> RunResult:
        """Answer ``question``; errors carry the partial result as ``.result``."""
        budget = timeout if timeout is not None else self.limits.timeout
        return await drive(self.scope(question, on_event), budget)

    def run(self, question: str, *, timeout: float | None = None) -> RunResult:
        """Synchronous :meth:`arun`, for code without an event loop."""
        return asyncio.run(self.arun(question, timeout=timeout))


def stop_reason_of(exc: BaseException) -> StopReason:
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return StopReason.CANCELLED
    if isinstance(exc, RunTimeoutError):
        return StopReason.TIMEOUT
    if isinstance(exc, BudgetError):
        return StopReason.BUDGET
    return StopReason.ERROR


async def drive(scope: RunScope, timeout: float | None) -> RunResult:  # noqa: ASYNC109
    """Run ``scope.body()`` within ``timeout`` seconds and return its result.

    When the time runs out, everything outstanding is cancelled and
    :class:`~dagcall.RunTimeoutError` is raised; any error raised keeps the partial run as
    its ``result``.  Clean-up always runs to the end, also when the run is cancelled.
    """
    try:
        async with asyncio.timeout(timeout) as deadline:
            await scope.body()
    except BaseException as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            error = RunTimeoutError(
                f"the run did not finish within its {timeout:g} s budget; outstanding tasks "
                "were cancelled (raise timeout= or lower the work per question)",
                limit="timeout",
                value=timeout,
            )
            await _close_fully(scope.close(StopReason.TIMEOUT, error))
            error.result = scope.result
            raise error from None
        recorded = exc if isinstance(exc, Exception) else None
        await _close_fully(scope.close(stop_reason_of(exc), recorded))
        if not isinstance(exc, asyncio.CancelledError):  # any error keeps the partial run
            with contextlib.suppress(AttributeError, TypeError):
                exc.result = scope.result  # type: ignore[attr-defined]
        raise
    await _close_fully(scope.close(StopReason.FINISH))
    return scope.result


async def _close_fully(closing: Coroutine[Any, Any, None]) -> None:
    """Run a run's clean-up to the end even when the run is cancelled meanwhile (so nothing
    it started is left running), then let that cancellation through."""
    task = asyncio.ensure_future(closing)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() and task.cancelled():
                raise
            cancelled = True
    task.result()  # the clean-up's own error, if it had one
    if cancelled:
        raise asyncio.CancelledError
