"""The run loop: plan (streamed into the scheduler) → execute → join → answer or replan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from contextlib import aclosing
from typing import Any

from ._errors import (
    BudgetError,
    ModelError,
    ModelStreamError,
    RunTimeoutError,
    UsageError,
)
from ._grammar import plan_grammar
from ._joiner import JoinerDecision, parse_joiner
from ._plan import END_OF_PLAN, PlanItem, PlanParser, TaskSpec
from ._prompts import joiner_messages, planner_messages
from ._result import EventKind, LLMCall, Round, RunEvent, RunResult, TaskRecord
from ._scheduler import Scheduler
from ._tokens import estimate_tokens
from ._tools import Approver, Tool
from .models import Message, Model, TokenUsage, resolve_model

__all__ = ["Compiler"]

log = logging.getLogger("dagcall")
EventHandler = Callable[[RunEvent], None]


class Compiler:
    """Answers questions by planning tool calls as a graph and running it in parallel.

    ``model`` plans and joins unless ``planner_model`` / ``joiner_model`` override it; each
    may be a :class:`~dagcall.models.Model` or a model string such as ``"openai:gpt-4o-mini"``.
    ``tools`` are :func:`~dagcall.tool` objects or plain typed functions.

    Options (keyword-only): ``max_replans`` (0 = never replan); ``timeout`` (seconds for a
    whole run, after which everything outstanding is cancelled and
    :class:`~dagcall.RunTimeoutError` is raised); ``tool_timeout`` (default per-call limit for
    tools without their own); ``max_concurrency`` (tool calls at once across all tools);
    ``llm_idle_timeout`` (seconds a model stream may stay silent before it is given up as a
    :class:`~dagcall.ModelStreamError`); ``max_tasks`` (tasks in one plan) and ``max_tokens``
    (LLM tokens in and out for a run, tools' own model calls included), which raise
    :class:`~dagcall.BudgetError` naming the limit, with the partial result; ``approve``
    (called with each task of a tool declared ``side_effects=True``, sync or async; such tasks
    run only when it returns true, and are refused without it); ``examples`` (planner
    examples replacing the built-in one; ``""`` for none); and ``constrained_plans`` (decode
    plans under a grammar of the plan language so they always parse; on by default for
    planners that support it, i.e. ``LocalModel``).

    With no model at all, ``DAGCALL_MODEL`` names one, else the embedded local model is used.
    """

    def __init__(
        self,
        model: Model | str | None = None,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        *,
        planner_model: Model | str | None = None,
        joiner_model: Model | str | None = None,
        max_replans: int = 2,
        timeout: float | None = None,
        tool_timeout: float | None = 60.0,
        max_concurrency: int | None = None,
        llm_idle_timeout: float | None = 300.0,
        max_tasks: int | None = 64,
        max_tokens: int | None = None,
        approve: Approver | None = None,
        examples: str | None = None,
        constrained_plans: bool | None = None,
    ) -> None:
        if model is None and (planner_model is None or joiner_model is None):
            model = resolve_model(None)  # DAGCALL_MODEL, else the embedded local model
        self.planner = resolve_model(planner_model if planner_model is not None else model)
        self.joiner = resolve_model(joiner_model if joiner_model is not None else model)
        self.tools: dict[str, Tool] = {}
        for t in tools:
            t = t if isinstance(t, Tool) else Tool(t)
            if t.name in self.tools:
                raise UsageError(f"two tools are named {t.name!r}; give one another name")
            self.tools[t.name] = t
        if max_replans < 0:
            raise UsageError("max_replans must be 0 or more")
        for label, value in (
            ("timeout", timeout),
            ("tool_timeout", tool_timeout),
            ("llm_idle_timeout", llm_idle_timeout),
        ):
            if value is not None and value <= 0:
                raise UsageError(f"{label} must be positive (or None for no limit)")
        if max_concurrency is not None and max_concurrency < 1:
            raise UsageError("max_concurrency must be at least 1 (or None for no limit)")
        self.max_replans = max_replans
        self.timeout = timeout
        self.tool_timeout = tool_timeout
        self.max_concurrency = max_concurrency
        for label, limit in (("max_tasks", max_tasks), ("max_tokens", max_tokens)):
            if limit is not None and limit < 1:
                raise UsageError(f"{label} must be at least 1 (or None for no limit)")
        self.llm_idle_timeout = llm_idle_timeout
        self.max_tasks = max_tasks
        self.max_tokens = max_tokens
        self.approve = approve
        self.examples = examples
        if constrained_plans is None:
            constrained_plans = self.planner.supports_grammar
        if constrained_plans and not self.planner.supports_grammar:
            raise UsageError(
                f"constrained_plans=True needs a planner that supports grammars "
                f"(a LocalModel); {self.planner.name} does not"
            )
        self.plan_grammar = (
            plan_grammar(list(self.tools.values())) if constrained_plans and self.tools else None
        )

    def planner_messages(self, question: str) -> list[Message]:
        """The messages the planner gets for a first plan (to inspect or test prompts)."""
        return planner_messages(question, list(self.tools.values()), examples=self.examples)

    async def arun(
        self,
        question: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a run budget, not a call's timeout
        on_event: EventHandler | None = None,
    ) -> RunResult:
        """Answer ``question``.

        ``on_event`` is called with a :class:`~dagcall.RunEvent` as the plan streams, tasks
        start and end, and the joiner answers (for live views; it must not block).

        Raises a :class:`~dagcall.DagcallError` subclass when the run cannot finish (a model
        failing, the time budget running out); its ``result`` holds the partial run.
        """
        if not question.strip():
            raise UsageError("the question is empty")
        budget = timeout if timeout is not None else self.timeout
        run = _Run(self, question, on_event)
        try:
            async with asyncio.timeout(budget) as scope:
                await run.execute()
        except BaseException as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                await _close_fully(run.close("timeout"))
                error = RunTimeoutError(
                    f"the run did not finish within its {budget:g} s budget; outstanding tasks "
                    "were cancelled (raise timeout= or lower the work per question)",
                    limit="timeout",
                    value=budget,
                )
                error.result = run.result
                raise error from None
            await _close_fully(
                run.close(type(exc).__name__ if isinstance(exc, Exception) else "cancelled")
            )
            if isinstance(exc, Exception):  # even an unexpected error keeps the partial run
                with contextlib.suppress(AttributeError, TypeError):
                    exc.result = run.result  # type: ignore[attr-defined]
            raise
        await _close_fully(run.close(run.result.stop_reason))
        return run.result

    def run(
        self,
        question: str,
        *,
        timeout: float | None = None,
        on_event: EventHandler | None = None,
    ) -> RunResult:
        """Synchronous :meth:`arun`, for code without an event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(question, timeout=timeout, on_event=on_event))
        raise UsageError(
            "Compiler.run() was called from inside a running event loop; "
            "use 'await compiler.arun(...)' there"
        )


