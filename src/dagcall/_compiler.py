"""The run loop: plan (streamed into the scheduler) → execute → join → answer or replan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing
from typing import Any

from ._errors import (
    BudgetError,
    DagcallError,
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
                await run.close("timeout")
                error = RunTimeoutError(
                    f"the run did not finish within its {budget:g} s budget; outstanding tasks "
                    "were cancelled (raise timeout= or lower the work per question)",
                    limit="timeout",
                    value=budget,
                )
                error.result = run.result
                raise error from None
            await run.close(type(exc).__name__ if isinstance(exc, Exception) else "cancelled")
            if isinstance(exc, DagcallError):
                exc.result = run.result
            raise
        await run.close(run.result.stop_reason)
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
        self.scheduler = Scheduler(
            compiler.tools,
            t0=self.t0,
            max_concurrency=compiler.max_concurrency,
            tool_timeout=compiler.tool_timeout,
            record_llm_call=self.add_call,
            approve=compiler.approve,
            on_change=self.task_changed if on_event else None,
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
            await self.scheduler.wait_idle()
            if self.over_budget is not None:  # a tool's own LLM calls went over max_tokens
                raise self.over_budget
            decision = await self.join(rnd, may_replan=index < last)
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
        started = self.now()
        first: float | None = None
        usage: TokenUsage | None = None
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
                    self.emit("plan_text", text=event)
                    self.accept(parser.feed(event), rnd)
            self.accept(parser.close(), rnd)
        except (UsageError, BudgetError):
            raise  # the configuration or a limit, not the model, ended the plan
        except Exception as exc:
            self.accept(parser.close(complete=False), rnd)
            error = _model_error(exc, c.planner, "planner")
            if not rnd.task_ids:
                raise error from exc
            rnd.errors.append(error)  # the tasks it did write still run; the joiner decides
        finally:
            rnd.plan = parser.text
            rnd.thought = parser.trailing_thought
            self.record_call(
                "planner", c.planner, rnd, messages, parser.text, usage, started, first
            )

    def accept(self, items: Sequence[PlanItem], rnd: Round) -> None:
        for item in items:
            if isinstance(item, TaskSpec):
                limit = self.c.max_tasks
                if limit is not None and len(rnd.task_ids) >= limit:
                    raise BudgetError(
                        f"the plan has more than max_tasks={limit} tasks (task {item.id} is "
                        "one too many); raise max_tasks or ask a narrower question",
                        limit="max_tasks",
                        value=limit,
                    )
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
        except (UsageError, BudgetError):
            raise
        except Exception as exc:
            raise _model_error(exc, c.joiner, "joiner") from exc
        finally:
            self.record_call(
                "joiner", c.joiner, rnd, messages, "".join(parts), usage, started, first
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
        """Record an LLM call and hold the run to its token budget."""
        self.result.usage.append(call)
        limit = self.c.max_tokens
        used = self.result.input_tokens + self.result.output_tokens
        if limit is not None and used > limit:
            self.over_budget = BudgetError(
                f"the run used {used:,} LLM tokens, over max_tokens={limit:,} (after a "
                f"{call.role} call); raise max_tokens or simplify the question",
                limit="max_tokens",
                value=limit,
            )
            raise self.over_budget

    async def close(self, stop_reason: str) -> None:
        """Cancel anything outstanding and fill in the result's totals."""
        await self.scheduler.cancel_all()
        self.result.tasks = [self.scheduler.records[i] for i in sorted(self.scheduler.records)]
        self.result.usage.sort(key=lambda call: call.started_at)
        self.result.wall_time = self.now()
        if not self.result.stop_reason:
            self.result.stop_reason = stop_reason
        self.emit("finished")


async def _idle_guard(
    stream: AsyncGenerator[str | TokenUsage, None],
    idle: float | None,
    model: Model,
    role: str,
) -> AsyncGenerator[str | TokenUsage, None]:
    """The model's stream, failing with ModelStreamError when it sends nothing for ``idle`` s."""
    async with aclosing(stream):
        while True:
            try:
                async with asyncio.timeout(idle) as scope:
                    event = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not scope.expired():
                    raise
                raise ModelStreamError(
                    f"the {role} model {model.name} sent nothing for {idle:g} s and was given "
                    "up (llm_idle_timeout)",
                    model=model.name,
                ) from None
            yield event


def _model_error(exc: Exception, model: Model, role: str) -> ModelError:
    if isinstance(exc, ModelError):
        return exc
    error = ModelError(
        f"the {role} model {model.name} failed: {type(exc).__name__}: {exc}", model=model.name
    )
    error.__cause__ = exc
    return error
