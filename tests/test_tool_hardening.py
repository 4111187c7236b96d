"""Every tool failure is recorded, and every tool that cannot work is refused when defined.

Whatever a tool raises (any ``BaseException``, exceptions whose ``__str__`` raises, enormous
messages, a ``CancelledError`` of its own) ends as that task's bounded ``ToolExecutionError``
while the run goes on; only the run's own cancellation makes a task cancelled.  Definitions
that would fail on every call are refused with ``ToolDefinitionError`` at ``@tool`` time, and
the awkward ones that can work (positional-only parameters, names pydantic reserves, partials,
bound methods, callable objects) work end to end.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import keyword
import threading
import time
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel

from dagcall import (
    ApprovalError,
    Compiler,
    RunResult,
    ScriptedModel,
    TaskStatus,
    ToolArgumentError,
    ToolDefinitionError,
    ToolExecutionError,
    tool,
)
from dagcall._tools import MAX_ERROR_CHARS

FINISH = "Thought: done.\nAction: Finish(the answer)"


@tool
async def ok(x: str) -> str:
    """Works."""
    return f"ok {x}"


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("dagcall-")}


def run_plan(plan: str, *tools: Any, **options: Any) -> RunResult:
    """Run a one-round plan to its answer; nothing may be left running afterwards."""
    before = _threads()
    model = ScriptedModel([plan, FINISH])
    result = Compiler(model=model, tools=list(tools), max_replans=0, **options).run("q")
    deadline = time.monotonic() + 10
    while _threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _threads() - before, "a worker thread was left running"
    assert result.answer == "the answer"  # the run survived whatever the tools did
    for task in result.tasks:
        assert task.status.terminal
    return result


# -- every failure is recorded --------------------------------------------------------------


class CustomBase(BaseException):
    """A BaseException that is not an Exception, like KeyboardInterrupt."""


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


class BadStrAndRepr(Exception):
    def __str__(self) -> str:
        raise ValueError("no str")

    def __repr__(self) -> str:
        raise ValueError("no repr")


class StrNotStr(Exception):
    def __str__(self) -> Any:
        return 42  # str() of it raises TypeError


class RecursiveStr(Exception):
    def __str__(self) -> str:
        return str(self)


class NoInit(ToolExecutionError):
    """A ToolError subclass that skipped ToolError.__init__ (no message, tool or task_id)."""

    def __init__(self) -> None:
        Exception.__init__(self, "skipped init")


HUGE = "x" * 5_000_000

RAISED: dict[str, tuple[BaseException, str]] = {
    # name: (what the tool raises, the type its message must name)
    "KeyError": (KeyError("k"), "KeyError"),
    "GeneratorExit": (GeneratorExit(), "GeneratorExit"),
    "KeyboardInterrupt": (KeyboardInterrupt(), "KeyboardInterrupt"),
    "SystemExit": (SystemExit(3), "SystemExit"),
    "custom BaseException": (CustomBase("mine"), "CustomBase"),
    "StopIteration": (StopIteration("stop"), "StopIteration"),
    "StopAsyncIteration": (StopAsyncIteration("stop"), "StopAsyncIteration"),
    "own CancelledError": (asyncio.CancelledError("mine"), "CancelledError"),
    "own TimeoutError": (TimeoutError("mine"), "TimeoutError"),
    "__str__ raises": (BadStr(), "BadStr"),
    "__str__ and __repr__ raise": (BadStrAndRepr(), "BadStrAndRepr"),
    "__str__ returns a non-str": (StrNotStr(), "StrNotStr"),
    "__str__ recurses": (RecursiveStr(), "RecursiveStr"),
    "huge message": (ValueError(HUGE), "ValueError"),
    "huge ToolError": (ToolExecutionError(HUGE), ""),  # a ToolError is kept as it is
    "ToolError without init": (NoInit(), "skipped init"),
}


def _raising_tools(exc: BaseException) -> list[Any]:
    @tool
    def sync_raiser() -> str:
        """Raises in its thread."""
        raise exc

    @tool
    async def async_raiser() -> str:
        """Raises on the loop."""
        await asyncio.sleep(0)
        raise exc

    return [sync_raiser, async_raiser]


@pytest.mark.parametrize("case", list(RAISED))
def test_whatever_a_tool_raises_is_recorded_as_its_failure(case: str) -> None:
    exc, type_name = RAISED[case]
    tools = _raising_tools(exc)
    result = run_plan(
        '1. sync_raiser()\n2. async_raiser()\n3. ok("still runs")\n4. ok("$1")\n5. join()',
        *tools,
        ok,
    )
    for task_id in (1, 2):
        task = result.task(task_id)
        assert task.status is TaskStatus.FAILED, (case, task_id, task.status)
        error = task.error
        assert isinstance(error, ToolExecutionError), (case, error)
        assert type_name in error.message
        assert error.task_id in (1, 2)
        assert len(error.message) < 3 * MAX_ERROR_CHARS  # bounded, whatever the exception
        assert isinstance(error.message, str)
        str(error)  # and safe to print
    assert result.task(3).output == "ok still runs"
    assert result.task(4).status is TaskStatus.SKIPPED
    assert len(result.to_json()) < 1_000_000  # the huge messages did not reach the record


def test_huge_messages_are_cut_and_say_so() -> None:
    (sync_raiser, _) = _raising_tools(ValueError("y" * 100_000))
    message = run_plan("1. sync_raiser()", sync_raiser).task(1).error.message  # type: ignore[union-attr]
    assert "more characters]" in message
    assert "yyyy" in message


def test_the_original_exception_is_kept_as_the_cause() -> None:
    error = KeyError("k")
    (sync_raiser, async_raiser) = _raising_tools(error)
    result = run_plan("1. sync_raiser()\n2. async_raiser()", sync_raiser, async_raiser)
    assert result.task(1).error.__cause__ is error  # type: ignore[union-attr]
    assert result.task(2).error.__cause__ is error  # type: ignore[union-attr]


def test_stop_iteration_from_a_coroutine_is_reported_as_itself() -> None:
    # Python turns StopIteration leaving a coroutine into RuntimeError (PEP 479).
    @tool
    async def stops() -> str:
        """Raises StopIteration from a coroutine."""
        raise StopIteration("exhausted")

    message = run_plan("1. stops()", stops).task(1).error.message  # type: ignore[union-attr]
    assert "raised StopIteration: exhausted" in message


def _broken_validator(value: str) -> str:
    raise KeyError("validator broke")


def test_a_validator_that_raises_oddly_is_an_argument_error() -> None:
    @tool
    def strict(text: Annotated[str, AfterValidator(_broken_validator)]) -> str:
        """Validated strangely."""
        return text

    task = run_plan('1. strict("a")', strict).task(1)
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.error, ToolArgumentError)
    assert "KeyError" in task.error.message


def test_a_sync_tool_returning_a_coroutine_is_awaited() -> None:
    async def later(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @tool
    def wrapper(x: int) -> int:
        """A sync wrapper around a coroutine function."""
        return later(x)  # type: ignore[return-value]

    assert run_plan("1. wrapper(1)", wrapper).task(1).output == 2


# -- approvers ------------------------------------------------------------------------------


@tool(side_effects=True)
def send(to: str) -> str:
    """Sends."""
    return f"sent to {to}"


@pytest.mark.parametrize(
    ("approver", "status", "text"),
    [
        (lambda task: True, TaskStatus.DONE, None),
        (lambda task: False, TaskStatus.FAILED, "was not approved"),
        (lambda task: "no", TaskStatus.FAILED, "only True approves"),
        (lambda task: 1, TaskStatus.FAILED, "only True approves"),
        (lambda task: {"a": 1}["missing"], TaskStatus.FAILED, "the approver raised KeyError"),
        (lambda task: (_ for _ in ()).throw(SystemExit(1)), TaskStatus.FAILED, "SystemExit"),
    ],
)
def test_only_true_approves_and_a_failing_approver_refuses(
    approver: Any, status: TaskStatus, text: str | None
) -> None:
    task = run_plan('1. send("bob")', send, approve=approver).task(1)
    assert task.status is status
    if text is not None:
        assert isinstance(task.error, ApprovalError)
        assert text in task.error.message
        assert task.output is None


def test_approval_messages_survive_arguments_whose_repr_raises() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    @tool
    def make() -> Any:
        """Makes a hostile object."""
        return Hostile()

    @tool(side_effects=True)
    def use(thing: Any) -> str:
        """Uses it."""
        return "used"

    task = run_plan("1. make()\n2. use($1)", make, use, approve=lambda t: False).task(2)
    assert isinstance(task.error, ApprovalError)
    assert "repr() raised RuntimeError" in task.error.message


# -- definitions: refused clearly, or working end to end ------------------------------------


def _f(x: int) -> int:
    return x


@pytest.mark.parametrize(
    "name",
    [
        *sorted(keyword.kwlist),  # class, if, None, True, async, await, lambda ...
        "two words",
        "1abc",
        "a-b",
        "",
        "café",  # an identifier, but plans, grammars and function-calling APIs need ASCII
        "x" * 65,
        "join",
    ],
)
def test_tool_names_that_could_never_be_called_are_refused(name: str) -> None:
    with pytest.raises(ToolDefinitionError):
        tool(name=name)(_f)


@pytest.mark.parametrize("name", ["match", "case", "type", "_", "print", "x" * 64])
def test_soft_keywords_and_builtin_names_work(name: str) -> None:
    named = tool(name=name)(_f)
    assert run_plan(f"1. {name}(3)", named).task(1).output == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"name": 123}, "must be a str"),
        ({"name": b"bytes"}, "must be a str"),
        ({"description": 5}, "description must be a str"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"cancel_grace": float("inf")}, "cancel_grace"),
        ({"max_concurrency": 1.5}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"side_effects": "yes"}, "side_effects"),
        ({"isolation": "fork"}, "isolation"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ToolDefinitionError, match=match):
        tool(**options)(_f)


def test_an_infinite_timeout_means_no_limit() -> None:
    unlimited = tool(name="unlimited", timeout=float("inf"))(_f)
    assert run_plan("1. unlimited(1)", unlimited, tool_timeout=0.5).task(1).output == 1


def test_callables_without_a_usable_name_ask_for_one() -> None:
    class Adder:
        def __call__(self, x: int) -> int:
            return x + 1

    with pytest.raises(ToolDefinitionError, match=r"name="):
        tool(lambda x: x)
    with pytest.raises(ToolDefinitionError, match=r"name="):
        tool(Adder())


def test_lambdas_callable_objects_partials_and_bound_methods_work_when_named() -> None:
    class Adder:
        """Adds a constant."""

        name = "not the tool's name"  # attributes of the callable do not leak into the Tool
        timeout = 0.001

        def __init__(self, n: int) -> None:
            self.n = n

        def __call__(self, x: int) -> int:
            return x + self.n

        def times(self, x: int) -> int:
            """Multiply by n."""
            return x * self.n

    class AsyncAdder:
        async def __call__(self, x: int) -> int:
            await asyncio.sleep(0)
            return x + 100

    def power(base: int, exponent: int) -> int:
        """Raise base to exponent."""
        return int(base**exponent)

    adder = tool(name="adder")(Adder(2))
    assert (adder.name, adder.timeout, adder.description) == ("adder", None, "Adds a constant.")
    tools = [
        tool(name="ident", description="Identity.")(lambda x: x),
        adder,
        tool(name="async_adder")(AsyncAdder()),
        tool(functools.partial(power, exponent=2)),
        tool(Adder(5).times),
    ]
    assert tools[3].name == "power"
    assert tools[3].description == "Raise base to exponent."
    assert tools[4].name == "times"
    assert tools[2].is_async
    result = run_plan(
        "1. ident(7)\n2. adder(1)\n3. async_adder(1)\n4. power(3)\n5. times(2)", *tools
    )
    assert [t.output for t in result.tasks] == [7, 3, 101, 9, 10]


def test_generator_functions_are_refused() -> None:
    def gen(x: int) -> Any:
        yield x

    async def agen(x: int) -> Any:
        yield x

    for fn in (gen, agen, functools.partial(gen, 1)):
        with pytest.raises(ToolDefinitionError, match="generator"):
            tool(name="g")(fn)


def test_wrapping_a_tool_again_is_refused() -> None:
    with pytest.raises(ToolDefinitionError, match="already a tool"):
        tool(ok)


def test_a_default_its_annotation_rejects_is_refused() -> None:
    def bad(x: int = "many") -> int:  # type: ignore[assignment]
        return x

    with pytest.raises(ToolDefinitionError, match="default value does not match"):
        tool(bad)


def test_a_none_default_widens_its_annotation_and_works() -> None:
    def maybe(x: int = None) -> str:  # type: ignore[assignment]  # noqa: RUF013
        """Implicit Optional."""
        return repr(x)

    t = tool(maybe)
    assert "x: int | None = None" in t.render()
    result = run_plan("1. maybe()\n2. maybe(None)\n3. maybe(4)", t)
    assert [task.output for task in result.tasks] == ["None", "None", "4"]


def test_a_default_whose_repr_raises_still_renders() -> None:
    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    sentinel: Any = Opaque()

    def f(x: Any = sentinel) -> str:
        """Has an odd default."""
        return "called"

    t = tool(f)
    assert "repr() raised RuntimeError" in t.render()
    assert run_plan("1. f()", t).task(1).output == "called"


def test_pydantic_field_defaults_reach_the_function() -> None:
    from pydantic import Field

    def f(n: int = Field(3, description="how many")) -> int:
        """Uses a pydantic Field as its default."""
        return n

    t = tool(f)
    assert t.json_schema["properties"]["n"]["description"] == "how many"
    result = run_plan("1. f()\n2. f(5)", t)
    assert [task.output for task in result.tasks] == [3, 5]


def test_positional_only_parameters_work_by_position_and_by_name() -> None:
    seen: list[tuple[Any, ...]] = []

    def f(a: int, b: int = 10, /, c: int = 100, *, d: int = 1000) -> int:
        """Positional-only a and b."""
        seen.append((a, b, c, d))
        return a + b + c + d

    t = tool(f)
    assert t.json_schema["required"] == ["a"]
    result = run_plan("1. f(1)\n2. f(1, 2, 3, d=4)\n3. f(a=1, c=3)\n4. f(b=2, a=1)", t)
    assert [task.status for task in result.tasks] == [TaskStatus.DONE] * 4
    assert seen == [(1, 10, 100, 1000), (1, 2, 3, 4), (1, 10, 3, 1000), (1, 2, 100, 1000)]


RESERVED = [
    "model_config",
    "model_fields",
    "model_validate",
    "model_dump",
    "model_x",
    "schema",
    "json",
    "copy",
    "dict",
    "construct",
    "validate",
    "fields",
    "_private",
    "__dunder__",
    "self",
    "cls",
    "args",
    "kwargs",
    "p0",
    "p1",
    "match",
    "type",
    "_",
]


def test_parameter_names_pydantic_reserves_work_end_to_end() -> None:
    def reserved(
        model_config: int,
        schema: str,
        _private: int = 1,
        json: str = "j",
        model_fields: int = 2,
        copy: int = 3,
        self: int = 4,
    ) -> dict[str, Any]:
        """Every parameter name collides with something pydantic owns."""
        return {
            "model_config": model_config,
            "schema": schema,
            "_private": _private,
            "json": json,
            "model_fields": model_fields,
            "copy": copy,
            "self": self,
        }

    t = tool(reserved)
    assert set(t.json_schema["properties"]) == set(inspect.signature(reserved).parameters)
    result = run_plan('1. reserved(1, "s", _private=9, copy=8)\n2. reserved(1, schema=2)', t)
    assert result.task(1).output == {
        "model_config": 1,
        "schema": "s",
        "_private": 9,
        "json": "j",
        "model_fields": 2,
        "copy": 8,
        "self": 4,
    }
    assert result.task(2).output["schema"] == "2"  # validated (numbers coerced to str)


def _function_with(names: list[str], kinds: list[inspect._ParameterKind]) -> Any:
    """A function whose signature has these parameter names and kinds (all ``int``)."""

    def impl(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    params = [
        inspect.Parameter(n, kind, annotation=int) for n, kind in zip(names, kinds, strict=True)
    ]
    impl.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    impl.__annotations__ = {n: int for n in names}
    return impl


_identifier = st.one_of(
    st.sampled_from(RESERVED + [n for n in dir(BaseModel) if n.isidentifier()]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
    st.sampled_from(["café", "δ", "名前", "naïve_x"]),
).filter(lambda n: not keyword.iskeyword(n))

_kind = st.sampled_from(
    [
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(_identifier, min_size=1, max_size=5, unique=True),
    kinds=st.lists(_kind, min_size=5, max_size=5),
    by_name=st.booleans(),
)
def test_any_parameter_names_are_refused_at_definition_or_work_end_to_end(
    names: list[str], kinds: list[inspect._ParameterKind], by_name: bool
) -> None:
    kinds = sorted(kinds[: len(names)])  # a valid order: positional-only first
    fn = _function_with(names, kinds)
    try:
        t = tool(name="probe")(fn)
    except ToolDefinitionError:
        return  # refused clearly, at definition: acceptable
    # Otherwise it must work: each argument reaches the function under its own name.
    values = {n: i + 1 for i, n in enumerate(names)}
    keyword_only = [n for n, k in zip(names, kinds, strict=True) if k is k.KEYWORD_ONLY]
    if by_name:
        call = ", ".join(f"{n}={v}" for n, v in values.items())
    else:
        positional = [str(v) for n, v in values.items() if n not in keyword_only]
        call = ", ".join(positional + [f"{n}={values[n]}" for n in keyword_only])
    result = run_plan(f"1. probe({call})", t)
    task = result.task(1)
    assert task.status is TaskStatus.DONE, task.error
    assert task.resolved_args == values
    received = dict(task.output["kwargs"])
    positional_only = [n for n, k in zip(names, kinds, strict=True) if k is k.POSITIONAL_ONLY]
    assert task.output["args"][: len(positional_only)] == [values[n] for n in positional_only]
    received.update(zip(names, task.output["args"], strict=False))
    assert received == values
    assert set(t.json_schema["properties"]) == set(names)