class _Run:
    """The state of one question's run."""

    def __init__(self, compiler: Compiler, question: str, on_event: EventHandler | None) -> None:
        self.c = compiler
        self.t0 = time.perf_counter()
        self.result = RunResult(question=question)
        self.on_event = on_event
        self.round = 0
        self.over_budget: BudgetError | None = None
        self.tokens_used = 0
        self.budget_spent = asyncio.Event()
        self.plan_lines = 0  # task lines of the current plan, valid or not
        self.scheduler = Scheduler(
            compiler.tools,
            t0=self.t0,
            max_concurrency=compiler.max_concurrency,
            tool_timeout=compiler.tool_timeout,
            record_llm_call=self.add_call,
            approve=compiler.approve,
            on_change=self.task_changed if on_event else None,
            tokens_left=self.tokens_left if compiler.max_tokens is not None else None,
        )

    def emit(self, kind: EventKind, *, task: TaskRecord | None = None, text: str = "") -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(RunEvent(kind, self.result, self.round, task, text))
        except Exception:  # a broken live view must not break the run
            log.exception("dagcall: the on_event handler raised; the run goes on")

    def task_changed(self, record: TaskRecord) -> None:
        self.emit("task", task=record)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def execute(self) -> None:
        reason = ""
        last = self.c.max_replans
        for index in range(last + 1):
            rnd = Round(index=index)
            self.round = index
            self.result.rounds.append(rnd)
            self.emit("round_start")
            await self.plan(rnd, reason)
            self.check_budget()
            await self.wait_for_tasks()
            self.check_budget()
            decision = await self.join(rnd, may_replan=index < last)
            self.check_budget()
            self.emit("round_end")
            if decision.action == "finish":
                self.result.answer = decision.text
                self.result.stop_reason = "finish"
                return
            if index == last:  # asked to replan after being told it could not
                self.result.answer = decision.thought or decision.text
                self.result.stop_reason = "max_replans"
                return
            reason = decision.text

    async def plan(self, rnd: Round, reason: str) -> None:
        c = self.c
        records = self.scheduler.records
        messages = planner_messages(
            self.result.question,
            list(c.tools.values()),
            examples=c.examples,
            rounds=self.result.rounds[:-1],
            records=records,
            reason=reason,
            first_id=max(records, default=0) + 1,
        )
        parser = PlanParser(c.tools, prior_ids=records)
        self.plan_lines = 0
        started = self.now()
        first: float | None = None
        usage: TokenUsage | None = None
        meter = self.meter(messages, "planner")
        received: list[str] = []  # everything streamed, for the call's token estimate
        try:
            options: dict[str, Any] = {}
            if c.plan_grammar is not None:  # only grammar-capable models take the keyword
                options["grammar"] = c.plan_grammar
            planner_stream = _idle_guard(
                c.planner.stream(messages, stop=[END_OF_PLAN], **options),
                c.llm_idle_timeout,
                c.planner,
                "planner",
            )
            async with aclosing(planner_stream) as stream:
                async for event in stream:
                    if isinstance(event, TokenUsage):
                        usage = event
                        continue
                    if parser.finished:
                        if event.strip():
                            break  # the plan is over; don't wait for the model's chatter
                        continue
                    if first is None and event:
                        first = self.now() - started
                    received.append(event)
                    self.emit("plan_text", text=event)
                    self.accept(parser.feed(event), rnd)
                    meter(event)
            self.accept(parser.close(), rnd)
        except (UsageError, BudgetError):
            raise  # the configuration or a limit, not the model, ended the plan
        except Exception as exc:
            self.accept(parser.close(complete=False), rnd)
            error = _model_error(exc, c.planner, "planner")
            if not rnd.task_ids:
                raise error  # noqa: B904 - cause already set; `from exc` may self-cite
            rnd.errors.append(error)  # the tasks it did write still run; the joiner decides
        finally:
            rnd.plan = parser.text
            rnd.thought = parser.trailing_thought
            self.record_call(
                "planner",
                c.planner,
                rnd,
                messages,
                "".join(received),
                meter.usage(usage),
                started,
                first,
            )

    def accept(self, items: Sequence[PlanItem], rnd: Round) -> None:
        limit = self.c.max_tasks
        for item in items:
            # Every task line counts, valid or not, so an endless stream of broken lines
            # stops as surely as an endless stream of good ones.
            if limit is not None and self.plan_lines >= limit:
                what = f"task {item.id}" if isinstance(item, TaskSpec) else "a further line"
                raise BudgetError(
                    f"the plan has more than max_tasks={limit} task lines, valid or not "
                    f"({what} is one too many); raise max_tasks or ask a narrower question",
                    limit="max_tasks",
                    value=limit,
                )
            self.plan_lines += 1
            if isinstance(item, TaskSpec):
                rnd.task_ids.append(item.id)
                self.result.tasks.append(self.scheduler.submit(item, rnd.index))
            else:
                rnd.errors.append(item)
                record = self.scheduler.reject(item, rnd.index)
                if record is not None:
                    rnd.task_ids.append(record.id)
                    self.result.tasks.append(record)

    async def join(self, rnd: Round, *, may_replan: bool) -> JoinerDecision:
        c = self.c
        messages = joiner_messages(
            self.result.question, self.result.rounds, self.scheduler.records, may_replan=may_replan
        )
        started = self.now()
        first: float | None = None
        usage: TokenUsage | None = None
        parts: list[str] = []
        self.emit("joiner_start")
        meter = self.meter(messages, "joiner")
        try:
            joiner_stream = _idle_guard(
                c.joiner.stream(messages), c.llm_idle_timeout, c.joiner, "joiner"
            )
            async with aclosing(joiner_stream) as stream:
                async for event in stream:
                    if isinstance(event, TokenUsage):
                        usage = event
                    elif event:
                        if first is None:
                            first = self.now() - started
                        parts.append(event)
                        self.emit("joiner_text", text=event)
                        meter(event)
        except (UsageError, BudgetError):
            raise
        except Exception as exc:
            raise _model_error(exc, c.joiner, "joiner")  # noqa: B904 - as in plan()
        finally:
            self.record_call(
                "joiner",
                c.joiner,
                rnd,
                messages,
                "".join(parts),
                meter.usage(usage),
                started,
                first,
            )
        text = "".join(parts)
        decision = parse_joiner(text)
        rnd.joiner_output = text
        rnd.joiner_thought = decision.thought
        rnd.decision = decision.action
        if decision.action == "finish":
            rnd.answer = decision.text
        else:
            rnd.replan_reason = decision.text
        return decision

    def record_call(
        self,
        role: Any,
        model: Model,
        rnd: Round,
        messages: Sequence[Message],
        output: str,
        usage: TokenUsage | None,
        started: float,
        first: float | None,
    ) -> None:
        estimated = usage is None or usage.estimated
        if usage is None:
            usage = TokenUsage(
                input_tokens=estimate_tokens(m.content for m in messages),
                output_tokens=estimate_tokens(output),
            )
        self.add_call(
            LLMCall(
                role=role,
                model=model.name,
                round=rnd.index,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                started_at=started,
                ended_at=self.now(),
                time_to_first_token=first,
                estimated=estimated,
            )
        )

    def add_call(self, call: LLMCall) -> None:
        """Record an LLM call (also a tool's own, from its callback); never raises.

        Going over ``max_tokens`` is noted here and raised by the run loop at its next check,
        so a limit can never replace the error or cancellation that is already unwinding."""
        self.result.usage.append(call)
        self.tokens_used += call.input_tokens + call.output_tokens
        limit = self.c.max_tokens
        if limit is not None and self.tokens_used > limit and self.over_budget is None:
            self.over_budget = BudgetError(
                f"the run used {self.tokens_used:,} LLM tokens, over max_tokens={limit:,} "
                f"(after a {call.role} call); raise max_tokens or simplify the question",
                limit="max_tokens",
                value=limit,
            )
            self.budget_spent.set()

    def tokens_left(self) -> int | None:
        """LLM tokens the run may still spend (for tools' own model calls)."""
        limit = self.c.max_tokens
        return None if limit is None else limit - self.tokens_used

    def check_budget(self) -> None:
        if self.over_budget is not None:
            raise self.over_budget

    def meter(self, messages: Sequence[Message], role: str) -> _Meter:
        """A counter of a streaming call's tokens that raises BudgetError the moment the
        run's tokens so far, this prompt and the output streamed so far pass ``max_tokens``
        (so a model that streams forever is stopped within one chunk of the limit)."""
        return _Meter(self, messages, role)

    async def wait_for_tasks(self) -> None:
        """Wait until every task has finished, or a tool's model calls spend the budget."""
        if self.scheduler.outstanding == 0:
            return
        idle = asyncio.ensure_future(self.scheduler.wait_idle())
        spent = asyncio.ensure_future(self.budget_spent.wait())
        try:
            await asyncio.wait((idle, spent), return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            spent.cancel()

    async def close(self, stop_reason: str) -> None:
        """Cancel anything outstanding and fill in the result's totals."""
        await self.scheduler.cancel_all()
        self.result.tasks = [self.scheduler.records[i] for i in sorted(self.scheduler.records)]
        self.result.usage.sort(key=lambda call: call.started_at)
        self.result.wall_time = self.now()
        if not self.result.stop_reason:
            self.result.stop_reason = stop_reason
        self.emit("finished")


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


class _Meter:
    """Counts one streaming call's output tokens as they arrive, against ``max_tokens``."""

    def __init__(self, run: _Run, messages: Sequence[Message], role: str) -> None:
        self.run = run
        self.role = role
        self.limit = run.c.max_tokens
        self.prompt = 0 if self.limit is None else estimate_tokens(m.content for m in messages)
        self.streamed = 0  # output tokens so far (chunk by chunk), counted only under a limit

    def __call__(self, text: str) -> None:
        if self.limit is None:
            return
        self.run.check_budget()  # a tool's own model call may have spent it meanwhile
        self.streamed += estimate_tokens(text)
        used = self.run.tokens_used + self.prompt + self.streamed
        if used > self.limit:
            raise BudgetError(
                f"the run reached {used:,} LLM tokens, over max_tokens={self.limit:,}, while "
                f"the {self.role} was still streaming (it was stopped); raise max_tokens or "
                "simplify the question",
                limit="max_tokens",
                value=self.limit,
            )

    def usage(self, reported: TokenUsage | None) -> TokenUsage | None:
        """The provider's usage, else (under a limit) the metered estimate."""
        if reported is not None or self.limit is None:
            return reported
        return TokenUsage(self.prompt, self.streamed, estimated=True)


async def _idle_guard(
    stream: AsyncGenerator[str | TokenUsage, None],
    idle: float | None,
    model: Model,
    role: str,
) -> AsyncGenerator[str | TokenUsage, None]:
    """The model's stream, failing with ModelStreamError when it sends nothing for ``idle`` s.

    One timer per stream, re-armed lazily when it fires (a chunk costs a clock read, not a
    timeout scope); it cancels only while the stream itself is being awaited, so time the
    consumer spends between chunks is never counted against the model.
    """
    async with aclosing(stream):
        if idle is None:
            async for event in stream:
                yield event
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - an async generator runs inside a task
        last = loop.time()
        waiting = False
        fired = False
        handle: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal handle, fired
            due = last + idle
            if waiting and loop.time() >= due:
                fired = True
                task.cancel()
            else:
                handle = loop.call_at(max(due, loop.time() + idle / 10), check)

        handle = loop.call_at(last + idle, check)
        try:
            while True:
                last = loop.time()
                waiting = True
                try:
                    event = await anext(stream)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if fired and task.uncancel() == 0:
                        raise ModelStreamError(
                            f"the {role} model {model.name} sent nothing for {idle:g} s and "
                            "was given up (llm_idle_timeout)",
                            model=model.name,
                        ) from None
                    raise
                finally:
                    waiting = False
                if fired:  # the stream swallowed our cancellation and went on: take it back
                    fired = False
                    task.uncancel()
                yield event
        finally:
            if handle is not None:
                handle.cancel()


def _model_error(exc: Exception, model: Model, role: str) -> ModelError:
    """``exc`` as a ModelError: itself if it is one (its cause chain untouched: raise it as is,
    never ``from exc``, which would make it its own cause), else a ModelError caused by it."""
    if isinstance(exc, ModelError):
        return exc
    error = ModelError(
        f"the {role} model {model.name} failed: {type(exc).__name__}: {exc}", model=model.name
    )
    error.__cause__ = exc
    return error
