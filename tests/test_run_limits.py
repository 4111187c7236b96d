"""Budgets that hold while a model is still streaming, plans of any size, and cancellation that
always surfaces as cancellation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagcall import (
    BudgetError,
    Compiler,
    DependencyError,
    Message,
    Model,
    RunEvent,
    ScriptedModel,
    TaskStatus,
    TokenUsage,
    call_model,
    tool,
)

FINISH = "Thought: done.\nAction: Finish(ok)"


@tool
async def step(n: int) -> int:
    """Return n."""
    await asyncio.sleep(0)
    return n


@tool
async def fail(n: int) -> int:
    """Always fails."""
    raise RuntimeError(f"no {n}")


class Endless(Model):
    """A model that streams ``piece`` for ever (or ``limit`` times), yielding to the loop."""

    name = "endless"

    def __init__(self, piece: str | Callable[[int], str], limit: int | None = None) -> None:
        self.piece = piece
        self.limit = limit
        self.sent = 0
        self.closed = False

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,
    ) -> AsyncGenerator[str | TokenUsage, None]:
        try:
            for i in itertools.count(1):
                if self.limit is not None and i > self.limit:
                    break
                self.sent += 1
                yield self.piece(i) if callable(self.piece) else self.piece
                await asyncio.sleep(0)
        finally:
            self.closed = True


def run(compiler: Compiler, question: str = "q", *, hang_guard: float = 60.0) -> object:
    """Run with a generous guard so that a broken limit fails the test instead of hanging it."""

    async def go() -> object:
        return await asyncio.wait_for(compiler.arun(question), hang_guard)

    return asyncio.run(go())


# -- max_tokens counts output as it streams ------------------------------------------------------


@pytest.mark.parametrize("limit", [600, 2000, 5000])
def test_a_planner_that_streams_forever_is_stopped_within_a_chunk_of_max_tokens(
    limit: int,
) -> None:
    planner = Endless("Thought: and then I thought some more about it. ")
    compiler = Compiler(
        planner_model=planner, joiner_model=ScriptedModel([]), tools=[step], max_tokens=limit
    )
    with pytest.raises(BudgetError) as info:
        run(compiler)
    err = info.value
    assert err.limit == "max_tokens"
    assert "still streaming" in err.message
    assert planner.closed  # the stream was closed, not abandoned
    assert err.result is not None
    (call,) = err.result.usage
    used = call.input_tokens + call.output_tokens
    # Stopped within a chunk (about 12 tokens) of the limit; chunk-by-chunk counts and the
    # count of the joined text differ by a few tokens where BPE merges across chunks.
    assert limit - 20 < used <= limit + 20


def test_a_joiner_that_streams_forever_is_stopped_too() -> None:
    joiner = Endless("Thought: the answer needs more thought. ")
    compiler = Compiler(
        planner_model=ScriptedModel(["1. step(1)\n2. step(2)\n3. join()"]),
        joiner_model=joiner,
        tools=[step],
        max_tokens=3000,
    )
    with pytest.raises(BudgetError, match="joiner was still streaming") as info:
        run(compiler)
    result = info.value.result
    assert result is not None
    assert [t.status for t in result.tasks] == [TaskStatus.DONE, TaskStatus.DONE]
    assert result.input_tokens + result.output_tokens <= 3000 + 20


def test_a_tools_own_model_calls_stop_the_run_while_other_tasks_still_run() -> None:
    @tool
    async def chatty() -> str:
        """Asks a model at length."""
        reply = await call_model(ScriptedModel(["word " * 800]), [Message("user", "go")])
        return reply.text[:5]

    @tool
    async def slow() -> str:
        """Takes long."""
        await asyncio.sleep(30)
        return "late"

    compiler = Compiler(
        model=ScriptedModel(["1. chatty()\n2. slow()", FINISH]),
        tools=[chatty, slow],
        max_tokens=700,  # the planner's prompt is about 600 tokens; the tool's reply 800
    )
    with pytest.raises(BudgetError, match="over max_tokens=700") as info:
        run(compiler, hang_guard=10)
    result = info.value.result
    assert result is not None
    # Its model call was stopped while streaming, so the tool got no reply and failed.
    assert result.task(1).status is TaskStatus.FAILED
    assert "while still streaming" in str(result.task(1).error)
    assert result.task(2).status is TaskStatus.CANCELLED


def test_a_tools_own_model_that_streams_forever_is_stopped_too() -> None:
    endless = Endless("and on and on and on ")

    @tool
    async def ask_forever() -> str:
        """Asks a model that never stops."""
        reply = await call_model(endless, [Message("user", "go")])
        return reply.text

    compiler = Compiler(
        model=ScriptedModel(["1. ask_forever()", FINISH]),
        tools=[ask_forever],
        max_tokens=2000,
        tool_timeout=None,
    )
    with pytest.raises(BudgetError, match="over max_tokens=2,000") as info:
        run(compiler, hang_guard=30)
    assert endless.closed
    result = info.value.result
    assert result is not None
    assert result.task(1).status is TaskStatus.FAILED
    assert "while still streaming" in str(result.task(1).error)
    tool_call = next(c for c in result.usage if c.role == "tool")
    assert tool_call.output_tokens > 0  # the partial reply was recorded, so the run saw it
    assert 2000 - 20 < result.input_tokens + result.output_tokens <= 2000 + 20


def test_runs_within_the_budget_are_untouched() -> None:
    plan = "1. step(1)\n2. step(2)\n3. join()"
    for limit in (None, 100_000):
        result = Compiler(model=ScriptedModel([plan, FINISH]), tools=[step], max_tokens=limit).run(
            "q"
        )
        assert result.answer == "ok"


# -- max_tasks counts every task line -----------------------------------------------------------


LINES: dict[str, Callable[[int], str]] = {
    "unknown tool": lambda i: f"{i}. nope({i})\n",
    "syntax error": lambda i: f"{i}. step({i}, ]\n",
    "duplicate id": lambda i: "1. step(1)\n",
    "bad reference": lambda i: f"{i}. step($999999)\n",
    "no number": lambda i: f"step({i})\n",
    "valid": lambda i: f"{i}. step({i})\n",
}


@pytest.mark.parametrize("kind", LINES)
def test_an_endless_stream_of_task_lines_stops_at_max_tasks(kind: str) -> None:
    planner = Endless(LINES[kind])
    compiler = Compiler(
        planner_model=planner, joiner_model=ScriptedModel([]), tools=[step], max_tasks=50
    )
    with pytest.raises(BudgetError, match="max_tasks=50") as info:
        run(compiler, hang_guard=20)
    assert planner.closed
    result = info.value.result
    assert result is not None
    assert len(result.tasks) <= 50
    assert len(result.rounds[0].errors) <= 50


def test_a_finite_plan_of_a_thousand_invalid_lines_never_reaches_the_joiner() -> None:
    plan = "".join(f"{i}. nope({i})\n" for i in range(1, 1001))
    joiner = ScriptedModel([FINISH])
    compiler = Compiler(planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=[step])
    with pytest.raises(BudgetError, match="max_tasks=64") as info:
        run(compiler)
    assert not joiner.calls
    result = info.value.result
    assert result is not None
    assert len(result.tasks) == 64


def test_max_tasks_none_allows_any_number() -> None:
    plan = "".join(f"{i}. step({i})\n" for i in range(1, 301))
    result = Compiler(model=ScriptedModel([plan, FINISH]), tools=[step], max_tasks=None).run("q")
    assert len(result.tasks) == 300


# -- graphs of any depth and width --------------------------------------------------------------

N = 10_000


def test_a_chain_of_ten_thousand_whose_root_fails_is_skipped_without_recursion() -> None:
    plan = "1. fail(1)\n" + "".join(f"{i}. step(${i - 1})\n" for i in range(2, N + 1))
    # With timeout= too: a recursion error used to escape raw from under the run's budget.
    compiler = Compiler(
        model=ScriptedModel([plan, FINISH]), tools=[step, fail], max_tasks=None, timeout=300
    )
    result = run(compiler, hang_guard=300)
    assert result.answer == "ok"  # type: ignore[attr-defined]
    tasks = result.tasks  # type: ignore[attr-defined]
    assert tasks[0].status is TaskStatus.FAILED
    skipped = [t for t in tasks if t.status is TaskStatus.SKIPPED]
    assert len(skipped) == N - 1
    last = tasks[-1]
    assert isinstance(last.error, DependencyError)
    # Each message names its direct culprit and the root, and stays short at any depth.
    assert f"task {N - 1}" in last.error.message
    assert "task 1 (fail)" in last.error.message
    assert max(len(t.error.message) for t in skipped) < 1000


def test_a_chain_of_ten_thousand_that_succeeds_runs_in_order() -> None:
    plan = "1. step(1)\n" + "".join(f"{i}. step(${i - 1})\n" for i in range(2, N + 1))
    compiler = Compiler(model=ScriptedModel([plan, FINISH]), tools=[step], max_tasks=None)
    result = run(compiler)
    tasks = result.tasks  # type: ignore[attr-defined]
    assert all(t.status is TaskStatus.DONE for t in tasks)
    assert tasks[-1].output == 1
    starts = [t.started_at for t in tasks]
    assert starts == sorted(starts)


def test_ten_thousand_dependents_of_one_failed_task() -> None:
    plan = "1. fail(1)\n" + "".join(f"{i}. step($1)\n" for i in range(2, N + 1))
    compiler = Compiler(model=ScriptedModel([plan, FINISH]), tools=[step, fail], max_tasks=None)
    result = run(compiler)
    statuses = [t.status for t in result.tasks]  # type: ignore[attr-defined]
    assert statuses.count(TaskStatus.SKIPPED) == N - 1


def test_ten_thousand_independent_tasks_and_one_that_needs_them_all() -> None:
    refs = ", ".join(f'"${i}"' for i in range(1, N + 1))

    @tool
    def total(values: list[int]) -> int:
        """Sum."""
        return sum(values)

    plan = "".join(f"{i}. step({i})\n" for i in range(1, N + 1)) + f"{N + 1}. total([{refs}])\n"
    compiler = Compiler(model=ScriptedModel([plan, FINISH]), tools=[step, total], max_tasks=None)
    result = run(compiler)
    assert result.task(N + 1).output == N * (N + 1) // 2  # type: ignore[attr-defined]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_deep_graphs_end_with_every_task_terminal(data: st.DataObject) -> None:
    n = data.draw(st.integers(50, 400))
    failing = data.draw(st.sets(st.integers(1, n), max_size=5))

    @tool
    async def node(n: int, needs: list[int] | None = None) -> int:
        """A node."""
        await asyncio.sleep(0)
        return n

    @tool
    async def bad(n: int, needs: list[int] | None = None) -> int:
        """A failing node."""
        raise RuntimeError("bad")

    lines = []
    expected_bad: set[int] = set()
    deps_of: dict[int, list[int]] = {}
    for i in range(1, n + 1):
        deps = sorted(set(data.draw(st.lists(st.integers(1, i - 1), max_size=3)))) if i > 1 else []
        deps_of[i] = deps
        name = "bad" if i in failing else "node"
        needs = f", needs=[{', '.join(f'${d}' for d in deps)}]" if deps else ""
        lines.append(f"{i}. {name}({i}{needs})")
        if i in failing or any(d in expected_bad for d in deps):
            expected_bad.add(i)
    compiler = Compiler(
        model=ScriptedModel(["\n".join(lines), FINISH]), tools=[node, bad], max_tasks=None
    )
    result = run(compiler)
    for t in result.tasks:  # type: ignore[attr-defined]
        assert t.status.terminal
        if any(d in expected_bad for d in deps_of[t.id]):
            assert t.status is TaskStatus.SKIPPED  # an input failed: it never ran
        elif t.id in failing:
            assert t.status is TaskStatus.FAILED
        else:
            assert t.status is TaskStatus.DONE


# -- cancellation from outside is cancellation --------------------------------------------------


def _cancel_on_nth_event(n: int, max_tokens: int | None) -> BaseException | None:
    """Run a question and cancel it from its own n-th event; return what the caller got."""

    @tool
    async def slow(x: int) -> int:
        """Sleeps."""
        await asyncio.sleep(0.01)
        return x

    async def go() -> BaseException | None:
        seen = itertools.count(1)
        me: asyncio.Task[object] | None = None

        def on_event(event: RunEvent) -> None:
            if next(seen) == n and me is not None:
                me.cancel()

        compiler = Compiler(
            model=ScriptedModel(
                ["1. slow(1)\n2. slow(2)\n3. slow($1)\n4. join()", FINISH], tokens_per_second=2000
            ),
            tools=[slow],
            max_tokens=max_tokens,
        )
        me = asyncio.ensure_future(compiler.arun("q", on_event=on_event))
        try:
            await asyncio.wait_for(asyncio.shield(me), 20)
        except BaseException as exc:
            await asyncio.sleep(0)
            leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert not leftover, leftover
            return exc
        return None

    return asyncio.run(go())


@pytest.mark.parametrize("max_tokens", [None, 2000, 900])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 21, 34])
def test_cancelling_at_any_point_surfaces_as_cancellation(n: int, max_tokens: int | None) -> None:
    outcome = _cancel_on_nth_event(n, max_tokens)
    if outcome is None:
        return  # the run had no n-th event before it finished
    assert isinstance(outcome, asyncio.CancelledError), repr(outcome)


@pytest.mark.parametrize("max_tokens", [None, 900])
def test_wait_for_a_run_surfaces_as_a_timeout(max_tokens: int | None) -> None:
    """The tool's model call is cut by the cancellation; recording it (a 2,000-token prompt,
    over max_tokens) while the run unwinds must not turn the cancellation into a BudgetError."""

    @tool
    async def chatty() -> str:
        """Asks a slow model a long question."""
        slow = ScriptedModel(["yes"], time_to_first_token=30)
        await call_model(slow, [Message("user", "word " * 2000)])
        return "late"

    seen: list[RunEvent] = []

    async def go() -> None:
        compiler = Compiler(
            model=ScriptedModel(["1. chatty()", FINISH]), tools=[chatty], max_tokens=max_tokens
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(compiler.arun("q", on_event=seen.append), 0.5)

    asyncio.run(go())
    result = seen[-1].result
    assert seen[-1].kind == "finished"
    assert result.task(1).status is TaskStatus.CANCELLED
    assert [c.role for c in result.usage] == ["planner", "tool"]
