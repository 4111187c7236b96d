"""Tools defined by a JSON Schema (SchemaTool) and toolsets, in real Compiler runs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import pytest
from pydantic import BaseModel

from dagcall import (
    Compiler,
    Message,
    ScriptedModel,
    TaskStatus,
    ToolArgumentError,
    ToolDefinitionError,
    ToolTimeoutError,
    UsageError,
    tool,
)
from dagcall._grammar import plan_grammar
from dagcall._tools import BaseTool
from dagcall._toolsets import SchemaTool, Toolbox, Toolset, is_toolset

FINISH = "Thought: done.\nAction: Finish(the answer)"

SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string"},
        "delay": {"type": "number", "default": 0.2},
    },
    "required": ["query"],
}


def plan(*lines: str) -> str:
    return "\n".join(lines) + "\n<END_OF_PLAN>"


def schema_search(calls: list[dict[str, Any]] | None = None, **kw: Any) -> SchemaTool:
    async def run(arguments: dict[str, Any]) -> str:
        if calls is not None:
            calls.append(arguments)
        await asyncio.sleep(arguments.get("delay", 0.2))
        return f"result for {arguments['query']}"

    return SchemaTool("search", "Search.", SEARCH_SCHEMA, run, **kw)


class MemoryToolset:
    """A toy in-memory toolset that counts its openings and closings."""

    def __init__(self, *tools: BaseTool, fail: bool = False, delay: float = 0.01) -> None:
        self._tools = tools
        self.opened = 0
        self.closed = 0
        self.fail = fail
        self.delay = delay

    async def open(self) -> Sequence[BaseTool]:
        await asyncio.sleep(self.delay)  # concurrent runs overlap here
        self.opened += 1
        if self.fail:
            raise ConnectionError("server down")
        return self._tools

    async def aclose(self) -> None:
        self.closed += 1


# -- definition and rendering ----------------------------------------------------------------


def test_schema_tool_renders_like_the_same_function_tool() -> None:
    @tool
    def search(query: str, delay: float = 0.2) -> str:
        """Search."""
        return query

    function_head = search.render().splitlines()[0].split(" ->")[0]
    assert schema_search().render() == f"{function_head}\nSearch."
    assert function_head == "search(query: str, delay: float = 0.2)"


def test_schema_tool_renders_types_defaults_and_argument_notes() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mode": {"enum": ["fast", "slow"], "description": "How  hard\nto try."},
            "tags": {"type": "array", "items": {"type": "string"}},
            "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "flag": {"type": "boolean", "default": True},
            "tail": {"type": "number"},  # optional, without a default (as MCP servers write)
        },
        "required": ["mode", "tags"],
    }

    async def run(arguments: dict[str, Any]) -> None:
        return None

    t = SchemaTool("look", "Look.", schema, run, output_schema={"type": "string"})
    assert t.render() == (
        "look(mode: Literal['fast', 'slow'], tags: list[str], limit: int | None = None, "
        "flag: bool = True, tail: float = None) -> str\nLook.\nArguments:\n"
        "  mode: How hard to try."
    )
    assert t.parameter_names == ["mode", "tags", "limit", "flag", "tail"]
    assert t.json_schema == schema
    assert t.json_schema is not t.json_schema


def test_a_structured_result_shows_its_fields_so_a_plan_can_select_one() -> None:
    # MCP structured content: the output schema's properties, not a bare "dict"
    output = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }

    async def run(arguments: dict[str, Any]) -> None:
        return None

    head = SchemaTool("where", "", SEARCH_SCHEMA, run, output_schema=output).render()
    assert head.endswith("-> {city: str, population: int, tags: list[str]}")
    bare = SchemaTool("bag", "", SEARCH_SCHEMA, run, output_schema={"type": "object"})
    assert bare.render().endswith("-> dict")
    many = {"type": "object", "properties": {f"f{i}": {"type": "number"} for i in range(20)}}
    long = SchemaTool("wide", "", SEARCH_SCHEMA, run, output_schema=many).render()
    assert long.split(" -> ")[1].count(": float") == 12
    assert long.endswith("f11: float, ...}")


class Place(TypedDict):
    city: str
    population: int


class Inner(BaseModel):
    x: int


class Record(BaseModel):
    name: str
    inner: Inner


@dataclasses.dataclass
class Point:
    x: float
    y: float


def test_a_function_tool_shows_the_fields_of_a_typed_result() -> None:
    @tool
    def place(q: str) -> Place:
        """A place."""
        return {"city": q, "population": 1}

    @tool
    def record(q: str) -> Record:
        return Record(name=q, inner=Inner(x=1))

    @tool
    def point(q: str) -> Point:
        return Point(0, 0)

    @tool
    def loose(q: str) -> dict[str, Any]:
        return {}

    assert place.render() == "place(q: str) -> {city: str, population: int}\nA place."
    assert record.render() == "record(q: str) -> {name: str, inner: Inner}"
    assert point.render() == "point(q: str) -> {x: float, y: float}"
    assert loose.render() == "loose(q: str) -> dict[str, Any]"


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"type": "array"}, "must describe an object"),
        ({"type": "object", "properties": []}, "'properties' must be a dict"),
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "not a valid JSON Schema"),
        ("nope", "must be a dict"),
    ],
)
def test_bad_schemas_are_refused_at_definition(schema: Any, needle: str) -> None:
    async def run(arguments: dict[str, Any]) -> None:
        return None

    with pytest.raises(ToolDefinitionError, match=needle):
        SchemaTool("t", "", schema, run)


def test_bad_names_policies_and_sync_invokers_are_refused() -> None:
    async def run(arguments: dict[str, Any]) -> None:
        return None

    def blocking(arguments: dict[str, Any]) -> None:
        return None

    with pytest.raises(ToolDefinitionError, match="Python identifier"):
        SchemaTool("my-tool", "", SEARCH_SCHEMA, run)
    with pytest.raises(ToolDefinitionError, match="reserved"):
        SchemaTool("join", "", SEARCH_SCHEMA, run)
    with pytest.raises(ToolDefinitionError, match="timeout must be"):
        SchemaTool("t", "", SEARCH_SCHEMA, run, timeout=0)
    with pytest.raises(ToolDefinitionError, match="max_concurrency"):
        SchemaTool("t", "", SEARCH_SCHEMA, run, max_concurrency=0)
    with pytest.raises(ToolDefinitionError, match="async function"):
        SchemaTool("t", "", SEARCH_SCHEMA, blocking)  # type: ignore[arg-type]


# -- validation -------------------------------------------------------------------------------


def test_positional_arguments_bind_in_property_order() -> None:
    t = schema_search()
    assert t.validate(("a", 1), {}) == {"query": "a", "delay": 1}
    assert t.validate(("a",), {"delay": 0.5}) == {"query": "a", "delay": 0.5}
    assert t.validate((), {"query": "a"}) == {"query": "a"}  # defaults are not filled in


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (("a", 1, 2), {}, "takes 2 positional arguments but 3 were given"),
        (("a",), {"query": "b"}, "multiple values for argument 'query'"),
        ((), {"query": "a", "colour": 1}, "unexpected keyword argument 'colour'"),
        ((), {"delay": 1}, "arguments: 'query' is a required property"),
        ((5,), {}, "query: 5 is not of type 'string'"),
        (("a",), {"delay": "slow"}, "delay: 'slow' is not of type 'number'"),
        ((object(),), {}, "not a JSON value"),
    ],
)
def test_invalid_arguments_are_tool_argument_errors(
    args: tuple[Any, ...], kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ToolArgumentError, match=needle) as info:
        schema_search().validate(args, kwargs, task_id=3)
    assert info.value.tool == "search"
    assert info.value.task_id == 3


def test_tuples_become_lists_and_extra_names_pass_when_the_schema_allows_them() -> None:
    async def run(arguments: dict[str, Any]) -> None:
        return None

    schema = {
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "integer"}}},
        "additionalProperties": {"type": "string"},
    }
    t = SchemaTool("t", "", schema, run)
    assert t.validate(((1, 2),), {"note": "hi"}) == {"xs": [1, 2], "note": "hi"}
    with pytest.raises(ToolArgumentError, match="note: 3 is not of type 'string'"):
        t.validate(([1],), {"note": 3})


# -- grammar ----------------------------------------------------------------------------------


def test_grammar_uses_the_schema_property_names() -> None:
    async def run(arguments: dict[str, Any]) -> None:
        return None

    odd = SchemaTool(
        "odd",
        "",
        {"type": "object", "properties": {"file-path": {"type": "string"}, "n": {}}},
        run,
    )
    grammar = plan_grammar([schema_search(), odd])
    assert 'call0-arg ::= ("query=" | "delay=")? value' in grammar
    assert 'call0 ::= "search(" (call0-arg ("," ws call0-arg)*)? ")"' in grammar
    # A name a Python call cannot spell is passed by position only.
    assert 'call1-arg ::= ("n=")? value' in grammar


# -- compiler runs ----------------------------------------------------------------------------


async def test_schema_tools_run_in_parallel_in_a_real_run() -> None:
    calls: list[dict[str, Any]] = []
    model = ScriptedModel(
        [
            plan(
                '1. search("a", 0.5)',
                '2. search(query="b", delay=0.5)',
                "3. search(query=$1)",
                "4. join()",
            ),
            FINISH,
        ],
        supports_grammar=True,
    )
    compiler = Compiler(model=model, tools=[schema_search(calls)])
    assert (
        "1. search(query: str, delay: float = 0.2)\nSearch."
        in compiler.planner_messages("q")[0].content
    )
    result = await compiler.arun("q")
    assert result.answer == "the answer"
    t1, t2, t3 = result.tasks
    assert all(t.status is TaskStatus.DONE for t in result.tasks)
    assert t1.output == "result for a"
    assert t3.output == "result for result for a"
    assert max(t1.started_at or 0, t2.started_at or 0) < min(t1.ended_at or 0, t2.ended_at or 0)
    assert (t3.started_at or 0) >= (t1.ended_at or 0)
    assert calls[0] == {"query": "a", "delay": 0.5}
    grammar = model.calls[0].grammar
    assert grammar is not None
    assert '"search("' in grammar
    assert '"query="' in grammar


async def test_invalid_schema_tool_arguments_fail_their_task_not_the_run() -> None:
    model = ScriptedModel([plan("1. search(query=5)", "2. join()"), FINISH])
    result = await Compiler(model=model, tools=[schema_search()]).arun("q")
    (task,) = result.tasks
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.error, ToolArgumentError)
    assert "query: 5 is not of type 'string'" in str(task.error)


async def test_schema_tool_timeouts_and_concurrency_limits_apply() -> None:
    model = ScriptedModel(
        [
            plan('1. search("a", 0.3)', '2. search("b", 0.3)', '3. search("c", 5)', "4. join()"),
            FINISH,
        ]
    )
    t = schema_search(timeout=1.0, max_concurrency=1)
    result = await Compiler(model=model, tools=[t]).arun("q")
    t1, t2, t3 = result.tasks
    assert (t2.started_at or 0) >= (t1.ended_at or 0)  # one at a time
    assert t3.status is TaskStatus.FAILED
    assert isinstance(t3.error, ToolTimeoutError)


async def test_toolset_tools_join_the_compiler_once_opened() -> None:
    toolset = MemoryToolset(schema_search())
    model = ScriptedModel(
        [plan('1. search("a", 0)', "2. join()"), FINISH, plan('1. search("b", 0)'), FINISH]
    )
    compiler = Compiler(model=model, tools=[toolset])
    assert compiler.toolbox.toolsets == [toolset]
    assert compiler.tools == {}
    # Two runs at once share one opening.
    opened = await asyncio.gather(compiler.toolbox.open(), compiler.toolbox.open())
    assert opened[0] is compiler.tools
    assert list(compiler.tools) == ["search"]
    assert toolset.opened == 1
    result = await compiler.arun("q")
    assert result.tasks[0].output == "result for a"
    result = await compiler.arun("q")
    assert toolset.opened == 1
    await compiler.toolbox.aclose()
    await compiler.toolbox.aclose()  # idempotent
    assert toolset.closed == 1
    assert compiler.tools == {}


async def test_tool_name_clashes_across_sources_are_usage_errors() -> None:
    @tool
    def search(query: str) -> str:
        return query

    with pytest.raises(UsageError, match="two tools are named 'search'; give one another"):
        Toolbox([search, schema_search()])
    first, second = MemoryToolset(schema_search()), MemoryToolset(schema_search())
    box = Toolbox([first, second])
    with pytest.raises(UsageError, match=r"two tools are named 'search', from toolset .*Memory"):
        await box.open()
    assert first.closed == 1
    assert second.closed == 1
    assert box.tools == {}
    box = Toolbox([search, MemoryToolset(schema_search())])
    with pytest.raises(UsageError, match="from the tools given and toolset"):
        await box.open()
    assert list(box.tools) == ["search"]


async def test_a_toolset_failing_to_open_closes_the_others() -> None:
    good = MemoryToolset(schema_search())
    bad = MemoryToolset(fail=True)
    box = Toolbox([good, bad])
    with pytest.raises(UsageError, match="could not be opened: ConnectionError: server down"):
        await box.open()
    assert good.closed == 1
    assert bad.closed == 0
    assert box.tools == {}
    assert not box.is_open


async def test_toolsets_open_at_the_same_time() -> None:
    slow = [MemoryToolset(delay=0.4) for _ in range(4)]
    box = Toolbox(slow)
    started = asyncio.get_running_loop().time()
    await box.open()
    assert asyncio.get_running_loop().time() - started < 1.0  # not 4 x 0.4 s
    assert [ts.opened for ts in slow] == [1, 1, 1, 1]
    await box.aclose()


async def test_cancelled_while_opening_closes_what_did_open() -> None:
    quick, slow = MemoryToolset(schema_search(), delay=0.01), MemoryToolset(delay=30)
    box = Toolbox([quick, slow])
    opening = asyncio.ensure_future(box.open())
    await asyncio.sleep(0.2)  # the quick one is open, the slow one still opening
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert (quick.opened, quick.closed) == (1, 1)
    assert (slow.opened, slow.closed) == (0, 0)
    assert box.tools == {}
    assert not box.is_open


def test_toolsets_are_recognised_but_classes_and_tools_are_not() -> None:
    assert is_toolset(MemoryToolset())
    assert isinstance(MemoryToolset(), Toolset)
    assert not is_toolset(MemoryToolset)  # a class is a (callable) tool candidate
    assert not is_toolset(schema_search())

    def f(x: int) -> int:
        return x

    assert not is_toolset(f)


def test_function_tools_keep_their_names_and_schema_parameter_names() -> None:
    @tool
    def pick(kind: Literal["a", "b"], n: int = 1, /) -> str:
        return kind * n

    assert isinstance(pick, BaseTool)
    assert pick.parameter_names == ["kind", "n"] == list(pick.json_schema["properties"])


async def test_schema_tool_calls_are_cancelled_or_abandoned_like_async_function_tools() -> None:
    release = asyncio.Event()

    async def polite(arguments: dict[str, Any]) -> str:
        await asyncio.sleep(30)
        return "never"

    async def deaf(arguments: dict[str, Any]) -> str:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue  # swallows its cancellation
        return "late"

    empty: dict[str, Any] = {"type": "object", "properties": {}}
    tools = [
        SchemaTool("polite", "", empty, polite, timeout=0.3),
        SchemaTool("deaf", "", empty, deaf, timeout=0.3, cancel_grace=0.1),
    ]
    model = ScriptedModel([plan("1. polite()", "2. deaf()", "3. join()"), FINISH])
    result = await Compiler(model=model, tools=tools).arun("q")
    release.set()
    t1, t2 = result.tasks
    assert isinstance(t1.error, ToolTimeoutError)
    assert isinstance(t2.error, ToolTimeoutError)
    assert "coroutine ignored cancellation" in t2.error.message
    assert "coroutine ignored cancellation" not in t1.error.message


# -- the compiler's toolset lifetime ------------------------------------------------------------


def planner_or_joiner(messages: Sequence[Message]) -> str:
    """Replies for concurrent runs: the joiner's prompt holds the rounds, the planner's not."""
    return FINISH if "Round 1:" in messages[-1].content else plan('1. search("a", 0)')


async def test_the_first_runs_open_toolsets_once_and_async_with_closes_them() -> None:
    toolset = MemoryToolset(schema_search())
    compiler = Compiler(model=ScriptedModel(planner_or_joiner), tools=[toolset])
    async with compiler:
        assert toolset.opened == 1
        results = await asyncio.gather(*(compiler.arun("q") for _ in range(3)))
        assert [r.tasks[0].output for r in results] == ["result for a"] * 3
        assert toolset.opened == 1
    assert toolset.closed == 1
    assert compiler.tools == {}


async def test_arun_opens_toolsets_lazily_once_for_concurrent_runs() -> None:
    toolset = MemoryToolset(schema_search())
    compiler = Compiler(model=ScriptedModel(planner_or_joiner), tools=[toolset])
    results = await asyncio.gather(compiler.arun("q"), compiler.arun("q"))
    assert [r.answer for r in results] == ["the answer", "the answer"]
    assert toolset.opened == 1
    await compiler.aclose()
    assert toolset.closed == 1


def test_the_sync_run_opens_and_closes_its_toolsets_within_its_loop() -> None:
    toolset = MemoryToolset(schema_search())
    replies = [plan('1. search("a", 0)'), FINISH] * 2
    compiler = Compiler(model=ScriptedModel(replies), tools=[toolset])
    for expected in (1, 2):
        assert compiler.run("q").tasks[0].output == "result for a"
        assert (toolset.opened, toolset.closed) == (expected, expected)


def test_the_plan_grammar_covers_a_toolsets_tools_once_open() -> None:
    from dagcall._planner import Planner

    @tool
    def local(x: int) -> int:
        """Local."""
        return x

    tools: dict[str, BaseTool] = {"local": local}
    planner = Planner(ScriptedModel([]), tools, examples=None, constrained=True, idle_timeout=None)
    before = planner.grammar
    assert before is not None
    assert "search" not in before
    tools["search"] = schema_search()  # what a toolset's opening does to the shared dict
    after = planner.grammar
    assert after is not None
    assert "search" in after
    assert "local" in after
