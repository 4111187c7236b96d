"""One result schema: runs write strict JSON and read it back typed; why a run stopped is an
enum, with the error that stopped it; the baselines share the compiler's run scaffold."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dagcall import (
    BudgetError,
    Compiler,
    DagcallError,
    ModelHTTPError,
    PlanSyntaxError,
    RunEvent,
    RunResult,
    RunTimeoutError,
    ScriptedModel,
    StopReason,
    TaskRecord,
    TaskStatus,
    ToolError,
    ToolTimeoutError,
    UsageError,
    tool,
)
from dagcall.baselines import ParallelFunctionCallingAgent, ReActAgent
from dagcall.store import RunStore, StoredRun, read_run
from runs import sample_run


@tool
async def slow(key: str) -> str:
    """Take a long time."""
    await asyncio.sleep(30)
    return key


@tool(timeout=0.05)
async def stuck(key: str) -> str:
    """Never answer in time."""
    await asyncio.sleep(30)
    return key


def test_a_run_round_trips_through_json_typed() -> None:
    result = sample_run()
    text = result.to_json()
    again = RunResult.model_validate_json(text)
    assert again.to_json() == text
    assert again.stop_reason is StopReason.FINISH
    assert [type(t.error) for t in again.tasks] == [type(t.error) for t in result.tasks]
    assert [t.status for t in again.tasks] == [t.status for t in result.tasks]
    skipped = next(t for t in again.tasks if t.status is TaskStatus.SKIPPED)
    assert isinstance(skipped.error, ToolError)
    assert skipped.error.tool == "fetch"
    assert skipped.error.task_id == skipped.id
    assert isinstance(again.tasks[0], TaskRecord)
    assert again.tasks[0].output == result.tasks[0].output
    assert again.usage == result.usage  # frozen records compare by value
    # the dict form reads back too, and the schema describes it
    assert RunResult.model_validate(result.to_dict()).to_json() == text
    schema = RunResult.model_json_schema()
    assert set(schema["properties"]) >= {"question", "answer", "tasks", "usage", "stop_reason"}
    assert "finish" in json.dumps(schema)


class ProviderSaidNo(ModelHTTPError):
    """An error class dagcall does not know."""


def test_errors_read_back_as_their_classes_with_their_fields() -> None:
    result = RunResult(question="q", stop_reason=StopReason.ERROR)
    result.error = ProviderSaidNo("rate limited", model="m", status_code=429)
    result.tasks = [
        TaskRecord(
            id=1,
            tool="t",
            call="t()",
            round=0,
            status=TaskStatus.FAILED,
            error=ToolTimeoutError("too slow", tool="t", task_id=1),
        )
    ]
    again = RunResult.model_validate_json(result.to_json())
    assert isinstance(again.error, ModelHTTPError)
    assert type(again.error).__name__ == "ProviderSaidNo"
    assert (again.error.message, again.error.status_code, again.error.model) == (
        "rate limited",
        429,
        "m",
    )
    error = again.tasks[0].error
    assert type(error) is ToolTimeoutError
    assert (error.tool, error.task_id) == ("t", 1)
    assert again.to_json() == result.to_json()


@pytest.mark.parametrize(
    "data",
    ['{"question": 3}', '{"answer": "no question"}', "[1, 2]", '{"question": "q", "tasks": 7}'],
)
def test_what_is_not_a_run_is_a_clear_usage_error(data: str) -> None:
    with pytest.raises(UsageError, match="not a valid RunResult"):
        RunResult.model_validate_json(data)


def test_older_and_damaged_records_read_leniently_saying_what_changed() -> None:
    data = json.loads(sample_run().to_json())
    data["stop_reason"] = "ModelConnectionError"  # how earlier versions wrote an error
    data["tasks"][0]["id"] = "one"
    data["tasks"][2]["deps"] = ["one", 2, "nothing"]
    data["usage"][0]["role"] = "critic"
    run, repairs = read_run(data)
    assert run.stop_reason is StopReason.ERROR
    assert type(run.error).__name__ == "ModelConnectionError"
    renumbered = max(t.id for t in run.tasks)
    assert run.tasks[0].id == renumbered
    assert run.tasks[2].deps == (renumbered, 2)
    assert any("'one' is not an int" in r for r in repairs)
    assert any("'nothing' names no task" in r for r in repairs)
    assert any("'critic' is not known" in r for r in repairs)
    assert len(run.usage) == len(data["usage"]) - 1


def test_the_store_returns_typed_runs(tmp_path: Any) -> None:
    result = sample_run()
    with RunStore(tmp_path / "r.sqlite3") as store:
        stored = store.load(store.save(result, planner="p", joiner="j"))
    assert isinstance(stored, StoredRun)
    assert isinstance(stored, RunResult)
    assert (stored.planner, stored.joiner, stored.repairs) == ("p", "j", [])
    assert stored.stop_reason is StopReason.FINISH
    assert stored.answer == result.answer
    assert StoredRun.model_validate_json(stored.to_json()).to_json() == stored.to_json()


# -- why a run stopped ------------------------------------------------------------------------


async def test_a_timeout_stops_with_reason_and_error() -> None:
    model = ScriptedModel(['1. slow("a")\n2. join()', "Action: Finish(x)"])
    with pytest.raises(RunTimeoutError) as info:
        await Compiler(model=model, tools=[slow]).arun("q?", timeout=0.3)
    result = info.value.result
    assert result is not None
    assert result.stop_reason is StopReason.TIMEOUT
    assert result.error is info.value
    assert RunResult.model_validate_json(result.to_json()).stop_reason is StopReason.TIMEOUT


async def test_a_budget_stops_with_reason_budget() -> None:
    model = ScriptedModel(["1. slow('a')\n" * 3 + "join()", "Action: Finish(x)"])
    with pytest.raises(BudgetError) as info:
        await Compiler(model=model, tools=[slow], max_tasks=2).arun("q?")
    assert info.value.result is not None
    assert info.value.result.stop_reason is StopReason.BUDGET
    assert info.value.result.error is info.value


async def test_cancelling_a_run_stops_it_as_cancelled() -> None:
    model = ScriptedModel(['1. slow("a")\n2. join()', "Action: Finish(x)"])
    seen: list[RunEvent] = []
    run = asyncio.ensure_future(
        Compiler(model=model, tools=[slow]).arun("q?", on_event=seen.append)
    )
    while not any(e.kind == "task" and e.task and e.task.status == "running" for e in seen):
        await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert seen[-1].kind == "finished"
    assert seen[-1].result.stop_reason is StopReason.CANCELLED


async def test_a_model_failure_stops_with_reason_error() -> None:
    class Failing(ScriptedModel):
        async def stream(self, *args: Any, **kwargs: Any) -> Any:
            raise ModelHTTPError("bad gateway", model="m", status_code=502)
            yield ""  # an async generator

    with pytest.raises(ModelHTTPError) as info:
        await Compiler(model=Failing([]), tools=[slow]).arun("q?")
    result = info.value.result
    assert result is not None
    assert result.stop_reason is StopReason.ERROR
    assert isinstance(result.error, ModelHTTPError)


# -- the baselines run on the same scaffold --------------------------------------------------


def _react(**options: Any) -> ReActAgent:
    model = ScriptedModel(
        ['Thought: look it up.\nAction: slow("a")', "Thought: done.\nAction: Finish(a)"]
    )
    return ReActAgent(model, [slow], **options)


def _parallel(**options: Any) -> ParallelFunctionCallingAgent:
    model = ScriptedModel(
        [
            '{"tool_calls": [{"name": "slow", "arguments": {"key": "a"}}, '
            '{"name": "slow", "arguments": {"key": "b"}}]}',
            '{"answer": "a and b"}',
        ]
    )
    return ParallelFunctionCallingAgent(model, [slow], native=False, **options)


@pytest.mark.parametrize("make", [_react, _parallel])
async def test_baselines_have_the_run_timeout(make: Any) -> None:
    with pytest.raises(RunTimeoutError) as info:
        await make(timeout=0.3).arun("q?")
    result = info.value.result
    assert result is not None
    assert result.stop_reason is StopReason.TIMEOUT
    assert result.tasks
    assert all(t.status is TaskStatus.CANCELLED for t in result.tasks)
    assert result.wall_time < 5


@pytest.mark.parametrize("make", [_react, _parallel])
async def test_baselines_have_the_token_budget(make: Any) -> None:
    with pytest.raises(BudgetError) as info:
        await make(max_tokens=20).arun("q?")
    assert info.value.limit == "max_tokens"
    result = info.value.result
    assert result is not None
    assert result.stop_reason is StopReason.BUDGET
    assert result.tasks == []  # stopped while the first model call streamed


@pytest.mark.parametrize("make", [_react, _parallel])
async def test_baselines_send_the_compilers_events(make: Any) -> None:
    seen: list[RunEvent] = []
    statuses: list[TaskStatus] = []  # as each event saw it (the records go on changing)

    def on_event(event: RunEvent) -> None:
        seen.append(event)
        if event.task is not None:
            statuses.append(event.task.status)

    result = await make(tool_timeout=0.2).arun("q?", on_event=on_event)
    kinds = [e.kind for e in seen]
    assert kinds[0] == "round_start"
    assert kinds[-1] == "finished"
    assert "plan_text" in kinds
    assert TaskStatus.RUNNING in statuses
    assert TaskStatus.FAILED in statuses
    assert result.stop_reason is StopReason.FINISH
    assert seen[-1].result is result


@pytest.mark.parametrize("make", [_react, _parallel])
async def test_baselines_tool_failures_are_observations(make: Any) -> None:
    # tool_timeout ends each call; the error becomes the observation and the run answers
    result = await make(tool_timeout=0.05).arun("q?")
    assert result.stop_reason is StopReason.FINISH
    assert result.tasks
    assert all(isinstance(t.error, ToolTimeoutError) for t in result.tasks)


def test_stop_reasons_are_plain_strings_too() -> None:
    assert str(StopReason.FINISH) == "finish"
    assert StopReason("finish") is StopReason.FINISH
    assert json.loads(RunResult(question="q").to_json())["stop_reason"] == "running"
    assert issubclass(PlanSyntaxError, DagcallError)
