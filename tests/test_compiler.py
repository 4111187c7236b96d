"""The run loop end to end with ScriptedModel: parallelism, dependencies, failures, replanning."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from dagcall import (
    Compiler,
    DependencyError,
    Message,
    ModelError,
    Optimizations,
    RunTimeoutError,
    ScriptedModel,
    ScriptExhaustedError,
    TaskStatus,
    ToolArgumentError,
    ToolExecutionError,
    ToolTimeoutError,
    UnknownToolError,
    UsageError,
    tool,
)

FINISH = "Thought: done.\nAction: Finish(the answer)"


def plan(*lines: str) -> str:
    return "\n".join(lines) + "\n<END_OF_PLAN>"


@tool
async def search(query: str, delay: float = 0.2) -> str:
    """Search."""
    await asyncio.sleep(delay)
    return f"result for {query}"


def compiler_for(replies: list[Any], *tools: Any, **kw: Any) -> tuple[Compiler, ScriptedModel]:
    model = ScriptedModel(replies, **kw.pop("model_kw", {}))
    return Compiler(model=model, tools=tools or [search], **kw), model


async def test_independent_tasks_overlap_and_start_while_the_planner_streams() -> None:
    compiler, model = compiler_for(
        [
            plan(
                'Thought: three independent look-ups.\n1. search("a", delay=0.8)',
                '2. search("b", delay=0.8)',
                '3. search("c", delay=0.8)',
                "4. join()",
            ),
            FINISH,
        ],
        model_kw={"tokens_per_second": 100},
    )
    result = await compiler.arun("q")
    assert result.answer == "the answer"
    planner_call = result.usage[0]
    assert planner_call.role == "planner"
    t1, t2, t3 = result.tasks
    assert all(t.status is TaskStatus.DONE for t in result.tasks)
    # Task 1 started before the planner finished streaming the plan.
    assert t1.started_at is not None
    assert t1.started_at < planner_call.ended_at
    # All three ran at the same time: each started before any other ended.
    assert max(t.started_at or 0 for t in result.tasks) < min(t.ended_at or 0 for t in result.tasks)
    # Tasks started in plan order, each after its line was parsed.
    assert t2.started_at is not None
    assert t3.started_at is not None
    assert t1.parsed_at <= t1.started_at < t2.started_at < t3.started_at
    model.assert_all_used()


async def test_results_are_substituted_with_their_types_intact() -> None:
    seen: dict[str, Any] = {}

    @tool
    def numbers() -> dict[str, float]:
        """Numbers."""
        return {"a": 1.5, "b": 2}

    @tool
    def total(values: dict[str, float], label: str, items: list[dict[str, float]]) -> float:
        """Total."""
        seen.update(values=values, label=label, items=items)
        return values["a"] + values["b"]

    @tool
    def echo(x: Any) -> Any:
        """Echo."""
        seen["echo"] = x
        return x

    compiler, _ = compiler_for(
        [
            plan(
                "1. numbers()",
                '2. total($1, label="sum of $1", items=["$1", "${1}"])',
                '3. echo("$2")',
                "4. join()",
            ),
            FINISH,
        ],
        numbers,
        total,
        echo,
    )
    result = await compiler.arun("q")
    assert seen["values"] == {"a": 1.5, "b": 2}
    assert seen["label"] == 'sum of {"a": 1.5, "b": 2}'
    assert seen["items"] == [{"a": 1.5, "b": 2}] * 2
    assert seen["echo"] == 3.5
    assert isinstance(seen["echo"], float)
    t2 = result.task(2)
    assert t2.args == ("$1",)  # as written
    assert t2.resolved_args == {
        "values": {"a": 1.5, "b": 2},
        "label": 'sum of {"a": 1.5, "b": 2}',
        "items": [{"a": 1.5, "b": 2}] * 2,
    }


async def test_a_dependent_waits_for_exactly_its_dependencies() -> None:
    compiler, _ = compiler_for(
        [
            plan(
                '1. search("slow", delay=0.6)',
                '2. search("fast", delay=0.05)',
                '3. search("after fast: $2", delay=0.05)',
                '4. search("after both: $1 $2", delay=0.05)',
                "5. join()",
            ),
            FINISH,
        ]
    )
    result = await compiler.arun("q")
    t1, t2, t3, t4 = result.tasks
    assert t3.deps == (2,)
    assert t4.deps == (1, 2)
    assert t1.ended_at is not None
    assert t2.ended_at is not None
    assert t3.started_at is not None
    assert t4.started_at is not None
    # Task 3 did not wait for the slow task 1, only for task 2.
    assert t2.ended_at <= t3.started_at < t1.ended_at
    # Task 4 waited for both.
    assert t4.started_at >= max(t1.ended_at, t2.ended_at)
    assert t4.resolved_args == {
        "query": "after both: result for slow result for fast",
        "delay": 0.05,
    }


async def test_a_failing_tool_becomes_an_observation_and_its_dependents_are_skipped() -> None:
    @tool
    def broken(x: str) -> str:
        """Broken."""
        raise ValueError("backend down")

    compiler, model = compiler_for(
        [
            plan(
                '1. broken("a")',
                '2. search("b", delay=0.01)',
                '3. search("$1", delay=0.01)',
                '4. search("$3 $2", delay=0.01)',
                "5. join()",
            ),
            FINISH,
        ],
        broken,
        search,
    )
    result = await compiler.arun("q")
    assert result.answer == "the answer"
    t1, t2, t3, t4 = result.tasks
    assert t1.status is TaskStatus.FAILED
    assert isinstance(t1.error, ToolExecutionError)
    assert isinstance(t1.error.__cause__, ValueError)
    assert "backend down" in t1.error.message
    assert t2.status is TaskStatus.DONE
    assert t3.status is TaskStatus.SKIPPED
    assert isinstance(t3.error, DependencyError)
    assert "task 1" in t3.error.message
    assert t4.status is TaskStatus.SKIPPED
    assert "task 3" in t4.error.message  # type: ignore[union-attr]
    joiner_prompt = model.calls[1].messages[-1].content
    assert "backend down" in joiner_prompt
    assert "skipped" in joiner_prompt


async def test_a_hanging_tool_times_out_and_the_run_finishes() -> None:
    @tool(timeout=0.2)
    async def hang() -> str:
        """Hang."""
        await asyncio.sleep(3600)
        return "never"

    compiler, _ = compiler_for(
        [plan("1. hang()", '2. search("x", delay=0.01)'), FINISH], hang, search
    )
    started = time.perf_counter()
    result = await compiler.arun("q")
    assert time.perf_counter() - started < 5
    t1, t2 = result.tasks
    assert isinstance(t1.error, ToolTimeoutError)
    assert "0.2 s" in t1.error.message
    assert t2.status is TaskStatus.DONE


async def test_blocking_sync_tools_run_in_threads_in_parallel_and_time_out() -> None:
    threads: list[str] = []
    release = threading.Event()

    @tool
    def blocking(seconds: float) -> float:
        """Block the calling thread."""
        threads.append(threading.current_thread().name)
        release.wait(seconds)
        return seconds

    compiler, _ = compiler_for(
        [plan("1. blocking(0.4)", "2. blocking(0.4)", "3. blocking(30)"), FINISH],
        blocking,
        tool_timeout=1.0,
    )
    result = await compiler.arun("q")
    t1, t2, t3 = result.tasks
    assert t1.output == 0.4
    assert t2.output == 0.4
    # Both sleepers overlapped instead of serialising the run.
    assert max(t1.started_at or 0, t2.started_at or 0) < min(t1.ended_at or 0, t2.ended_at or 0)
    assert isinstance(t3.error, ToolTimeoutError)
    release.set()  # let the abandoned thread finish rather than outlive the test
    assert all(name.startswith("dagcall-tool-blocking") for name in threads)
    assert threading.main_thread().name not in threads


async def test_invalid_arguments_are_an_error_observation() -> None:
    compiler, model = compiler_for(
        [plan('1. search(query=["not", "a", "string"])', '2. search("a", "b", "c")'), FINISH]
    )
    result = await compiler.arun("q")
    for t in result.tasks:
        assert t.status is TaskStatus.FAILED
        assert isinstance(t.error, ToolArgumentError)
    assert "query" in result.tasks[0].error.message  # type: ignore[union-attr]
    assert "ToolArgumentError" in model.calls[1].messages[-1].content


async def test_plan_errors_reach_the_joiner_and_valid_tasks_still_run() -> None:
    compiler, model = compiler_for(
        [plan('1. browse("x")', '2. search("ok", delay=0.01)', '3. search("$1")'), FINISH]
    )
    result = await compiler.arun("q")
    assert isinstance(result.rounds[0].errors[0], UnknownToolError)
    assert [t.status for t in result.tasks] == [
        TaskStatus.FAILED,
        TaskStatus.DONE,
        TaskStatus.SKIPPED,
    ]
    joiner_prompt = model.calls[1].messages[-1].content
    assert "unknown tool 'browse'" in joiner_prompt


async def test_replan_continues_numbering_and_reuses_round_one_results() -> None:
    calls: list[str] = []

    @tool
    async def fetch(key: str) -> str:
        """Fetch."""
        calls.append(key)
        return f"value of {key}"

    compiler, model = compiler_for(
        [
            plan('1. fetch("a")', '2. fetch("b")', "3. join()"),
            "Thought: b is not enough.\nAction: Replan(need c, computed from a)",
            plan('3. fetch("c from $1")', "4. join()"),
            "Thought: all there.\nAction: Finish(value of c)",
        ],
        fetch,
    )
    result = await compiler.arun("q")
    model.assert_all_used()
    assert result.answer == "value of c"
    assert calls == ["a", "b", "c from value of a"]  # task 1 was not run again
    assert [r.decision for r in result.rounds] == ["replan", "finish"]
    assert result.rounds[0].replan_reason == "need c, computed from a"
    assert [t.id for t in result.tasks] == [1, 2, 3]
    assert result.task(3).round == 1
    replan_prompt = model.calls[2].messages[-1].content
    assert "need c, computed from a" in replan_prompt
    assert "value of a" in replan_prompt  # earlier observations
    assert "from 3 on" in replan_prompt  # the numbering continues
    # The planner's system prompt is the same stable prefix in both rounds.
    assert model.calls[0].messages[0] == model.calls[2].messages[0]
    assert [c.role for c in result.usage] == ["planner", "joiner", "planner", "joiner"]


async def test_max_replans_is_enforced_and_the_last_joiner_is_told_to_answer() -> None:
    compiler, model = compiler_for(
        [
            plan('1. search("a", delay=0)'),
            "Thought: unsure, best guess is A.\nAction: Replan(more)",
        ],
        max_replans=0,
    )
    result = await compiler.arun("q")
    assert len(result.rounds) == 1
    assert result.stop_reason == "max_replans"
    assert result.answer == "unsure, best guess is A."
    joiner_system = model.calls[1].messages[0].content
    assert "Replanning is not available" in joiner_system
    assert "final round" in model.calls[1].messages[-1].content

    compiler, model = compiler_for(
        [plan('1. search("a", delay=0)'), FINISH],
        max_replans=1,
    )
    await compiler.arun("q")
    assert "Replan(<what is missing>)" in model.calls[1].messages[0].content


async def test_run_timeout_cancels_everything_and_keeps_the_partial_result() -> None:
    cancelled = asyncio.Event()

    @tool
    async def forever() -> str:
        """Forever."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    compiler, _ = compiler_for(
        [plan("1. forever()", '2. search("quick", delay=0)', '3. search("$1")'), FINISH],
        forever,
        search,
        timeout=0.5,
        tool_timeout=None,
    )
    before = asyncio.all_tasks()
    with pytest.raises(RunTimeoutError) as info:
        await compiler.arun("q")
    err = info.value
    assert err.limit == "timeout"
    assert "0.5 s" in err.message
    assert cancelled.is_set()
    assert err.result is not None
    statuses = {t.id: t.status for t in err.result.tasks}
    # Task 3 was still waiting for task 1 when the run ran out of time: it was cancelled with
    # the run, not skipped for a failed input.
    assert statuses == {1: TaskStatus.CANCELLED, 2: TaskStatus.DONE, 3: TaskStatus.CANCELLED}
    assert err.result.task(2).output == "result for quick"
    assert asyncio.all_tasks() == before  # nothing left running


