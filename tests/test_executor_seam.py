"""The executor seam: Compiler(executor=...) runs every tool call through a custom executor,
which still gets the run's parallelism, dependencies, failures and cancellation right."""

from __future__ import annotations

import asyncio

import pytest

from dagcall import (
    Compiler,
    DependencyError,
    RunTimeoutError,
    ScriptedModel,
    TaskStatus,
    ToolExecutionError,
    UsageError,
    tool,
)
from dagcall._executor import AsyncioExecutor, Executor, Invocation, Outcome

FINISH = "Thought: done.\nAction: Finish(ok)"


@tool
async def search(query: str, delay: float = 0.3) -> str:
    """Search."""
    await asyncio.sleep(delay)
    return f"result for {query}"


@tool
def boom(x: int) -> int:
    """Fails."""
    raise ValueError(f"boom {x}")


class Recording:
    """A custom executor: records every invocation and delegates to the default one."""

    def __init__(self) -> None:
        self.inner = AsyncioExecutor(tool_timeout=5)
        self.invocations: list[Invocation] = []
        self.outcomes: list[Outcome] = []

    async def execute(self, invocation: Invocation) -> Outcome:
        self.invocations.append(invocation)
        outcome = await self.inner.execute(invocation)
        self.outcomes.append(outcome)
        return outcome


def test_the_protocol_is_checkable() -> None:
    assert isinstance(Recording(), Executor)
    assert isinstance(AsyncioExecutor(), Executor)
    with pytest.raises(UsageError, match="execute"):
        Compiler(model=ScriptedModel([]), tools=[search], executor=object())  # type: ignore[arg-type]


def test_a_custom_executor_sees_every_call_and_keeps_the_parallelism() -> None:
    executor = Recording()
    plan = '1. search("a")\n2. search("b")\n3. search("$1 and $2", delay=0)\n4. join()'
    compiler = Compiler(model=ScriptedModel([plan, FINISH]), tools=[search], executor=executor)
    result = compiler.run("q")
    assert result.answer == "ok"
    calls = [(i.record.id, i.tool.name, i.args, i.kwargs) for i in executor.invocations]
    assert calls == [
        (1, "search", ("a",), {}),
        (2, "search", ("b",), {}),
        (3, "search", ("result for a and result for b",), {"delay": 0}),  # substituted
    ]
    assert [o.status for o in executor.outcomes] == [TaskStatus.DONE] * 3
    t1, t2, t3 = result.tasks
    # 1 and 2 overlap; 3 starts only once both are done.
    assert t1.started_at is not None
    assert t2.started_at is not None
    assert t2.started_at < t1.ended_at  # type: ignore[operator]
    assert t3.started_at >= max(t1.ended_at, t2.ended_at)  # type: ignore[operator,type-var]
    assert result.wall_time < 0.3 + 0.3 + 0.2  # not one after another
    # Each invocation carried its task's context.
    assert [i.context.task_id for i in executor.invocations] == [1, 2, 3]


def test_failures_through_a_custom_executor_skip_their_dependents() -> None:
    executor = Recording()
    plan = '1. boom(1)\n2. search("$1")\n3. search("c", delay=0)'
    result = Compiler(
        model=ScriptedModel([plan, FINISH]), tools=[search, boom], executor=executor
    ).run("q")
    statuses = {t.id: t.status for t in result.tasks}
    assert statuses == {1: TaskStatus.FAILED, 2: TaskStatus.SKIPPED, 3: TaskStatus.DONE}
    error = result.task(1).error
    assert isinstance(error, ToolExecutionError)
    assert "boom 1" in error.message
    assert isinstance(result.task(2).error, DependencyError)
    assert [i.record.id for i in executor.invocations] == [1, 3]  # 2 never reached it


def test_cancellation_passes_through_a_custom_executor() -> None:
    executor = Recording()
    compiler = Compiler(
        model=ScriptedModel(['1. search("slow", delay=30)', FINISH]),
        tools=[search],
        executor=executor,
        timeout=0.3,
    )
    with pytest.raises(RunTimeoutError) as info:
        compiler.run("q")
    assert info.value.result is not None
    assert info.value.result.task(1).status is TaskStatus.CANCELLED
    assert executor.outcomes == []  # the call never returned an outcome


def test_an_executor_that_raises_or_breaks_its_contract_fails_the_task() -> None:
    class Broken:
        def __init__(self, answer: object) -> None:
            self.answer = answer

        async def execute(self, invocation: Invocation) -> Outcome:
            if isinstance(self.answer, BaseException):
                raise self.answer
            return self.answer  # type: ignore[return-value]

    for answer in (RuntimeError("executor down"), Outcome(TaskStatus.RUNNING)):
        result = Compiler(
            model=ScriptedModel(['1. search("a")\n2. search("$1")', FINISH]),
            tools=[search],
            executor=Broken(answer),
        ).run("q")
        assert result.task(1).status is TaskStatus.FAILED
        assert result.task(1).error is not None
        assert result.task(2).status is TaskStatus.SKIPPED
