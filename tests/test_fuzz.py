"""Fuzzing: generated and mutated plans either run or give typed plan errors, quickly, and
never hang or crash the process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagcall import (
    BadReferenceError,
    Compiler,
    DagcallError,
    DuplicateTaskError,
    PlanError,
    PlanParser,
    ScriptedModel,
    TaskSpec,
    TaskStatus,
    parse_plan,
    tool,
)

TOOLS = ["search", "math"]
VALID = (
    'Thought: go\n1. search("Apple $5 billion")\n2. search(query="b")\n'
    '3. math("$1 - $2", context=["$1", "${2}"])\n4. join()\n<END_OF_PLAN>'
)
TIME_BOUND = 2.0  # seconds for one parse, however hostile the input


def parse_within_bound(text: str) -> list[Any]:
    started = time.perf_counter()
    items, _ = parse_plan(text, TOOLS)
    assert time.perf_counter() - started < TIME_BOUND
    for item in items:
        assert isinstance(item, TaskSpec | PlanError)
    return items


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    parse_within_bound(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    parse_within_bound(data.decode("utf-8", "replace"))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID)), st.integers(0, 8), st.text(max_size=6)),
        max_size=8,
    )
)
def test_mutated_valid_plans(edits: list[tuple[int, int, str]]) -> None:
    text = VALID
    for at, cut, insert in edits:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut :]
    parse_within_bound(text)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20_000), st.sampled_from(["[", "(", "{", "-", "not "]))
def test_deep_nesting_and_huge_numbers(depth: int, opener: str) -> None:
    closer = {"[": "]", "(": ")", "{": "}", "-": "", "not ": ""}[opener]
    inner = opener * depth + "1" + closer * depth if opener != "{" else "{" * depth
    items = parse_within_bound(f"1. search({inner})\n2. math({'9' * depth})\n")
    assert len(items) == 2


def test_thousands_of_tasks_parse_and_run() -> None:
    n = 3000
    plan = "\n".join(
        f'{i}. echo("{i}")' if i % 3 else f'{i}. echo("$1 and ${i - 1}")' for i in range(1, n + 1)
    )

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text[:20]

    started = time.perf_counter()
    result = Compiler(
        model=ScriptedModel([plan, "Action: Finish(ok)"]), tools=[echo], max_tasks=None
    ).run("q")
    assert len(result.tasks) == n
    assert all(t.status is TaskStatus.DONE for t in result.tasks)
    assert time.perf_counter() - started < 60


def test_cycles_attempted_through_replans_are_plan_errors() -> None:
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    model = ScriptedModel(
        [
            '1. echo("a")\n2. echo("$1")',
            "Action: Replan(again)",
            # Round two tries to redefine task 1 in terms of task 3, and task 3 of itself.
            '1. echo("$3")\n3. echo("$3")\n4. echo("$2")',
            "Action: Finish(done)",
        ]
    )
    result = Compiler(model=model, tools=[echo]).run("q")
    errors = result.rounds[1].errors
    assert [type(e) for e in errors] == [DuplicateTaskError, BadReferenceError]
    assert result.task(4).output == "a"  # a valid reference to round one still works
    assert result.task(3).status is TaskStatus.FAILED


# -- whole runs over generated plans --------------------------------------------------------

FAIL = "boom"


@tool
async def work(value: str, delay: float = 0.0) -> str:
    """Work on a value; the value "boom" fails."""
    await asyncio.sleep(delay)
    if FAIL in value:
        raise RuntimeError("failed on purpose")
    return value[:50]


line = st.builds(
    lambda tid, ref, delay, name, fail: (
        f'{tid}. {name}("{"$" + str(ref) if ref else "x"}{FAIL if fail else ""}", delay={delay})'
    ),
    st.integers(1, 12),
    st.one_of(st.none(), st.integers(1, 14)),
    st.sampled_from([0.0, 0.001, 0.005]),
    st.sampled_from(["work", "work", "nope"]),
    st.booleans(),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    plans=st.lists(st.lists(line, max_size=10).map("\n".join), min_size=1, max_size=3),
    concurrency=st.sampled_from([None, 1, 3]),
)
def test_generated_runs_finish_with_every_task_accounted_for(
    plans: list[str], concurrency: int | None
) -> None:
    replies: list[str] = []
    for i, text in enumerate(plans):
        replies.append(text)
        replies.append("Action: Replan(more)" if i < len(plans) - 1 else "Action: Finish(ok)")

    async def go() -> None:
        compiler = Compiler(
            model=ScriptedModel(replies),
            tools=[work],
            max_replans=len(plans) - 1,
            max_concurrency=concurrency,
        )
        before = asyncio.all_tasks()
        try:
            result = await asyncio.wait_for(compiler.arun("q"), 10)
        except DagcallError as exc:  # only typed errors may end a run
            partial = exc.result
            if partial is None:
                raise AssertionError("the partial result was lost") from exc
            result = partial
        assert asyncio.all_tasks() == before
        for task in result.tasks:
            assert task.status.terminal
            if task.status is TaskStatus.DONE:
                assert FAIL not in str(task.output)
            else:
                assert task.error is not None
        ids = [t.id for t in result.tasks]
        assert len(ids) == len(set(ids))

    asyncio.run(go())


def test_streamed_in_single_characters() -> None:
    parser = PlanParser(TOOLS)
    items: list[Any] = []
    for ch in VALID:
        items += parser.feed(ch)
    items += parser.close()
    assert [type(i) for i in items] == [TaskSpec, TaskSpec, TaskSpec]