async def test_cancelling_a_run_cancels_its_tools() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @tool
    async def forever() -> str:
        """Forever."""
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    compiler, _ = compiler_for([plan("1. forever()"), FINISH], forever, tool_timeout=None)
    run = asyncio.create_task(compiler.arun("q"))
    await asyncio.wait_for(started.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert cancelled.is_set()


async def test_global_and_per_tool_concurrency_limits() -> None:
    running = {"all": 0, "work_a": 0, "work_b": 0}
    peak = dict.fromkeys(running, 0)

    def make(name: str, limit: int | None) -> Any:
        @tool(name=name, max_concurrency=limit)
        async def work() -> str:
            """Work."""
            for key in ("all", name):
                running[key] += 1
                peak[key] = max(peak[key], running[key])
            await asyncio.sleep(0.05)
            for key in ("all", name):
                running[key] -= 1
            return name

        return work

    # work_b's own limit of 1 holds while the global limit of 3 lets work_a fill the rest
    lines = [f"{i}. work_b()" for i in range(1, 5)] + [f"{i}. work_a()" for i in range(5, 9)]
    # (equal calls would run once: here each must run, to load the limits)
    compiler, _ = compiler_for(
        [plan(*lines), FINISH],
        make("work_a", None),
        make("work_b", 1),
        max_concurrency=3,
        optimize=Optimizations(dedupe="off"),
    )
    result = await compiler.arun("q")
    assert all(t.status is TaskStatus.DONE for t in result.tasks)
    assert peak["all"] == 3
    assert peak["work_b"] == 1
    assert peak["work_a"] >= 2  # unlimited: it ran beside itself

    in_tool = 0
    tool_peak = 0

    @tool(max_concurrency=2)
    async def limited() -> None:
        """Limited."""
        nonlocal in_tool, tool_peak
        in_tool += 1
        tool_peak = max(tool_peak, in_tool)
        await asyncio.sleep(0.05)
        in_tool -= 1

    compiler, _ = compiler_for(
        [plan(*[f"{i}. limited()" for i in range(1, 7)]), FINISH],
        limited,
        optimize=Optimizations(dedupe="off"),
    )
    await compiler.arun("q")
    assert tool_peak == 2


async def test_planner_failing_before_any_task_raises_a_model_error_with_the_result() -> None:
    compiler, _ = compiler_for([ConnectionResetError("provider went away")])
    with pytest.raises(ModelError) as info:
        await compiler.arun("q")
    assert "planner" in info.value.message
    assert "provider went away" in info.value.message
    assert info.value.result is not None
    assert len(info.value.result.usage) == 1


async def test_planner_cut_mid_plan_still_runs_parsed_tasks_and_joins() -> None:
    async def cut_stream(messages: list[Message]) -> str:
        raise AssertionError("not used")

    class CutModel(ScriptedModel):
        async def stream(self, messages, *, stop=(), max_tokens=None):  # type: ignore[no-untyped-def, override]
            if len(self.calls) == 0:
                self.calls.append(None)  # type: ignore[arg-type]
                yield '1. search("a", delay=0.01)\n2. search("b", delay=0.01)\n3. sear'
                raise ModelError("stream cut", model=self.name)
            async for event in super().stream(messages, stop=stop, max_tokens=max_tokens):
                yield event

    model = CutModel([FINISH])
    result = await Compiler(model=model, tools=[search]).arun("q")
    assert [t.status for t in result.tasks] == [TaskStatus.DONE, TaskStatus.DONE]
    assert any(isinstance(e, ModelError) for e in result.rounds[0].errors)
    joiner_prompt = model.calls[-1].messages[-1].content
    assert "stream cut" in joiner_prompt
    assert result.answer == "the answer"


async def test_joiner_failure_raises_with_finished_tasks_kept() -> None:
    compiler, _ = compiler_for([plan('1. search("a", delay=0)'), RuntimeError("joiner down")])
    with pytest.raises(ModelError) as info:
        await compiler.arun("q")
    assert info.value.result is not None
    assert info.value.result.task(1).output == "result for a"


async def test_calling_a_scripted_model_too_often_is_a_clear_error() -> None:
    compiler, _ = compiler_for([plan('1. search("a", delay=0)')])
    with pytest.raises(ScriptExhaustedError, match="only 1 scripted replies"):
        await compiler.arun("q")


async def test_usage_is_recorded_per_call() -> None:
    compiler, _ = compiler_for(
        [plan('1. search("a", delay=0)'), FINISH], model_kw={"time_to_first_token": 0.05}
    )
    result = await compiler.arun("q")
    planner, joiner = result.usage
    assert (planner.role, joiner.role) == ("planner", "joiner")
    assert planner.input_tokens > 100  # the system prompt with the tool list
    assert planner.output_tokens > 5
    assert joiner.output_tokens > 3
    assert planner.time_to_first_token is not None
    assert planner.time_to_first_token >= 0.05
    assert planner.ended_at <= joiner.started_at
    assert result.input_tokens == planner.input_tokens + joiner.input_tokens
    assert result.llm_calls == 2


def test_sync_run_wrapper() -> None:
    compiler, _ = compiler_for([plan('1. search("a", delay=0)'), FINISH])
    result = compiler.run("q")
    assert result.answer == "the answer"
    assert result.task(1).output == "result for a"


async def test_sync_run_inside_a_loop_is_a_usage_error() -> None:
    compiler, _ = compiler_for([])
    with pytest.raises(UsageError, match="arun"):
        compiler.run("q")


def test_default_model_comes_from_the_environment_else_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DAGCALL_MODEL", raising=False)
    compiler = Compiler(tools=[search])  # nothing is loaded until the first question
    assert compiler.planner.name == "local"
    assert compiler.plan_grammar is not None  # local models plan under the grammar
    monkeypatch.setenv("DAGCALL_MODEL", "openai:some-model@http://127.0.0.1:9/v1")
    compiler = Compiler(tools=[search])
    assert compiler.planner.name == "openai:some-model@http://127.0.0.1:9/v1"
    assert compiler.plan_grammar is None


def test_grammar_is_passed_only_to_models_that_support_it() -> None:
    plain = ScriptedModel([plan('1. search("a", delay=0)'), FINISH])
    Compiler(model=plain, tools=[search]).run("q")
    assert plain.calls[0].grammar is None
    capable = ScriptedModel([plan('1. search("a", delay=0)'), FINISH], supports_grammar=True)
    Compiler(model=capable, tools=[search]).run("q")
    grammar = capable.calls[0].grammar
    assert grammar is not None
    assert '"search("' in grammar
    joiner_grammar = capable.calls[1].grammar  # the joiner: one Thought, one Action
    assert joiner_grammar is not None
    assert "Finish(" in joiner_grammar
    off = ScriptedModel([plan('1. search("a", delay=0)'), FINISH], supports_grammar=True)
    Compiler(model=off, tools=[search], constrained_plans=False).run("q")
    assert off.calls[0].grammar is None
    assert off.calls[1].grammar is None
    with pytest.raises(UsageError, match="constrained_plans"):
        Compiler(model=ScriptedModel([]), tools=[search], constrained_plans=True)


def test_configuration_errors() -> None:
    with pytest.raises(UsageError, match="two tools"):
        Compiler(model=ScriptedModel([]), tools=[search, search])
    with pytest.raises(UsageError, match="max_replans"):
        Compiler(model=ScriptedModel([]), max_replans=-1)
    with pytest.raises(UsageError, match="unknown model provider"):
        Compiler(model="nope:thing")


def test_planner_prompt_lists_the_tools() -> None:
    compiler, _ = compiler_for([])
    system, user = compiler.planner_messages("Why?")
    assert "search(query: str, delay: float = 0.2) -> str" in system.content
    assert "Search." in system.content
    assert "join()" in system.content
    assert user.content == "Question: Why?"


async def test_a_tools_own_model_calls_count_in_the_run_usage() -> None:
    from dagcall import call_model, current_tool_context

    helper = ScriptedModel(["42"], name="helper")

    @tool
    async def ask_llm(problem: str) -> str:
        """Ask a model."""
        ctx = current_tool_context()
        assert ctx is not None
        assert ctx.tool == "ask_llm"
        completion = await call_model(helper, [Message("user", problem)])
        return completion.text

    compiler, _ = compiler_for([plan('1. ask_llm("six times seven")'), FINISH], ask_llm)
    result = await compiler.arun("q")
    assert result.task(1).output == "42"
    roles = [(c.role, c.model, c.task_id) for c in result.usage]
    assert roles == [
        ("planner", "scripted", None),
        ("tool", "helper", 1),
        ("joiner", "scripted", None),
    ]
    assert result.usage[1].output_tokens == 1
    # Outside a run the same call simply answers.
    assert current_tool_context() is None
    assert (await call_model(ScriptedModel(["ok"]), [Message("user", "x")])).text == "ok"


async def test_events_follow_the_run_for_live_views() -> None:
    from dagcall import RunEvent

    events: list[tuple[str, int | None, str]] = []

    def on_event(event: RunEvent) -> None:
        task = event.task
        events.append((event.kind, task.id if task else None, task.status.value if task else ""))
        if event.kind == "finished":
            raise RuntimeError("a broken live view must not break the run")

    compiler, _ = compiler_for([plan('1. search("a", delay=0.01)', '2. search("$1")'), FINISH])
    result = await compiler.arun("q", on_event=on_event)
    assert result.answer == "the answer"
    kinds = [k for k, _, _ in events]
    assert kinds[0] == "round_start"
    assert kinds[-2:] == ["round_end", "finished"]
    assert "plan_text" in kinds
    assert "joiner_text" in kinds
    assert kinds.index("joiner_start") > max(i for i, k in enumerate(kinds) if k == "task")
    task_events = [(i, s) for k, i, s in events if k == "task"]
    assert task_events == [
        (1, "waiting"),
        (1, "running"),
        (1, "done"),
        (2, "waiting"),
        (2, "running"),
        (2, "done"),
    ] or task_events == [
        (1, "waiting"),
        (1, "running"),
        (2, "waiting"),
        (1, "done"),
        (2, "running"),
        (2, "done"),
    ]
