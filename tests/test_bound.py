"""The critical-path bound starts each task when its line's text arrived, not when dagcall
parsed it: ``Round.line_times`` is the text's own streaming schedule."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dagcall import Compiler, RunResult, ScriptedModel, tool
from dagcall.bench._bound import critical_path_bound, line_arrival

PLAN = 'Thought: two look-ups\n1. look("a")\n2. look("b")\n3. add($1, $2)\n4. join()'


@tool
async def look(name: str) -> int:
    """Look a name up."""
    await asyncio.sleep(0.05)
    return len(name)


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def _run(plan: str = PLAN) -> RunResult:
    model = ScriptedModel(
        [plan + "\n<END_OF_PLAN>", "Thought: done\nAction: Finish(2)"], tokens_per_second=400
    )
    return await Compiler(model=model, tools=[look, add]).arun("a + b?")


async def test_line_times_follow_the_text_and_precede_parsing() -> None:
    run = await _run()
    rnd = run.rounds[0]
    lines = rnd.plan.split("\n")
    assert len(rnd.line_times) in (len(lines), len(lines) - 1)
    assert rnd.line_times == sorted(rnd.line_times)
    planner = next(c for c in run.usage if c.role == "planner")
    assert planner.started_at <= rnd.line_times[0] <= rnd.line_times[-1] <= planner.ended_at
    for task in run.tasks:
        arrived = line_arrival(rnd, task)
        # the line had arrived by the time it was parsed, and it is the task's own line
        assert arrived <= task.parsed_at
        number = next(i for i, line in enumerate(lines) if line.startswith(f"{task.id}."))
        assert arrived == rnd.line_times[number]
    # and the whole record reads back with its line times
    again = RunResult.model_validate_json(run.to_json())
    assert again.rounds[0].line_times == rnd.line_times


async def test_a_parsing_lag_shows_against_the_bound() -> None:
    run = await _run()
    bound = critical_path_bound(run)
    assert bound is not None
    # Pretend dagcall parsed (and so started) every line 0.2 s late: the bound, from the
    # text's arrival, does not move with it, so the lag would show as overhead.
    late = dataclasses.replace(
        run, tasks=[dataclasses.replace(t, parsed_at=t.parsed_at + 0.2) for t in run.tasks]
    )
    assert critical_path_bound(late) == pytest.approx(bound)
    # Without line times (a run recorded before them) the bound falls back to parsed_at.
    old = dataclasses.replace(
        late, rounds=[dataclasses.replace(r, line_times=[]) for r in late.rounds]
    )
    assert critical_path_bound(old) == pytest.approx(bound + 0.2, abs=0.05)


async def test_line_times_that_do_not_fit_the_text_are_not_trusted() -> None:
    run = await _run()
    rnd = dataclasses.replace(run.rounds[0], line_times=[0.0])  # one time for five lines
    task = run.tasks[0]
    assert line_arrival(rnd, task) == task.parsed_at
