"""OpenTelemetry traces of runs: the span tree, parents, kinds, attributes and times match the
run, content only when asked for, errors and timeouts, concurrent runs apart, and the OTLP/HTTP
export set up from the environment."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dagcall import (
    Compiler,
    LLMCall,
    Message,
    ModelHTTPError,
    ModelStreamError,
    Round,
    RunEvent,
    RunResult,
    RunTimeoutError,
    ScriptedModel,
    TaskStatus,
    UsageError,
    call_model,
    tool,
)
from dagcall.telemetry import Tracing, configure_from_env, instrument, trace_run

MARKER = "marker-in-the-question"


@tool
async def fetch(key: str) -> str:
    """Fetch a value."""
    await asyncio.sleep(0.02)
    if key == "broken":
        raise RuntimeError("backend down")
    return f"value of {key}"


HELPER = "openai:helper-mini"


@tool
async def summarize(text: str) -> str:
    """Summarize with a model."""
    reply = await call_model(ScriptedModel(["short"], name=HELPER), [Message("user", text)])
    return reply.text


@tool
async def slow(key: str) -> str:
    """Take a long time."""
    await asyncio.sleep(5)
    return key


def script() -> list[str]:
    """Two rounds: parallel fetches, a failure with a skipped dependent, a tool that calls a
    model, a replan."""
    return [
        'Thought: at once.\n1. fetch("a")\n2. fetch("b")\n3. fetch("broken")\n'
        '4. fetch("after $3")\n5. summarize("$1 and $2")\n6. join()',
        "Thought: need c.\nAction: Replan(fetch c)",
        '7. fetch("c from $1")\n8. join()',
        'Action: Finish(c = "value of c")',
    ]


def compiler(replies: list[Any] | None = None, **options: Any) -> Compiler:
    model = ScriptedModel(replies if replies is not None else script(), name="openai:gpt-test")
    return Compiler(model=model, tools=[fetch, summarize, slow], **options)


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own OTEL_* settings stay out of these tests (and their subprocesses)."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


@pytest.fixture(scope="module")
def run() -> RunResult:
    result = compiler().run(f"What is c? {MARKER}")
    assert result.stop_reason == "finish"
    return result


def spans_of(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    found = [s for s in spans if s.context is not None and s.context.span_id == span.parent.span_id]
    assert len(found) == 1
    return found[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def ns(result: RunResult, offset: float) -> float:
    return (result.start_time + offset) * 1e9


def assert_times(span: ReadableSpan, result: RunResult, start: float, end: float) -> None:
    assert span.start_time is not None
    assert span.end_time is not None
    # within 1 µs of the record's time (float Unix times resolve about 0.25 µs)
    assert abs(span.start_time - ns(result, start)) <= 1000
    assert abs(span.end_time - ns(result, end)) <= 1000


def tree(spans: list[ReadableSpan], span: ReadableSpan, depth: int = 0) -> list[str]:
    assert span.context is not None
    lines = [("  " * depth) + span.name]
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id
    ]
    for child in sorted(children, key=lambda s: (s.start_time or 0, s.name)):
        lines += tree(spans, child, depth + 1)
    return lines


# -- the span tree of a real run -------------------------------------------------------------


def test_the_span_tree_follows_the_run(
    run: RunResult, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_run(run, tracer_provider=provider)
    spans = spans_of(exporter)
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent dagcall"
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    # 1 agent + 2 plans + 2 planner chats + 6 tasks + 1 tool chat + 2 joiner chats
    assert len(spans) == 14
    lines = tree(spans, root)
    assert lines[0] == "invoke_agent dagcall"
    assert [
        line.strip() for line in lines if line.startswith("  ") and not line.startswith("    ")
    ] == [
        s.name
        for s in sorted(
            [s for s in spans if parent_of(s, spans) is root],
            key=lambda s: (s.start_time or 0, s.name),
        )
    ]
    names = by_name(spans)
    assert len(names["plan dagcall"]) == 2
    assert len(names["chat gpt-test"]) == 4  # two planner, two joiner calls
    assert len(names["execute_tool fetch"]) == 5
    assert len(names["execute_tool summarize"]) == 1
    assert len(names["chat helper-mini"]) == 1
    for plan in names["plan dagcall"]:
        assert parent_of(plan, spans) is root
        (chat,) = [s for s in spans if parent_of(s, spans) is plan]
        assert chat.name == "chat gpt-test"
        assert attrs(chat)["dagcall.llm.role"] == "planner"
        assert attrs(chat)["dagcall.round.index"] == attrs(plan)["dagcall.round.index"]
    for task_span in names["execute_tool fetch"] + names["execute_tool summarize"]:
        assert parent_of(task_span, spans) is root
    (tool_chat,) = names["chat helper-mini"]
    assert parent_of(tool_chat, spans) is names["execute_tool summarize"][0]
    joiners = [s for s in names["chat gpt-test"] if attrs(s)["dagcall.llm.role"] == "joiner"]
    assert len(joiners) == 2
    assert all(parent_of(s, spans) is root for s in joiners)
    assert [attrs(s)["dagcall.joiner.decision"] for s in joiners] == ["replan", "finish"]


def test_kinds_and_operation_names(
    run: RunResult, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_run(run, tracer_provider=provider)
    for span in spans_of(exporter):
        operation = attrs(span)["gen_ai.operation.name"]
        assert span.name.split(" ")[0] == operation
        expected = SpanKind.CLIENT if operation == "chat" else SpanKind.INTERNAL
        assert span.kind == expected, span.name
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "dagcall"


def test_attributes_match_the_run(
    run: RunResult, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_run(run, tracer_provider=provider, attributes={"dagcall.run_id": "r-1"})
    spans = spans_of(exporter)
    names = by_name(spans)
    (root,) = names["invoke_agent dagcall"]
    a = attrs(root)
    assert a["gen_ai.agent.name"] == "dagcall"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-test"
    assert a["gen_ai.usage.input_tokens"] == run.input_tokens
    assert a["gen_ai.usage.output_tokens"] == run.output_tokens
    assert a["dagcall.stop_reason"] == "finish"
    assert a["dagcall.rounds"] == 2
    assert a["dagcall.tasks"] == 6
    assert a["dagcall.tasks.failed"] == 1
    assert a["dagcall.llm_calls"] == len(run.usage) == 5
    assert a["dagcall.run_id"] == "r-1"
    assert "error.type" not in a
    assert root.status.status_code is StatusCode.UNSET
    # every model call is one chat span with its own usage
    chats = [s for s in spans if attrs(s)["gen_ai.operation.name"] == "chat"]
    got = sorted(
        (
            attrs(s)["dagcall.llm.role"],
            attrs(s)["dagcall.round.index"],
            attrs(s)["gen_ai.usage.input_tokens"],
            attrs(s)["gen_ai.usage.output_tokens"],
        )
        for s in chats
    )
    want = sorted((c.role, c.round, c.input_tokens, c.output_tokens) for c in run.usage)
    assert got == want
    assert sum(attrs(s)["gen_ai.usage.input_tokens"] for s in chats) == run.input_tokens
    for chat in chats:
        assert attrs(chat)["gen_ai.response.finish_reasons"] == ("stop",)
        assert chat.status.status_code is StatusCode.UNSET
    (tool_chat,) = names["chat helper-mini"]
    assert attrs(tool_chat)["gen_ai.provider.name"] == "openai"
    assert attrs(tool_chat)["dagcall.task.id"] == 5
    # tasks: the tool call id is the task id; the failure is an error, the skip is marked
    tasks = {attrs(s)["gen_ai.tool.call.id"]: s for s in spans if s.name.startswith("execute_tool")}
    assert sorted(tasks, key=int) == [str(t.id) for t in run.tasks]
    for task in run.tasks:
        span = tasks[str(task.id)]
        assert attrs(span)["gen_ai.tool.name"] == task.tool
        assert attrs(span)["dagcall.task.status"] == task.status.value
        assert attrs(span)["dagcall.round.index"] == task.round
        assert list(attrs(span)["dagcall.task.deps"]) == list(task.deps)
    assert run.task(3).status is TaskStatus.FAILED
    failed = tasks["3"]
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["error.type"] == "ToolExecutionError"
    assert failed.status.description == "ToolExecutionError"  # no message without content
    assert run.task(4).status is TaskStatus.SKIPPED
    skipped = tasks["4"]
    assert skipped.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(skipped)
    assert attrs(skipped)["dagcall.task.error_type"] == "DependencyError"
    assert attrs(skipped)["dagcall.task.started"] is False
    assert all(
        tasks[str(t.id)].status.status_code is StatusCode.UNSET
        for t in run.tasks
        if t.status is TaskStatus.DONE
    )
    plans = sorted(names["plan dagcall"], key=lambda s: attrs(s)["dagcall.round.index"])
    assert [attrs(p)["dagcall.round.decision"] for p in plans] == ["replan", "finish"]
    assert [list(attrs(p)["dagcall.round.task_ids"]) for p in plans] == [[1, 2, 3, 4, 5], [7]]


def test_span_times_are_the_records_times(
    run: RunResult, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_run(run, tracer_provider=provider)
    spans = spans_of(exporter)
    names = by_name(spans)
    (root,) = names["invoke_agent dagcall"]
    assert_times(root, run, 0.0, run.wall_time)
    tasks = {attrs(s)["gen_ai.tool.call.id"]: s for s in spans if s.name.startswith("execute_tool")}
    for task in run.tasks:
        start = task.started_at if task.started_at is not None else task.parsed_at
        assert task.ended_at is not None
        assert_times(tasks[str(task.id)], run, start, task.ended_at)
    chats = [s for s in spans if s.name.startswith("chat ")]
    for call in run.usage:
        matching = [
            s
            for s in chats
            if attrs(s)["dagcall.llm.role"] == call.role
            and attrs(s)["dagcall.round.index"] == call.round
        ]
        assert len(matching) == 1
        assert_times(matching[0], run, call.started_at, call.ended_at)
    for plan in names["plan dagcall"]:
        (call,) = [
            c
            for c in run.usage
            if c.role == "planner" and c.round == attrs(plan)["dagcall.round.index"]
        ]
        assert_times(plan, run, call.started_at, call.ended_at)
    # every span lies within the run's span
    assert root.start_time is not None
    assert root.end_time is not None
    for span in spans:
        assert span.start_time is not None
        assert span.end_time is not None
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time


def test_tasks_under_plan_puts_each_task_under_its_round(
    run: RunResult, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_run(run, tracer_provider=provider, tasks_under_plan=True)
    spans = spans_of(exporter)
    for span in spans:
        if span.name.startswith("execute_tool"):
            parent = parent_of(span, spans)
            assert parent is not None
            assert parent.name == "plan dagcall"
            assert attrs(parent)["dagcall.round.index"] == attrs(span)["dagcall.round.index"]


# -- content -----------------------------------------------------------------------------------

CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "dagcall.task.call",
    "dagcall.round.replan_reason",
}


def test_no_content_by_default(
    run: RunResult, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_run(run, tracer_provider=provider)
    for span in spans_of(exporter):
        assert not CONTENT_KEYS & set(attrs(span)), span.name
        text = json.dumps({k: str(v) for k, v in attrs(span).items()})
        assert MARKER not in text
        assert "value of" not in text
        assert "backend down" not in text
        assert "backend down" not in (span.status.description or "")


def test_content_when_asked_for(
    run: RunResult, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_run(run, tracer_provider=provider, capture_content=True)
    spans = spans_of(exporter)
    names = by_name(spans)
    (root,) = names["invoke_agent dagcall"]
    (question,) = json.loads(attrs(root)["gen_ai.input.messages"])
    assert question == {"role": "user", "parts": [{"type": "text", "content": run.question}]}
    (answer,) = json.loads(attrs(root)["gen_ai.output.messages"])
    assert answer["parts"][0]["content"] == run.answer == 'c = "value of c"'
    assert answer["finish_reason"] == "stop"
    tasks = {attrs(s)["gen_ai.tool.call.id"]: s for s in spans if s.name.startswith("execute_tool")}
    one = attrs(tasks["1"])
    assert json.loads(one["gen_ai.tool.call.arguments"]) == {"key": "a"}
    assert json.loads(one["gen_ai.tool.call.result"]) == "value of a"
    assert one["dagcall.task.call"] == 'fetch("a")'
    assert "gen_ai.tool.call.result" not in attrs(tasks["3"])
    assert tasks["3"].status.description == "ToolExecutionError: " + run.task(3).error.message  # type: ignore[union-attr]
    assert "backend down" in (tasks["3"].status.description or "")
    plans = [s for s in names["chat gpt-test"] if attrs(s)["dagcall.llm.role"] == "planner"]
    texts = sorted(
        json.loads(attrs(p)["gen_ai.output.messages"])[0]["parts"][0]["content"] for p in plans
    )
    assert texts == sorted(r.plan for r in run.rounds)
    first_plan = [p for p in names["plan dagcall"] if attrs(p)["dagcall.round.index"] == 0]
    assert attrs(first_plan[0])["dagcall.round.replan_reason"] == "fetch c"


# -- errors --------------------------------------------------------------------------------------


async def test_a_timed_out_run_gives_an_error_agent_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    c = compiler(['1. slow("x")\n2. join()', "Action: Finish(never)"], timeout=0.3)
    with pytest.raises(RunTimeoutError) as caught:
        await c.arun("q")
    result = caught.value.result
    assert result is not None
    assert result.stop_reason == "timeout"
    trace_run(result, tracer_provider=provider)
    spans = spans_of(exporter)
    (root,) = [s for s in spans if s.parent is None]
    assert root.status.status_code is StatusCode.ERROR
    assert attrs(root)["error.type"] == "RunTimeoutError"
    assert attrs(root)["dagcall.stop_reason"] == "timeout"
    assert_times(root, result, 0.0, result.wall_time)
    (task,) = [s for s in spans if s.name == "execute_tool slow"]
    assert attrs(task)["dagcall.task.status"] == "cancelled"
    assert task.status.status_code is StatusCode.UNSET
    # the planner finished long before the timeout: its call is not the failure
    (chat,) = [s for s in spans if s.name.startswith("chat ")]
    assert chat.status.status_code is StatusCode.UNSET


async def test_a_planner_cut_short_by_the_timeout_is_the_failed_call(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    model = ScriptedModel(['1. fetch("a")\n2. join()'], time_to_first_token=2.0, name="slowpoke")
    c = Compiler(model=model, tools=[fetch], timeout=0.2)
    with pytest.raises(RunTimeoutError) as caught:
        await c.arun("q")
    assert caught.value.result is not None
    trace_run(caught.value.result, tracer_provider=provider)
    spans = spans_of(exporter)
    (chat,) = [s for s in spans if s.name == "chat slowpoke"]
    assert attrs(chat)["gen_ai.provider.name"] == "slowpoke"
    assert chat.status.status_code is StatusCode.ERROR
    assert attrs(chat)["error.type"] == "RunTimeoutError"
    (plan,) = [s for s in spans if s.name == "plan dagcall"]
    assert plan.status.status_code is StatusCode.ERROR


async def test_a_run_whose_joiner_fails_marks_the_joiner_and_the_run(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    failure = ModelHTTPError("provider said 503", model="openai:gpt-test", status_code=503)
    c = compiler(['1. fetch("a")\n2. join()', failure])
    events: list[str] = []
    tracing = Tracing(lambda e: events.append(e.kind), tracer_provider=provider)
    with pytest.raises(ModelHTTPError) as caught:
        await c.arun("q", on_event=tracing.handle)
    assert events[-1] == "finished"
    result = caught.value.result
    assert result is not None
    spans = spans_of(exporter)
    (root,) = [s for s in spans if s.parent is None]
    assert root.status.status_code is StatusCode.ERROR
    assert attrs(root)["error.type"] == "ModelHTTPError"
    assert attrs(root)["dagcall.stop_reason"] == "error"
    chats = {attrs(s)["dagcall.llm.role"]: s for s in spans if s.name.startswith("chat ")}
    assert chats["planner"].status.status_code is StatusCode.UNSET
    assert chats["joiner"].status.status_code is StatusCode.ERROR
    assert attrs(chats["joiner"])["error.type"] == "ModelHTTPError"
    assert attrs(chats["joiner"])["gen_ai.response.finish_reasons"] == ("error",)


def test_a_planner_that_fails_after_writing_tasks_marks_its_plan() -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))

    result = RunResult(question="q", start_time=1_700_000_000.123456, wall_time=2.0)
    error = ModelStreamError("the stream was cut", model="openai:gpt-test")
    result.rounds.append(Round(index=0, task_ids=[], errors=[error], decision="finish"))
    result.usage.append(LLMCall("planner", "openai:gpt-test", 0, 10, 5, 0.1, 0.5, 0.2))
    result.usage.append(LLMCall("joiner", "openai:gpt-test", 0, 10, 5, 0.6, 1.9, 0.1))
    trace_run(result, tracer_provider=tp)
    spans = spans_of(exporter)
    (plan,) = [s for s in spans if s.name == "plan dagcall"]
    assert plan.status.status_code is StatusCode.ERROR
    assert attrs(plan)["error.type"] == "ModelStreamError"
    assert attrs(plan)["dagcall.round.plan_errors"] == 1
    (chat,) = [s for s in spans if parent_of(s, spans) is plan]
    assert attrs(chat)["error.type"] == "ModelStreamError"
    assert_times(chat, result, 0.1, 0.5)
    assert abs((chat.start_time or 0) - 1_700_000_000_223_456_000) <= 1000
    tp.shutdown()


# -- handlers, wrappers, concurrency -------------------------------------------------------------


async def test_tracing_wraps_another_handler_and_records_at_finished(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[RunEvent] = []

    def view(event: RunEvent) -> None:
        seen.append(event)
        if event.kind == "finished":
            raise RuntimeError("a broken view")

    tracing = Tracing(on_event=view, tracer_provider=provider)
    result = await compiler().arun("q", on_event=tracing)
    assert seen[-1].kind == "finished"
    assert {e.kind for e in seen} >= {"round_start", "task", "plan_text", "finished"}
    assert len(spans_of(exporter)) == 14
    (root,) = [s for s in spans_of(exporter) if s.parent is None]
    assert_times(root, result, 0.0, result.wall_time)


async def test_many_concurrent_runs_give_separate_traces(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(tracer_provider=provider)
    results = await asyncio.gather(
        *(compiler().arun(f"q{i}", on_event=tracing.handle) for i in range(12))
    )
    spans = spans_of(exporter)
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 12
    traces = {s.context.trace_id for s in roots if s.context}
    assert len(traces) == 12
    for root in roots:
        assert root.context is not None
        mine = [s for s in spans if s.context and s.context.trace_id == root.context.trace_id]
        assert len(mine) == 14
    starts = sorted(r.start_time for r in results)
    assert sorted((s.start_time or 0) for s in roots) == pytest.approx(
        [t * 1e9 for t in starts], abs=1000
    )


async def test_a_run_inside_a_span_joins_its_trace_unless_told_otherwise(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("the-app")
    with tracer.start_as_current_span("request") as request:
        await compiler().arun("q", on_event=Tracing(tracer_provider=provider).handle)
        await compiler().arun(
            "q", on_event=Tracing(tracer_provider=provider, parent=otel_context.Context()).handle
        )
    spans = spans_of(exporter)
    agents = [s for s in spans if s.name == "invoke_agent dagcall"]
    assert len(agents) == 2
    joined, apart = agents
    assert joined.parent is not None
    assert joined.parent.span_id == request.get_span_context().span_id
    assert apart.parent is None
    assert apart.context is not None
    assert apart.context.trace_id != request.get_span_context().trace_id


async def test_instrument_traces_every_run_of_an_agent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[str] = []
    agent = instrument(compiler(script() * 2), tracer_provider=provider, agent_name="helper")
    assert agent.max_replans == 2  # the agent's own attributes
    await agent.arun("q", on_event=lambda e: seen.append(e.kind))
    events = [e.kind async for e in agent.stream("q")]
    assert events[-1] == "finished"
    assert seen[-1] == "finished"
    roots = [s for s in spans_of(exporter) if s.parent is None]
    assert [r.name for r in roots] == ["invoke_agent helper", "invoke_agent helper"]
    assert all(attrs(r)["gen_ai.agent.name"] == "helper" for r in roots)


def test_a_baseline_run_is_traced_too(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from dagcall.baselines import ReActAgent

    steps = ['Thought: a.\nAction: fetch("a")', "Thought: done.\nAction: Finish(value of a)"]
    agent = instrument(ReActAgent(ScriptedModel(steps), [fetch]), tracer_provider=provider)
    result = agent.run("q")  # ReActAgent.run takes no on_event: traced through arun
    assert result.answer == "value of a"
    spans = spans_of(exporter)
    (root,) = [s for s in spans if s.parent is None]
    children = sorted(
        (s for s in spans if parent_of(s, spans) is root), key=lambda s: s.start_time or 0
    )
    assert [s.name for s in children] == ["chat scripted", "execute_tool fetch", "chat scripted"]
    assert [attrs(s).get("dagcall.llm.role") for s in children] == ["react", None, "react"]
    assert attrs(children[1])["gen_ai.tool.call.id"] == str(result.tasks[0].id)


def test_the_global_provider_is_used_by_default(
    run: RunResult,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With no SDK provider installed globally recording is a no-op, and must not fail.
    trace_run(run)
    Tracing().handle(RunEvent("finished", run, 0))
    assert spans_of(exporter) == []
    # The global provider (stood in for here, so the real one is left alone) is the default.
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    trace_run(run)
    Tracing().handle(RunEvent("finished", run, 0))
    assert len(spans_of(exporter)) == 28


# -- the environment's exporter ------------------------------------------------------------------


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes, str]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.bodies.append((self.path, self.rfile.read(length), self.headers.get("x-team", "")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_configure_from_env_exports_over_otlp_http(
    run: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=agents")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "my-agents")
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        provider = configure_from_env(set_global=False)
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "my-agents"
        trace_run(run, tracer_provider=provider)
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert _Collector.bodies
    names: list[str] = []
    for path, body, team in _Collector.bodies:
        assert path == "/v1/traces"
        assert team == "agents"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = [
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ]
            assert service == ["my-agents"]
            for scope in resource_spans.scope_spans:
                names += [s.name for s in scope.spans]
    assert sorted(names) == sorted(s for s in _span_names(run))


def _span_names(run: RunResult) -> list[str]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    trace_run(run, tracer_provider=tp)
    tp.shutdown()
    return [s.name for s in exporter.get_finished_spans()]


def test_configure_from_env_names_the_service_and_refuses_what_it_cannot_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    provider = configure_from_env(set_global=False)
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "dagcall"
    provider.shutdown()
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs")
    provider = configure_from_env(set_global=False, service_name="ignored")
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "from-attrs"
    provider.shutdown()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(UsageError, match="zipkin"):
        configure_from_env(set_global=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(UsageError, match="http/protobuf"):
        configure_from_env(set_global=False)


def test_configure_from_env_keeps_a_provider_the_application_installed() -> None:
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from dagcall.telemetry import configure_from_env\n"
        "mine = TracerProvider()\n"
        "trace.set_tracer_provider(mine)\n"
        "assert configure_from_env() is mine\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_configure_from_env_installs_the_global_provider() -> None:
    code = (
        "import os\n"
        "os.environ['OTEL_TRACES_EXPORTER'] = 'none'\n"
        "from opentelemetry import trace\n"
        "from dagcall.telemetry import configure_from_env\n"
        "provider = configure_from_env()\n"
        "assert trace.get_tracer_provider() is provider\n"
        "print(provider.resource.attributes['service.name'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "dagcall"


def test_the_docs_example_runs_and_exports() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "telemetry.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "Tracing()" in b]
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "docs"}
    out = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("value of a\n")
    for name in ("invoke_agent dagcall", "plan dagcall", "chat scripted", "execute_tool lookup"):
        assert f'"name": "{name}"' in out.stdout
    assert '"service.name": "docs"' in out.stdout


# -- without the extra ---------------------------------------------------------------------------


def test_dagcall_never_imports_opentelemetry_and_says_which_extra_it_needs() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if the otel extra were not installed
        "import dagcall, dagcall.telemetry\n"
        "from dagcall import RunResult, UsageError\n"
        "from dagcall.telemetry import Tracing, configure_from_env, trace_run\n"
        "for call in (lambda: trace_run(RunResult('q')), Tracing, configure_from_env):\n"
        "    try:\n"
        "        call()\n"
        "    except UsageError as exc:\n"
        "        assert \"pip install 'dagcall[otel]'\" in str(exc), exc\n"
        "    else:\n"
        "        raise AssertionError('no UsageError')\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    plain = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, dagcall, dagcall.telemetry\n"
            "from dagcall import Compiler\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert plain.stdout.strip() == "[]"
