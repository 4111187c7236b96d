"""The run loop, as in the paper: plan (streamed into the task fetching unit) → execute →
join → answer or replan.  The parts live in their own modules: ``_planner.py``, ``_plan.py``
(the plan language and its parser), ``_scheduler.py`` (the task fetching unit),
``_executor.py``, ``_joiner.py`` and ``_budget.py``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing
from typing import Any

from ._cache import CallCache
from ._checks import (
    answer_problem,
    comparison_problem,
    expected_kind,
    listed_options,
    name_to_look_up,
    nested_replan,
    settle_expression,
    size_of_difference,
    unasked_factor,
)
from ._errors import (
    ApprovalError,
    DependencyError,
    ToolError,
    ToolTimeoutError,
    UsageError,
)
from ._executor import Executor
from ._exemplars import ExampleBank
from ._joiner import Joiner, JoinerDecision, answer_text, asks_for_words
from ._optimize import LatencyEstimates, Optimizations, optimizations
from ._plan import PlanItem, TaskSpec, parse_plan
from ._plancache import PlanCache, PlanHit
from ._planner import Planner
from ._result import (
    Round,
    RunEvent,
    RunResult,
    StopReason,
    TaskRecord,
    TaskStatus,
    numeric_output,
    safe_text,
)
from ._run import EventHandler, RunLimits, RunScope, check_limits, drive
from ._tools import Approver, BaseTool, Tool
from ._toolsets import Toolbox, Toolset
from .models import Message, Model, resolve_model

__all__ = ["Compiler"]

#: Tool errors a new call cannot mend by other arguments: a timeout (the call may simply be
#: tried again), a denied approval, an input that did not finish.
_UNMENDABLE = (ToolTimeoutError, ApprovalError, DependencyError)


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
    run only when it returns true, and are refused without it); ``examples`` (by
    default an :class:`~dagcall.ExampleBank` chooses worked plan patterns per question,
    written with these tools, or the built-in example when it cannot cast them;
    ``"builtin"`` always the built-in example; other text replaces it, ``""`` for none); and
    ``constrained_plans`` (decode plans under a grammar of the plan language so they always
    parse, and the joiner's reply under one of ``Thought:`` and ``Action:``; on by default
    for models that support it, i.e. ``LocalModel``); ``optimize`` (an
    :class:`~dagcall.Optimizations` switching field access in plans, common calls running
    once (by default for tools marked ``cacheable=True``) and critical-path scheduling under
    ``max_concurrency``; ``True``, the default, is ``Optimizations()``, ``False`` none);
    ``call_cache`` (a :class:`~dagcall.MemoryCallCache` or :class:`~dagcall.SQLiteCallCache`
    for the results of tools marked ``cacheable=True``, across runs); ``plan_cache`` (a
    :class:`~dagcall.PlanCache`: plans of earlier questions reused for questions of the same
    shape; off by default); ``check_answers`` (on by default: a round whose named answer
    needs a call that failed with a mendable error is replanned before it is joined, while
    replans remain; an answer that is only arithmetic
    is computed; an answer of the wrong kind for the question, or with a number no result
    supports, is put to the joiner once more; see ``Round.answer_checks``).

    With no model at all, ``DAGCALL_MODEL`` names one, else the embedded local model is used.
    """

    def __init__(
        self,
        model: Model | str | None = None,
        tools: Iterable[Tool | BaseTool | Toolset | Callable[..., Any]] = (),
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
        examples: str | ExampleBank | None = None,
        constrained_plans: bool | None = None,
        executor: Executor | None = None,
        optimize: Optimizations | bool = True,
        call_cache: CallCache | None = None,
        plan_cache: PlanCache | None = None,
        check_answers: bool = True,
    ) -> None:
        if model is None and (planner_model is None or joiner_model is None):
            model = resolve_model(None)  # DAGCALL_MODEL, else the embedded local model
        self.planner = resolve_model(planner_model if planner_model is not None else model)
        self.joiner = resolve_model(joiner_model if joiner_model is not None else model)
        # Function tools, BaseTool objects (SchemaTool ...) and Toolsets; a toolset's tools
        # join ``self.tools`` (the same dict) when ``self.toolbox.open()`` has run.
        self.toolbox = Toolbox(tools)
        self.tools: dict[str, BaseTool] = self.toolbox.tools
        if max_replans < 0:
            raise UsageError("max_replans must be 0 or more")
        check_limits(
            timeout=timeout,
            tool_timeout=tool_timeout,
            llm_idle_timeout=llm_idle_timeout,
            max_concurrency=max_concurrency,
            max_tasks=max_tasks,
            max_tokens=max_tokens,
            executor=executor,
        )
        self.max_replans = max_replans
        self.timeout = timeout
        self.tool_timeout = tool_timeout
        self.max_concurrency = max_concurrency
        self.llm_idle_timeout = llm_idle_timeout
        self.max_tasks = max_tasks
        self.max_tokens = max_tokens
        self.approve = approve
        self.examples = examples
        # The joiner's reply is constrained too unless constrained decoding is switched off.
        joiner_constrained = constrained_plans is not False and self.joiner.supports_grammar
        if constrained_plans is None:
            constrained_plans = self.planner.supports_grammar
        if constrained_plans and not self.planner.supports_grammar:
            raise UsageError(
                f"constrained_plans=True needs a planner that supports grammars "
                f"(a LocalModel); {self.planner.name} does not"
            )
        self.executor = executor
        self.optimize = optimizations(optimize)
        if call_cache is not None and not isinstance(call_cache, CallCache):
            raise UsageError(
                f"call_cache must have get(key) and put(key, value, ttl) methods, not "
                f"{type(call_cache).__name__}"
            )
        self.call_cache = call_cache
        if plan_cache is not None and not isinstance(plan_cache, PlanCache):
            raise UsageError(f"plan_cache must be a PlanCache, not {type(plan_cache).__name__}")
        self.plan_cache = plan_cache
        self.check_answers = check_answers
        #: Per-tool latencies learned from this compiler's calls (critical-path scheduling).
        self.latencies = LatencyEstimates()
        self.planning = Planner(
            self.planner,
            self.tools,
            examples=examples,
            constrained=constrained_plans,
            idle_timeout=llm_idle_timeout,
            shared_prefix=self.optimize.shared_prefix,
            join_answer=self.optimize.elide_joiner,
        )
        self.joining = Joiner(
            self.joiner,
            idle_timeout=llm_idle_timeout,
            planner=self.planning,
            constrained=joiner_constrained,
        )

    @property
    def plan_grammar(self) -> str | None:
        """The GBNF grammar plans are decoded under (``None`` when unconstrained)."""
        return self.planning.grammar

    def planner_messages(self, question: str) -> list[Message]:
        """The messages the planner gets for a first plan (to inspect or test prompts)."""
        return self.planning.messages(question)

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
        await self.toolbox.open()  # once; shared by concurrent runs (nothing without toolsets)
        return await drive(_Run(self, question, on_event), budget)

    async def stream(
        self,
        question: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a run budget, not a call's timeout
    ) -> AsyncGenerator[RunEvent, None]:
        """Answer ``question``, yielding each :class:`~dagcall.RunEvent` as it happens (for
        service front ends; :meth:`arun` with ``on_event`` is the callback form).

        The last event is ``finished``; its ``result`` is the run.  An error that ends the run
        is raised after the events before it; leaving the loop early cancels the run and
        waits for it to clean up.
        """
        events: asyncio.Queue[RunEvent] = asyncio.Queue()
        run = asyncio.ensure_future(
            self.arun(question, timeout=timeout, on_event=events.put_nowait)
        )
        try:
            while True:
                next_event = asyncio.ensure_future(events.get())
                await asyncio.wait((next_event, run), return_when=asyncio.FIRST_COMPLETED)
                if not next_event.done():  # the run ended: drain what it left, then its outcome
                    next_event.cancel()
                    while not events.empty():
                        yield events.get_nowait()
                    run.result()
                    return
                event = next_event.result()
                yield event
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run

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
            return asyncio.run(self._run_once(question, timeout=timeout, on_event=on_event))
        raise UsageError(
            "Compiler.run() was called from inside a running event loop; "
            "use 'await compiler.arun(...)' there"
        )

    async def _run_once(
        self,
        question: str,
        *,
        timeout: float | None,  # noqa: ASYNC109 - a run budget, passed on to arun
        on_event: EventHandler | None,
    ) -> RunResult:
        # A toolset (a server connection, say) cannot outlive the event loop it was opened
        # on, so one opened for this loop alone is closed with it.
        opened_here = not self.toolbox.is_open
        try:
            return await self.arun(question, timeout=timeout, on_event=on_event)
        finally:
            if opened_here and self.toolbox.toolsets:
                await self.toolbox.aclose()

    async def aclose(self) -> None:
        """Close the compiler's toolsets (they are opened by the first run that needs them)."""
        await self.toolbox.aclose()

    async def __aenter__(self) -> Compiler:
        await self.toolbox.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Run(RunScope):
    """One question's run: the paper's loop of plan (streamed into the task fetching unit),
    execute, join, and answer or replan, held to the run's budgets."""

    def __init__(self, compiler: Compiler, question: str, on_event: EventHandler | None) -> None:
        limits = RunLimits(
            tool_timeout=compiler.tool_timeout,
            max_concurrency=compiler.max_concurrency,
            max_tasks=compiler.max_tasks,
            max_tokens=compiler.max_tokens,
            approve=compiler.approve,
            executor=compiler.executor,
        )
        super().__init__(question, compiler.tools, limits, on_event)
        self.scheduler.configure(
            optimize=compiler.optimize,
            call_cache=compiler.call_cache,
            latencies=compiler.latencies,
        )
        self.c = compiler

    async def body(self) -> None:
        reason = ""
        last = self.c.max_replans
        index = -1
        while index < last:
            index += 1
            rnd = Round(index=index)
            self.round = index
            self.result.rounds.append(rnd)
            self.emit("round_start")
            cache = self.c.plan_cache
            hit = None
            if index == 0 and cache is not None:
                hit = cache.lookup(self.result.question, list(self.c.planning.tools))
            if hit is not None and hit.kind == "exact":
                self.reuse(rnd, hit)
            else:
                await self.plan(rnd, reason, examples=hit.example if hit is not None else None)
                rnd.plan_cache = hit.kind if hit is not None else None
            self.budget.check()
            await self.wait_for_tasks()
            self.budget.check()
            answer = self.named_answer(rnd) if self.c.optimize.elide_joiner else None
            if answer is not None:  # the plan named its answer, and everything succeeded
                rnd.joiner_elided = True
                rnd.decision = "finish"
                rnd.answer = answer
                rnd.joiner_thought = (
                    f"the plan names task {rnd.answer_task}'s result as the answer, and every "
                    "task of the round succeeded: no joiner call"
                )
                self.emit("round_end")
                self.result.answer = answer
                self.result.stop_reason = StopReason.FINISH
                self.learn()
                return
            futile = self.futile(rnd) if self.c.check_answers else None
            if futile is not None and index == last == self.c.max_replans:
                last += 1  # the one plan a futile last replan earns, once a run
            if futile is not None and index < last:  # nothing to join: plan again at once
                rnd.answer_checks.append(futile)
                rnd.decision = "replan"
                rnd.replan_reason = reason = futile
                self.emit("round_end")
                continue
            may_replan = index < last
            if self.c.check_answers and may_replan and self.repeats(rnd):
                may_replan = False  # the replan only asked again for what was there
                rnd.answer_checks.append(
                    "the new plan only repeated calls already made: answer from the results"
                )
            if self.c.check_answers and may_replan:
                failed = self.failures(rnd)
                if failed is not None:  # fix the calls first; no answer can rest on them
                    rnd.answer_checks.append(failed)
                    rnd.decision = "replan"
                    rnd.replan_reason = reason = failed
                    self.emit("round_end")
                    continue
            decision = await self.join(rnd, may_replan=may_replan)
            self.budget.check()
            if decision.action == "finish" and self.c.check_answers:
                decision = await self.check(rnd, decision, may_replan=may_replan)
                self.budget.check()
            self.emit("round_end")
            if decision.action == "finish":
                self.result.answer = decision.text
                self.result.stop_reason = StopReason.FINISH
                self.learn()
                return
            if index == last:  # asked to replan after being told it could not
                self.result.answer = decision.thought or decision.text
                self.result.stop_reason = StopReason.MAX_REPLANS
                return
            reason = decision.text

    def failures(self, rnd: Round) -> str | None:
        """Why round ``rnd`` must be replanned before it is joined: the plan named its answer
        (``join("$M")``) and a call that answer needs failed with an error a new call can
        mend (the tool's own error or its arguments' -- not a timeout or a refusal), with
        those errors (the tools' hints); ``None`` otherwise (the joiner decides)."""
        target = rnd.answer_task
        if target is None or target not in self.scheduler.records:
            return None
        return self.mendable(sorted(self.inputs_of(target)))

    def mendable(self, task_ids: Iterable[int]) -> str | None:
        """The calls among ``task_ids`` that failed with an error a new call can mend (a
        tool's own error, a bad argument, an expression the calculator refused: any
        :class:`ToolError` but a timeout, a denied approval or a failed input), with their
        errors, as a replan's reason; ``None`` when there are none."""
        records = self.scheduler.records
        failed = [
            records[i]
            for i in task_ids
            if records[i].status is TaskStatus.FAILED
            and isinstance(records[i].error, ToolError)
            and not isinstance(records[i].error, _UNMENDABLE)
        ]
        if not failed:
            return None
        listed = "; ".join(
            f"task {r.id}, {safe_text(r.call, 200)}, failed: {safe_text(r.observation, 300)}"
            for r in failed[:5]
        )
        return (
            f"{listed}. Call again what the answer needs, with the arguments the errors ask "
            f"for; do not repeat a failed call unchanged.{self.hints(failed)}"
        )

    def hints(self, failed: Sequence[TaskRecord]) -> str:
        """Pointers past ``failed`` calls for a replan's reason (``""`` when there are none,
        else a sentence with a leading space): an argument a tool rejected that the question
        names by another tool's parameter ("the star Ossuin": call
        ``star_temperature("Ossuin")``), or else, among a few tools, those the run has not
        called yet."""
        tools = self.c.planning.tools
        question = self.result.question
        found: list[str] = []
        for rec in failed:
            for value in (rec.resolved_args or {}).values():
                if not isinstance(value, str) or not 0 < len(value.strip()) <= 80:
                    continue
                named = re.search(rf"\b(\w+)\s+{re.escape(value.strip())}\b", question, re.I)
                word = named.group(1).lower() if named else ""
                for t in tools.values():
                    names = [p.lower() for p in t.parameter_names]
                    if t.name == rec.tool or word not in names:
                        continue
                    shown = json.dumps(value.strip(), ensure_ascii=False)
                    call = (
                        f"{t.name}({shown})"
                        if len(names) == 1
                        else f"{t.name}({t.parameter_names[names.index(word)]}={shown}, ...)"
                    )
                    found.append(
                        f"the question calls {safe_text(value.strip(), 80)} a {word}, "
                        f"so call {safe_text(call, 200)}"
                    )
                    break
        called = {r.tool for r in self.scheduler.records.values()}
        untried = [
            f"{t.name}({', '.join(t.parameter_names)})"
            for t in tools.values()
            if t.name not in called
        ]
        if not found and untried and len(untried) <= 6:
            found.append(f"tools not called yet: {', '.join(untried)}")
        return f" Note: {'; '.join(dict.fromkeys(found))}." if found else ""

    async def check(
        self, rnd: Round, decision: JoinerDecision, *, may_replan: bool
    ) -> JoinerDecision:
        """The joiner's answer, checked (see :mod:`dagcall._checks`).  While a replan is
        allowed, an answer that is itself ``Replan(...)`` is taken as that replan, and a name
        read from a text where a number was asked (and no result holds one) is what the next
        plan looks the number up for.  An answer that is only arithmetic is computed; one of
        the wrong kind, or with a number no result supports, is shown to the joiner once more
        with what is wrong, and its second reply counts."""
        records = self.scheduler.records
        every = [records[i] for r in self.result.rounds for i in r.task_ids]
        observations = [rec.observation for rec in every if rec.status is TaskStatus.DONE]
        reason = nested_replan(decision.text) if may_replan else None
        if reason is not None:
            rnd.answer_checks.append("the answer was a Replan(...): taken as the replan")
        elif may_replan:
            reason = name_to_look_up(self.result.question, decision.text, observations)
            if reason is not None:
                rnd.answer_checks.append(f"the answer names what to look up: {reason}")
        if reason is not None:
            rnd.decision, rnd.replan_reason, rnd.answer = "replan", reason, None
            return dataclasses.replace(decision, action="replan", text=reason)
        decision = self.settle(rnd, decision)
        numbered = [(rec, number) for rec in every if (number := numeric_output(rec)) is not None]
        measured = [(rec.tool, rec.resolved_args or {}, number) for rec, number in numbered]
        problem = answer_problem(self.result.question, decision.text, observations)
        if problem is not None and problem.startswith("The answer's number") and numbered:
            shown = dict.fromkeys(
                f"{safe_text(rec.call, 120)} = {answer_text(n)}" for rec, n in numbered
            )
            problem += f" The results' numbers: {'; '.join(list(shown)[:8])}."
        problem = problem or comparison_problem(self.result.question, decision.text, measured)
        problem = problem or self.scaled(decision.text, numbered)
        if problem is None:
            return decision
        rnd.answer_checks.append(problem)
        first = rnd.joiner_output
        again = "Reply again in the same form: Thought, then Action."
        if may_replan:
            again += " If the results do not give the answer yet, reply Replan(<what is missing>)."
        follow_up = [
            Message("assistant", first.strip() or "-"),
            Message("user", f"{problem} {again}"),
        ]
        second = await self.join(rnd, may_replan=may_replan, then=follow_up)
        rnd.joiner_output = f"{first.rstrip()}\n\n{rnd.joiner_output}"
        if second.action == "replan" and not may_replan:
            return decision
        if second.action != "finish":
            return second
        second = self.settle(rnd, second)
        still = answer_problem(self.result.question, second.text, observations)
        failed = self.mendable(rnd.task_ids) if still is not None and may_replan else None
        if failed is None:
            return second
        # Told what was wrong, the joiner still could not answer from the results, and some
        # of this round's calls failed with errors a new call can mend: mend them.
        rnd.answer_checks.append(f"the answer is still unsupported, and calls failed: {failed}")
        rnd.decision, rnd.replan_reason, rnd.answer = "replan", failed, None
        return dataclasses.replace(second, action="replan", text=failed)

    def settle(self, rnd: Round, decision: JoinerDecision) -> JoinerDecision:
        """``decision`` with an answer that is only arithmetic replaced by its value, when the
        question asks for a number (not, say, for an expression that makes 24), and a negative
        size of a difference made positive (see :meth:`size`)."""
        if expected_kind(self.result.question) != "number":
            return decision
        value = settle_expression(decision.text)
        if value is not None:
            rnd.answer_checks.append(f"the answer {decision.text!r} was computed: {value}")
            rnd.answer = value
            decision = dataclasses.replace(decision, text=value)
        size = self.size(rnd, decision.text)
        return decision if size == decision.text else dataclasses.replace(decision, text=size)

    def size(self, rnd: Round, answer: str) -> str:
        """``answer``, made positive when it is a negative size of a difference ("how much
        shorter is A than B"), which says so in the round's checks."""
        size = size_of_difference(self.result.question, answer)
        if size is None:
            return answer
        rnd.answer_checks.append(
            f"the answer {answer!r} is negative, but the question asks how much one is more or "
            f"less than the other, the size of the difference: {size}"
        )
        rnd.answer = size
        return size

    def reuse(self, rnd: Round, hit: PlanHit) -> None:
        """Run a plan the plan cache instantiated for this question: no planner call."""
        items, parser = parse_plan(
            hit.plan, self.c.planning.tools, prior_ids=self.scheduler.records
        )
        self.emit("plan_text", text=hit.plan)
        for item in items:
            self.accept(item, rnd)
        rnd.plan = parser.text
        rnd.answer_task = parser.join_target
        rnd.line_times = [self.now()] * rnd.plan.count("\n")
        rnd.plan_cache = "exact"

    def learn(self) -> None:
        """Teach the plan cache a question answered in one round with every task done."""
        cache = self.c.plan_cache
        rounds = self.result.rounds
        if cache is None or len(rounds) != 1 or rounds[0].plan_cache == "exact":
            return
        records = self.scheduler.records
        if all(records[i].status is TaskStatus.DONE for i in rounds[0].task_ids):
            cache.learn(self.result.question, rounds[0].plan, list(self.c.planning.tools))

    async def plan(self, rnd: Round, reason: str, *, examples: str | None = None) -> None:
        """Stream a plan; each task goes to the task fetching unit as its line completes."""
        records = self.scheduler.records
        messages = self.c.planning.messages(
            self.result.question,
            rounds=self.result.rounds[:-1],
            records=records,
            reason=reason,
            examples=examples,
        )
        self.budget.new_plan()
        plan = self.c.planning.plan(
            messages,
            rnd,
            prior_ids=records,
            clock=self.now,
            meter=self.budget.meter(messages, "planner"),
            on_text=self.plan_text,
            record=self.add_call,
        )
        # Optimizations(streaming=False), the paper's ablation: no task starts before the
        # whole plan has arrived.
        held: list[PlanItem] | None = None if self.c.optimize.streaming else []
        try:
            async with aclosing(plan) as items:
                async for item in items:
                    self.accept(item, rnd, hold=held)
        finally:
            for item in held or ():
                self.submit(item, rnd)

    def accept(self, item: PlanItem, rnd: Round, *, hold: list[PlanItem] | None = None) -> None:
        """Take a plan item as it streams: a task goes to the task fetching unit now, or,
        with ``hold``, is kept there until the plan is over."""
        # Every task line counts, valid or not, so an endless stream of broken lines stops
        # as surely as an endless stream of good ones.
        self.budget.count_line(f"task {item.id}" if isinstance(item, TaskSpec) else "a line")
        if isinstance(item, TaskSpec):
            rnd.task_ids.append(item.id)
        if hold is not None:
            hold.append(item)
        else:
            self.submit(item, rnd)

    def named_answer(self, rnd: Round) -> str | None:
        """The answer a plan named with ``join("$M")``, when M is one of its tasks, every task
        of the round succeeded, the plan had no problems, the question does not ask for a
        choice or a yes or no (a tool's raw result is no answer to those) and M's result is a
        number or a short text (not a record or a list), and M's result rests on every other
        task of the round (a result the answer leaves unread says the plan stopped short);
        else ``None``."""
        records = self.scheduler.records
        target = rnd.answer_task
        if target is None or target not in rnd.task_ids or rnd.errors:
            return None
        if asks_for_words(self.result.question):
            return None
        if any(records[i].status is not TaskStatus.DONE for i in rnd.task_ids):
            return None
        inputs = self.inputs_of(target)
        if not set(rnd.task_ids) <= inputs:
            return None  # a result the answer does not use: the plan may have stopped short
        if self.c.check_answers and any(
            unasked_factor(self.result.question, records[i].call) is not None for i in inputs
        ):
            return None  # a unit converted unasked, perhaps: the joiner looks (see scaled)
        output = records[target].output
        if not isinstance(output, str | int | float) or isinstance(output, bool):
            return None  # a record, a list, yes/no: the joiner words the answer from it
        if isinstance(output, str) and (not output.strip() or len(output) > 500):
            return None
        if (
            self.c.check_answers
            and isinstance(output, str)
            and answer_problem(self.result.question, output, ()) is not None
        ):
            return None  # a text where a number was asked: the joiner reads it (or replans)
        answer = answer_text(output)
        return self.size(rnd, answer) if self.c.check_answers else answer

    def scaled(self, answer: str, numbered: Iterable[tuple[TaskRecord, float]]) -> str | None:
        """Why ``answer`` needs a second look when it is the result of one of the run's
        ``numbered`` tasks (with their numeric results) that scaled a result by a power of ten
        the question does not ask for (see :func:`~dagcall._checks.unasked_factor`), as the
        sentence the joiner is shown; ``None`` otherwise."""
        try:
            value = float(answer.strip().replace(",", ""))
        except ValueError:
            return None
        for rec, number in numbered:
            if abs(number - value) > 1e-9 * max(1.0, abs(value)):
                continue
            factor = unasked_factor(self.result.question, rec.call)
            if factor is not None:
                return (
                    f"The answer {answer.strip()[:40]} is task {rec.id}'s result, "
                    f"{safe_text(rec.call, 200)}, which scales a result by {factor:g}, a factor "
                    "the question does not ask for: unless the question asks for other units "
                    "than the results give, answer with the results' own number."
                )
        return None

    def repeats(self, rnd: Round) -> bool:
        """Whether round ``rnd`` is a replan whose every call was already made in an earlier
        round (the same tool with the same arguments), so it brought nothing new."""
        if rnd.index == 0 or not rnd.task_ids:
            return False
        records = self.scheduler.records
        earlier = {r.call for r in self.earlier(rnd)}
        return all(
            records[i].reused_from is not None or records[i].call in earlier for i in rnd.task_ids
        )

    def earlier(self, rnd: Round) -> list[TaskRecord]:
        """The records of the tasks of the rounds before ``rnd``."""
        records = self.scheduler.records
        return [records[i] for r in self.result.rounds if r.index < rnd.index for i in r.task_ids]

    def futile(self, rnd: Round) -> str | None:
        """Why replan ``rnd`` could bring nothing new, as the next plan's reason: some of its
        calls repeat unchanged a call that failed in an earlier round (other than by a
        timeout) and failed again, or need an earlier task that failed or was skipped, and
        each of its other calls was made before or needs one of those; ``None`` otherwise
        (and for a first plan).  Task ids run on across rounds, so the same call text is the
        same call."""
        if rnd.index == 0 or not rnd.task_ids:
            return None
        records = self.scheduler.records
        earlier = self.earlier(rnd)
        made = {r.call for r in earlier}
        broken = {
            r.id: r
            for r in earlier
            if r.status in (TaskStatus.FAILED, TaskStatus.SKIPPED)
            and not isinstance(r.error, ToolTimeoutError)
        }
        failed_calls = {r.call: r for r in broken.values() if r.status is TaskStatus.FAILED}
        why: list[str] = []
        doomed: set[int] = set()
        for i in rnd.task_ids:
            rec = records[i]
            # A repeated call that has now succeeded (a flaky tool) was worth repeating.
            before = failed_calls.get(rec.call) if rec.status is not TaskStatus.DONE else None
            needs = [broken[d] for d in rec.deps if d in broken]
            if before is not None:
                error = safe_text(before.observation, 300)
                why.append(f"{safe_text(rec.call, 200)} failed before: {error}")
            elif needs:
                why.append(
                    f"{safe_text(rec.call, 200)} needs task {needs[0].id}, "
                    f"{safe_text(needs[0].call, 200)}, which did not finish: "
                    f"{safe_text(needs[0].observation, 300)}"
                )
            if before is not None or needs or any(d in doomed for d in rec.deps):
                doomed.add(i)
            elif rec.call not in made and rec.reused_from is None:
                return None  # a new call: the joiner may find what it brought
        if not why:
            return None
        return (
            f"The new plan repeated what cannot work: {'; '.join(why[:5])}. Plan other calls: "
            "use the names and values the results give, the arguments the errors ask for, and "
            f"none of the failed tasks' $N.{self.hints(list(failed_calls.values()))}"
        )

    def inputs_of(self, target: int) -> set[int]:
        """Task ``target`` and every task its result rests on, however indirectly."""
        records = self.scheduler.records
        seen: set[int] = set()
        todo = [target]
        while todo:
            task = todo.pop()
            if task in seen or task not in records:
                continue
            seen.add(task)
            todo.extend(records[task].deps)
        return seen

    def submit(self, item: PlanItem, rnd: Round) -> None:
        if isinstance(item, TaskSpec):
            self.result.tasks.append(self.scheduler.submit(item, rnd.index))
            return
        rnd.errors.append(item)
        record = self.scheduler.reject(item, rnd.index)
        if record is not None:
            rnd.task_ids.append(record.id)
            self.result.tasks.append(record)

    async def join(
        self, rnd: Round, *, may_replan: bool, then: Sequence[Message] = ()
    ) -> JoinerDecision:
        """Ask the joiner about round ``rnd`` (``then``: messages after its usual prompt, as
        when it is asked once more about its answer)."""
        messages = self.c.joining.messages(
            self.result.question, self.result.rounds, self.scheduler.records, may_replan=may_replan
        )
        messages = [*messages, *then]
        self.emit("joiner_start")
        return await self.c.joining.join(
            messages,
            rnd,
            clock=self.now,
            meter=self.budget.meter(messages, "joiner"),
            on_text=self.joiner_text,
            record=self.add_call,
            may_replan=may_replan,
            answers=listed_options(self.result.question) if self.c.check_answers else (),
        )

    def plan_text(self, text: str) -> None:
        self.emit("plan_text", text=text)

    def joiner_text(self, text: str) -> None:
        self.emit("joiner_text", text=text)
