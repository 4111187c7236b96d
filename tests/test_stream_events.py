"""Compiler.stream: a run's events as an async iterator, for service front ends."""

from __future__ import annotations

import asyncio

import pytest

from dagcall import BudgetError, Compiler, RunEvent, ScriptedModel, TaskStatus, tool

FINISH = "Thought: done.\nAction: Finish(ok)"


@tool
async def slow(x: int, delay: float = 0.05) -> int:
    """Sleeps, then returns x."""
    await asyncio.sleep(delay)
    return x


async def test_stream_yields_every_event_in_order_and_ends_with_the_result() -> None:
    compiler = Compiler(
        model=ScriptedModel(["1. slow(1)\n2. slow(2)\n3. slow($1)\n4. join()", FINISH]),
        tools=[slow],
    )
    callback: list[str] = []
    await Compiler(
        model=ScriptedModel(["1. slow(1)\n2. slow(2)\n3. slow($1)\n4. join()", FINISH]),
        tools=[slow],
    ).arun("q", on_event=lambda e: callback.append(e.kind))
    events: list[RunEvent] = [event async for event in compiler.stream("q")]
    kinds = [e.kind for e in events]
    assert kinds == callback  # the same events as the callback form, in the same order
    assert kinds[0] == "round_start"
    assert kinds[-1] == "finished"
    assert "plan_text" in kinds
    assert "joiner_text" in kinds
    result = events[-1].result
    assert result.answer == "ok"
    assert [t.status for t in result.tasks] == [TaskStatus.DONE] * 3
    # Task events arrive as tasks change: each task is seen waiting, running and done.
    seen = {(e.task.id, e.task.status) for e in events if e.task is not None}
    assert len(seen) >= 3


async def test_an_error_is_raised_after_the_events_before_it() -> None:
    compiler = Compiler(
        model=ScriptedModel(["1. slow(1)\n2. slow(2)", FINISH]), tools=[slow], max_tasks=1
    )
    kinds: list[str] = []

    async def consume() -> None:
        async for event in compiler.stream("q"):
            kinds.append(event.kind)

    with pytest.raises(BudgetError) as info:
        await consume()
    assert info.value.limit == "max_tasks"
    assert kinds[0] == "round_start"
    assert kinds[-1] == "finished"


async def test_leaving_the_loop_early_cancels_the_run() -> None:
    compiler = Compiler(
        model=ScriptedModel(["1. slow(1, delay=30)\n2. join()", FINISH]), tools=[slow]
    )
    before = asyncio.all_tasks()
    stream = compiler.stream("q")
    async for event in stream:
        if event.task is not None and event.task.status is TaskStatus.RUNNING:
            break
    await stream.aclose()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before  # the run and its tool were cancelled and awaited
