"""Critical-path scheduling: under a concurrency limit, the ready task with the longest
remaining path starts first, by per-tool latencies learned from earlier calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dagcall import (
    Compiler,
    LatencyEstimates,
    Optimizations,
    RunTimeoutError,
    ScriptedModel,
    TaskStatus,
    UsageError,
    tool,
)
from dagcall.bench._critical import critical_path_gain, critical_path_plan

FINISH = "Thought: done.\nAction: Finish(ok)"


@tool
async def work(label: str, seconds: float = 0.1) -> str:
    """Work for a while."""
    await asyncio.sleep(seconds)
    return label


def by_id(result: Any) -> dict[int, Any]:
    return {t.id: t for t in result.tasks}


async def run_wide(critical_path: bool) -> dict[int, Any]:
    # Tasks 1-4 are independent; task 5 heads a chain 5 -> 6 -> 7 -> 8 and is the last of the
    # ready tasks to be parsed.
    plan = critical_path_plan(4, 4)
    compiler = Compiler(
        model=ScriptedModel([plan, FINISH]),
        tools=[work],
        max_concurrency=2,
        optimize=Optimizations(critical_path=critical_path),
    )
    return by_id(await compiler.arun("q"))


async def test_the_head_of_the_long_chain_parsed_last_still_starts_first() -> None:
    t = await run_wide(critical_path=True)
    assert all(task.status is TaskStatus.DONE for task in t.values())
    assert t[1].started_at < t[5].started_at  # the first two took the free slots at once
    assert t[5].started_at < t[3].started_at
    assert t[5].started_at < t[4].started_at
    # The chain then runs back to back while the wide tasks share the other slot.
    for a, b in ((5, 6), (6, 7), (7, 8)):
        assert t[b].started_at - t[a].ended_at < 0.05
    off = await run_wide(critical_path=False)  # in plan order
    assert off[3].started_at < off[5].started_at
    assert off[4].started_at < off[5].started_at


async def test_learned_latencies_decide_between_ready_tasks() -> None:
    @tool
    async def slow(label: str) -> str:
        """Slow."""
        await asyncio.sleep(0.2)
        return label

    @tool
    async def fast(label: str) -> str:
        """Fast."""
        await asyncio.sleep(0.01)
        return label

    plan = '1. slow("a")\n2. fast("b")\n3. slow("c")\n4. join()\n<END_OF_PLAN>'
    compiler = Compiler(
        model=ScriptedModel([plan, FINISH, plan, FINISH]), tools=[slow, fast], max_concurrency=1
    )
    first = by_id(await compiler.arun("q"))
    # fast was never timed (estimated at 1 s), slow just took 0.2 s: fast goes first.
    assert first[2].started_at < first[3].started_at
    assert compiler.latencies.observed("slow") == 2
    assert compiler.latencies.estimate("slow") == pytest.approx(0.2, abs=0.1)
    assert compiler.latencies.estimate("fast") < 0.1
    second = by_id(await compiler.arun("q"))  # now it knows better
    assert second[3].started_at < second[2].started_at


async def test_dependents_parsed_while_tasks_wait_count_for_their_priority() -> None:
    # The planner streams slowly: the chain behind task 3 is parsed while 1 and 2 run.
    plan = (
        '1. work("a")\n2. work("b")\n3. work("c")\n4. work("d")\n'
        '5. work("e $3")\n6. work("f $5")\n7. join()\n<END_OF_PLAN>'
    )
    compiler = Compiler(
        model=ScriptedModel([plan, FINISH], tokens_per_second=2000),
        tools=[work],
        max_concurrency=1,
    )
    t = by_id(await compiler.arun("q"))
    assert t[3].started_at < t[2].started_at < t[4].started_at


async def test_the_gate_cancels_cleanly_and_holds_the_limit() -> None:
    running = peak = 0

    @tool
    async def busy(label: str) -> str:
        """Busy."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.2)
        finally:
            running -= 1
        return label

    plan = "\n".join(f'{i}. busy("{i}")' for i in range(1, 9)) + "\n9. join()\n<END_OF_PLAN>"
    compiler = Compiler(
        model=ScriptedModel([plan, FINISH]), tools=[busy], max_concurrency=3, timeout=0.5
    )
    with pytest.raises(RunTimeoutError) as caught:
        await compiler.arun("q")
    assert peak == 3
    result = caught.value.result
    assert result is not None
    statuses = [t.status for t in result.tasks]
    assert statuses.count(TaskStatus.DONE) == 6
    assert statuses.count(TaskStatus.CANCELLED) == 2
    assert running == 0


def test_options_are_checked() -> None:
    with pytest.raises(UsageError):
        Optimizations(critical_path="yes")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        LatencyEstimates(default=0)
    estimates = LatencyEstimates()
    assert estimates.estimate("x") == 1.0
    estimates.observe("x", 0.5)
    estimates.observe("x", 1.5)
    estimates.observe("x", float("nan"))
    assert estimates.estimate("x") == 1.0
    assert estimates.observed("x") == 2
    assert Optimizations.none() == Optimizations(
        field_access=False,
        dedupe="off",
        critical_path=False,
        elide_joiner=False,
        shared_prefix=False,
        streaming=True,
    )


async def test_the_gain_on_wide_plans_with_limits_of_2_and_4() -> None:
    measured = await critical_path_gain((2, 4), step=0.2, repeats=1)
    assert [m.limit for m in measured] == [2, 4]
    for m in measured:
        # In theory 7 steps against 5: the chain no longer waits behind the wide tasks.
        assert m.makespan_off > 6 * m.step
        assert m.ratio > 1.15, m.to_dict()
