"""Any tool output is safe to show, store and export.

Whatever a tool returns (huge ints, deep or cyclic structures, NaN, non-string keys, lone
surrogates, objects whose every method raises ...), the run finishes, observations are
bounded, and ``to_dict`` / ``to_json`` / ``dagcall ask --json`` produce strict JSON that
encodes as UTF-8 and that the run store saves and loads.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import decimal
import enum
import io
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from dagcall import (
    Compiler,
    LLMCall,
    Round,
    RunEvent,
    RunResult,
    ScriptedModel,
    StopReason,
    TaskRecord,
    TaskStatus,
    ToolExecutionError,
    tool,
)
from dagcall._result import (
    EXPORT_MAX_ITEMS,
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_OBSERVATION_CHARS,
    UNBOUNDED_OBSERVATION_CHARS,
    json_safe,
    observation_text,
)
from dagcall._store import RunStore
from dagcall.cli._live import LiveView, PlainReporter, as_json_ready, render_result

# The longest suffix observation_text adds after cutting ("... [N more characters]").
MARKER = 40

# -- hostile values --------------------------------------------------------------------------


class Boom(Exception):
    """What the hostile objects raise."""


def _boom(*_: object, **__: object) -> Any:
    raise Boom("no")


class Unprintable:
    """An object whose repr and str raise."""

    __repr__ = _boom
    __str__ = _boom


class Nasty:
    """An object whose every protocol method raises, down to its __class__."""

    __repr__ = __str__ = __format__ = _boom
    __eq__ = __ne__ = __lt__ = __hash__ = __bool__ = __len__ = __iter__ = _boom
    __getattr__ = _boom

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise Boom("no class")


class NastyList(list[Any]):
    __len__ = __iter__ = __getitem__ = __repr__ = __str__ = __eq__ = __hash__ = _boom  # type: ignore[assignment]


class NastyDict(dict[Any, Any]):
    __len__ = __iter__ = __getitem__ = _boom
    items = keys = values = __repr__ = __str__ = _boom


class NastyStr(str):
    __len__ = __iter__ = __getitem__ = __str__ = __repr__ = __hash__ = __eq__ = _boom


class NastyFloat(float):
    __repr__ = __str__ = __float__ = __eq__ = __hash__ = _boom


class NastyInt(int):
    __repr__ = __str__ = __int__ = __index__ = __eq__ = __hash__ = _boom


class BadMapping(Mapping[Any, Any]):
    """A mapping whose items raise half-way."""

    def __getitem__(self, key: Any) -> Any:
        raise Boom(key)

    def __len__(self) -> int:
        return 10

    def __iter__(self) -> Iterator[Any]:
        yield "first"
        raise Boom("iteration")


class Endless(Sequence[int]):
    """A sequence that claims to be enormous and counts how many items were read."""

    def __init__(self) -> None:
        self.read = 0

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            raise Boom("slices")
        self.read += 1
        return index

    def __iter__(self) -> Iterator[int]:
        n = 0
        while True:
            self.read += 1
            yield n
            n += 1


class Counted:
    """Counts how often it is rendered, to show work is bounded."""

    renders = 0

    def __str__(self) -> str:
        Counted.renders += 1
        return "counted"


class Meta(type):
    """A metaclass through which no attribute of the class can be read."""

    def __getattribute__(cls, name: str) -> Any:
        raise Boom(name)


class Nameless(metaclass=Meta):
    __repr__ = __str__ = _boom


class BadEq:
    """Hashable, but comparing or printing it raises."""

    __eq__ = __repr__ = __str__ = _boom
    __hash__ = object.__hash__


class WeirdStr(str):
    """What a __str__ may return: a str subclass with hostile methods."""

    __len__ = __getitem__ = __iter__ = _boom


class ReturnsWeird:
    def __str__(self) -> str:
        return WeirdStr("weird \ud800 text")


class BadMessageError(Exception):
    def __str__(self) -> str:
        raise Boom("no message")


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: float
    y: Any
    label: str = "p"


class Model(pydantic.BaseModel):
    name: str
    values: list[float]
    nested: dict[str, Any] = {}


def deep_list(depth: int) -> list[Any]:
    top: list[Any] = []
    cur = top
    for _ in range(depth):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return top


def deep_dict(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    cur = top
    for _ in range(depth):
        nxt: dict[str, Any] = {}
        cur["k"] = nxt
        cur = nxt
    return top


def shared_dag(levels: int) -> list[Any]:
    """2**levels paths through `levels` lists: exponential if walked naively."""
    node: list[Any] = ["leaf"]
    for _ in range(levels):
        node = [node, node]
    return node


def _huge_int(digits: int) -> int:
    saved = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return int("7" * digits)
    finally:
        sys.set_int_max_str_digits(saved)


def _cycles() -> dict[str, Any]:
    a: list[Any] = [1]
    a.append(a)
    d: dict[str, Any] = {"x": 1}
    d["self"] = d
    m1: list[Any] = []
    m2: dict[str, Any] = {"back": m1}
    m1.append(m2)
    return {"list": a, "dict": d, "mutual": m1}


HUGE_INT = _huge_int(20_000)

HOSTILE: dict[str, Any] = {
    "huge_int": HUGE_INT,
    "negative_huge_int": -HUGE_INT,
    "enormous_int": 1 << 3_000_000,
    "int_at_limit": _huge_int(MAX_INT_DIGITS),
    "int_past_limit": _huge_int(MAX_INT_DIGITS + 1),
    "deep_list": deep_list(10_000),
    "deep_dict": deep_dict(10_000),
    "unprintable": Unprintable(),
    "nasty": Nasty(),
    "nasty_list": NastyList([1, Unprintable(), "a"]),
    "nasty_dict": NastyDict({"a": 1, Unprintable(): Nasty()}),
    "nasty_str": NastyStr("nasty \ud800 str"),
    "nasty_float": NastyFloat("nan"),
    "nasty_int": NastyInt(5),
    "nameless": Nameless(),
    "returns_weird": ReturnsWeird(),
    "bad_mapping": BadMapping(),
    "endless": Endless(),
    "nan": math.nan,
    "inf": math.inf,
    "floats": [math.nan, math.inf, -math.inf, 1.5, -0.0, 1e308],
    "tuple_keys": {(1, 2): "a", (1, "x"): "b", None: "c", True: "d", 2.5: "e", math.nan: "f"},
    "colliding_keys": {1: "int", "1": "str", 1.0 + 1e-16: "float?", (1,): "tuple"},
    "hostile_keys": {Unprintable(): 1, BadEq(): 2, frozenset({1, 2}): 3, b"k": 4, Nasty: 5},
    "cycles": _cycles(),
    "shared_dag": shared_dag(60),
    "bytes": bytes(range(256)) * 10,
    "bytearray": bytearray(b"\x00\xff" * 10),
    "memoryview": memoryview(b"abc"),
    "sets": [{1, 2, 3}, frozenset({"a", "\udcff"}), set()],
    "dataclass": Point(math.nan, Unprintable()),
    "pydantic": Model(name="m\ud800", values=[math.inf, 1.0], nested={"n": math.nan}),
    "surrogates": "lone \ud800 high, \udfff low, pair \ud83d\ude00, end \udbff",
    "surrogate_keys": {"\ud800": "\udfff", "ok": ["\ud834"]},
    "huge_string": "x" * 20_000_000,
    "huge_list": ["y" * 1000] * 100_000,
    "huge_dict": {i: i for i in range(150_000)},
    "counted": [Counted() for _ in range(200_000)],
    "exception": BadMessageError(),
    "enum": Colour.RED,
    "decimal_nan": decimal.Decimal("NaN"),
    "complex_nan": complex(math.nan, math.inf),
    "generator": (i for i in range(10)),
    "deque": collections.deque(range(10)),
    "ordered": collections.OrderedDict(a=math.nan),
    "control": "bell \x07 escape \x1b[2J nul \x00 rlo \u202e done",
    "path": Path("/srv/data.txt"),
    "type": Nasty,
}

# -- checking what comes out -----------------------------------------------------------------


def _strict_constant(name: str) -> Any:
    raise AssertionError(f"non-strict JSON constant {name}")


def strict_loads(text: str) -> Any:
    """json.loads refusing NaN / Infinity tokens."""
    return json.loads(text, parse_constant=_strict_constant)


def depth_of(data: Any) -> int:
    stack = [(data, 0)]
    deepest = 0
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
    return deepest


def assert_strict(data: Any) -> str:
    """data is strict JSON data: string keys only, no NaN, encodes as UTF-8, bounded depth."""
    text = json.dumps(data, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert strict_loads(text) == data  # a round trip changes nothing
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            assert all(type(k) is str for k in value)
            stack.extend(value.values())
        else:
            assert value is None or type(value) in (bool, int, float, str), type(value)
            if type(value) is float:
                assert math.isfinite(value)
    return text


def assert_bounded_observation(text: str, limit: int) -> None:
    assert type(text) is str
    assert len(text) <= limit + MARKER
    text.encode("utf-8")


# -- json_safe and observation_text, value by value ---------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_hostile_value_exports_as_strict_json(name: str) -> None:
    data = json_safe(HOSTILE[name])
    assert_strict(data)
    assert depth_of(data) <= MAX_DEPTH


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_hostile_value_has_a_bounded_observation(name: str) -> None:
    value = HOSTILE[name]
    assert_bounded_observation(observation_text(value), MAX_OBSERVATION_CHARS)
    assert_bounded_observation(observation_text(value, 100), 100)
    assert_bounded_observation(observation_text(value, 0), 0)
    unbounded = observation_text(value, None)
    unbounded.encode("utf-8")
    if not issubclass(type(value), str):
        assert len(unbounded) <= UNBOUNDED_OBSERVATION_CHARS + MARKER


def test_placeholders_name_what_could_not_be_shown() -> None:
    assert json_safe(Unprintable()) == "<unrepresentable Unprintable>"
    assert json_safe(Nasty()) == "<unrepresentable Nasty>"
    assert json_safe(Nameless()) == "<unrepresentable Nameless>"
    assert observation_text(Unprintable()) == "<unrepresentable Unprintable>"
    assert json_safe(HUGE_INT) == "<int of about 20000 digits>"
    assert json_safe(-HUGE_INT) == "<negative int of about 20000 digits>"
    assert json_safe(HOSTILE["int_at_limit"]) == HOSTILE["int_at_limit"]  # still readable
    assert isinstance(json_safe(HOSTILE["int_past_limit"]), str)
    cycles = json_safe(HOSTILE["cycles"])
    assert cycles == {
        "list": [1, "<cycle: list>"],
        "dict": {"x": 1, "self": "<cycle: dict>"},
        "mutual": [{"back": "<cycle: list>"}],
    }
    assert json_safe(deep_list(3), max_depth=2) == [["<list nested deeper than 2 levels>"]]


def test_non_finite_floats_and_odd_keys_have_one_spelling() -> None:
    assert json_safe(HOSTILE["floats"]) == ["NaN", "Infinity", "-Infinity", 1.5, -0.0, 1e308]
    assert observation_text(math.nan) == "NaN"
    assert observation_text([math.inf]) == '["Infinity"]'
    assert json_safe({(1, 2): "a", None: "b", True: "c", 2.5: "d", 3: "e"}) == {
        "[1, 2]": "a",
        "null": "b",
        "true": "c",
        "2.5": "d",
        "3": "e",
    }
    # Keys that render alike are all kept.
    assert json_safe({1: "int", "1": "str", (1,): "tuple", "[1]": "text"}) == {
        "1": "int",
        "1 (2)": "str",
        "[1]": "tuple",
        "[1] (2)": "text",
    }


def test_lone_surrogates_become_replacement_characters_and_pairs_are_joined() -> None:
    assert json_safe("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert json_safe("\ud83d\ude00") == "\U0001f600"
    assert json_safe({"\ud800": ["\udbff"]}) == {"\ufffd": ["\ufffd"]}
    assert observation_text("x\ud800") == "x\ufffd"
    assert observation_text("x\ud800", None) == "x\ufffd"
    assert json_safe(NastyStr("s\ud800")) == "s\ufffd"


def test_containers_keep_their_contents() -> None:
    assert json_safe(Point(1.0, [2, 3])) == {"x": 1.0, "y": [2, 3], "label": "p"}
    assert json_safe(Model(name="m", values=[1.0], nested={"a": (1, 2)})) == {
        "name": "m",
        "values": [1.0],
        "nested": {"a": [1, 2]},
    }
    assert sorted(json_safe({3, 1, 2})) == [1, 2, 3]  # type: ignore[arg-type, type-var]
    assert json_safe((1, "a", None)) == [1, "a", None]
    assert json_safe(b"ab\x00") == "b'ab\\x00'"
    assert json_safe(collections.deque([1, 2])) == [1, 2]
    assert json_safe(NastyList([1, 2])) == [1, 2]  # the stored items, not the hostile methods
    assert json_safe(NastyDict({"a": 1})) == {"a": 1}
    assert json_safe(BadMapping()) == {"…": "<iteration failed>"}
    assert json_safe(ReturnsWeird()) == "weird \ufffd text"
    assert json_safe(Path("/srv/data.txt")) == "/srv/data.txt"  # str() first: readable


def test_plain_json_passes_through_unchanged() -> None:
    value = {"a": [1, 2.5, None, True, "x"], "b": {"c": "ü€😀"}, "d": []}
    assert json_safe(value) == value
    assert observation_text(value) == json.dumps(value, ensure_ascii=False)
    assert observation_text("plain") == "plain"
    assert observation_text(None) == "None"
    assert observation_text(True) == "True"
    assert observation_text(3) == "3"
    assert observation_text(0.1) == "0.1"


def test_long_values_are_cut_with_a_marker() -> None:
    text = observation_text("x" * 10_000)
    assert text == "x" * 4000 + "... [6000 more characters]"
    listed = observation_text(["y" * 100] * 1000)
    assert len(listed) <= MAX_OBSERVATION_CHARS + MARKER
    assert listed.endswith("... [truncated]")
    items = json_safe(list(range(10)), max_items=3)
    assert items == [0, 1, 2, "… [7 more items]"]
    entries = json_safe({i: i for i in range(5)}, max_items=2)
    assert entries == {"0": 0, "1": 1, "…": "[3 more entries]"}
    cut = json_safe("z" * 50, max_chars=10)
    assert cut == "z" * 10 + "… [40 more characters]"


def test_observations_do_bounded_work_on_enormous_values() -> None:
    endless = Endless()
    assert_bounded_observation(observation_text(endless), MAX_OBSERVATION_CHARS)
    assert endless.read <= MAX_OBSERVATION_CHARS + 1
    endless = Endless()
    assert_strict(json_safe(endless))
    assert endless.read <= EXPORT_MAX_ITEMS + 1

    Counted.renders = 0
    observation_text([Counted() for _ in range(100_000)])
    assert Counted.renders <= MAX_OBSERVATION_CHARS
    Counted.renders = 0
    observation_text({i: [Counted()] for i in range(100_000)}, 500)
    assert Counted.renders <= 500
    Counted.renders = 0
    json_safe([[Counted()] * 1000] * 1000)  # a million renders if walked in full
    assert Counted.renders <= EXPORT_MAX_ITEMS


def test_the_int_string_limit_of_the_interpreter_is_respected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lowered = 1000
    saved = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(lowered)
    try:
        number = _huge_int(1500)
        assert isinstance(json_safe(number), str)
        assert json_safe(int("9" * lowered)) == int("9" * lowered)
        assert_strict(json_safe([number, -number]))
    finally:
        sys.set_int_max_str_digits(saved)


class BareRaiser:
    def __str__(self) -> str:
        raise BaseException("not even an Exception")

    __repr__ = __str__


class Interrupting:
    def __str__(self) -> str:
        raise KeyboardInterrupt

    __repr__ = __str__


def test_anything_raised_is_absorbed_except_interrupts_and_exits() -> None:
    assert json_safe(BareRaiser()) == "<unrepresentable BareRaiser>"
    assert observation_text([BareRaiser()]) == '["<unrepresentable BareRaiser>"]'
    with pytest.raises(KeyboardInterrupt):  # a person pressing Ctrl-C still stops the program
        json_safe(Interrupting())
    with pytest.raises(KeyboardInterrupt):
        observation_text(Interrupting())


# -- never raising, for any value --------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00"])
TEXT = st.one_of(
    st.text(max_size=20),
    st.lists(st.one_of(SURROGATES, st.characters()), max_size=10).map("".join),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def pick(values: list[Any]) -> st.SearchStrategy[Any]:
    """One of values, chosen by index (hypothesis would print the values, and their repr
    raises)."""
    return st.integers(0, len(values) - 1).map(lambda i: values[i])


HUGE = pick([HUGE_INT, -HUGE_INT, HOSTILE["int_past_limit"], 2**64, -(2**200)])
HASHABLE_HOSTILE = pick(
    [Unprintable(), BadEq(), Nameless(), ReturnsWeird(), Colour.RED, BadMessageError(), Nasty]
)
HOSTILE_OBJECTS = pick(
    [
        Unprintable(),
        Nasty(),
        NastyList([1]),
        NastyDict({1: 2}),
        NastyStr("n\ud800"),
        NastyFloat("inf"),
        NastyInt(3),
        Nameless(),
        ReturnsWeird(),
        BadMapping(),
        Point(1, 2),
        Colour.RED,
        BadMessageError(),
        BareRaiser(),
        Nasty,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE,
    FLOATS,
    TEXT,
    st.binary(max_size=20),
    HOSTILE_OBJECTS,
)
KEYS = st.one_of(
    TEXT,
    st.integers(),
    FLOATS,
    st.none(),
    st.booleans(),
    st.tuples(st.integers(), TEXT),
    st.frozensets(st.integers(), max_size=3),
    HASHABLE_HOSTILE,
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(KEYS, children, max_size=5),
        st.frozensets(st.one_of(st.integers(), TEXT), max_size=5),
        st.builds(Point, children, children),
        st.lists(children, max_size=3).map(lambda items: NastyList(items)),
    ),
    max_leaves=30,
)


def _with_cycle(value: Any) -> Any:
    box: list[Any] = [value]
    box.append(box)
    return {"value": value, "box": box}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.booleans())
def test_json_safe_and_observation_text_never_raise(value: Any, cyclic: bool) -> None:
    if cyclic:
        value = _with_cycle(value)
    assert_strict(json_safe(value))
    assert_strict(json_safe(value, max_depth=2, max_items=3, max_chars=10))
    for limit in (MAX_OBSERVATION_CHARS, 50, None):
        text = observation_text(value, limit)
        text.encode("utf-8")
        if limit is not None:
            assert len(text) <= limit + MARKER


# -- records and results ---------------------------------------------------------------------


class MessageProperty(ToolExecutionError):
    @property
    def message(self) -> str:
        raise Boom("no message")

    @message.setter
    def message(self, value: str) -> None:
        pass


def hostile_result() -> RunResult:
    """A result whose every foreign field holds something hostile."""
    odd_message = ToolExecutionError("x")
    odd_message.message = Unprintable()  # type: ignore[assignment]
    task = TaskRecord(
        id=1,
        tool="t\ud800",
        call='t("\ud800")',
        round=0,
        args=(math.nan, HUGE_INT, Unprintable()),
        kwargs={"k": deep_list(5000), (1, 2): "tuple key"},  # type: ignore[dict-item]
        thought="thinking \udfff",
        status=TaskStatus.DONE,
        resolved_args={"cycle": HOSTILE["cycles"], "inf": math.inf},
        output=HOSTILE["nasty_dict"],
        error=None,
        parsed_at=math.nan,
    )
    failed = TaskRecord(
        id=2,
        tool="t",
        call="t()",
        round=0,
        status=TaskStatus.FAILED,
        error=odd_message,
    )
    other = TaskRecord(
        id=3, tool="t", call="t()", round=0, status=TaskStatus.FAILED, error=MessageProperty("m")
    )
    rnd = Round(
        index=0,
        plan="1. t(\ud800)",
        task_ids=[1, 2, 3],
        errors=[odd_message],
        joiner_output="Action: Finish(\udc00)",
        answer="\ud800",
    )
    call = LLMCall("planner", "m\ud800", 0, 1, 1, 0.0, math.inf, math.nan)
    return RunResult(
        question="why \ud800?",
        answer="because \udfff",
        rounds=[rnd],
        tasks=[task, failed, other],
        usage=[call],
        wall_time=math.nan,
        stop_reason=StopReason.FINISH,
    )


def test_to_dict_and_to_json_are_strict_whatever_the_fields_hold(tmp_path: Path) -> None:
    result = hostile_result()
    data = result.to_dict()
    assert_strict(data)
    text = result.to_json(indent=None)
    text.encode("utf-8")
    loaded = strict_loads(text)
    assert loaded == data
    assert loaded["question"] == "why \ufffd?"
    assert loaded["wall_time"] == "NaN"
    assert loaded["tasks"][0]["args"] == [
        "NaN",
        "<int of about 20000 digits>",
        "<unrepresentable Unprintable>",
    ]
    assert loaded["tasks"][1]["error"] == {
        "type": "ToolExecutionError",
        "message": "<unrepresentable Unprintable>",
        "tool": "",
        "task_id": None,
    }
    assert loaded["tasks"][2]["error"]["type"] == "MessageProperty"
    assert strict_loads(result.to_json(indent=None)) == data
    # ... and what it wrote reads back as a typed run that writes the same JSON again
    again = RunResult.model_validate_json(text)
    assert again.to_json(indent=None) == text
    again_error = again.tasks[1].error
    assert type(again_error).__name__ == "ToolExecutionError"
    assert isinstance(again_error, ToolExecutionError)
    assert again_error.tool == ""
    strict_loads(as_json_ready(result, id="abc", extra=math.nan, odd={(1,): b"x"}))
    for task in result.tasks:
        assert_bounded_observation(task.observation, MAX_OBSERVATION_CHARS + 100)


def test_observations_of_failed_tasks_are_bounded_and_never_raise() -> None:
    error = ToolExecutionError("x")
    error.message = "m\ud800" * 10_000
    rec = TaskRecord(id=1, tool="t", call="t()", round=0, status=TaskStatus.FAILED, error=error)
    assert_bounded_observation(rec.observation, MAX_OBSERVATION_CHARS + 100)
    assert rec.observation.startswith("ToolExecutionError: m\ufffd")
    error.message = Nasty()  # type: ignore[assignment]
    assert rec.observation == "ToolExecutionError: <unrepresentable Nasty>"


def test_the_live_view_and_plain_reporter_show_hostile_text_safely() -> None:
    result = hostile_result()
    result.tasks[0].output = HOSTILE["control"]
    result.tasks[0].call = 'fetch("[/bold] \x1b[2J \ud800")'
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, color_system=None)
    reporter = PlainReporter(console)
    for task in result.tasks:
        reporter.handle(RunEvent("task", result, 0, task))
    view = LiveView("q \ud800 \x1b]0;title\x07")
    view.handle(RunEvent("finished", result, 0))
    console.print(view)
    render_result(result, console, run_id="abc")
    shown = out.getvalue()
    shown.encode("utf-8")
    for obeyed in ("\x1b", "\x07", "\u202e"):
        assert obeyed not in shown
    assert "\\x1b" in shown  # written as an escape, not obeyed
    assert "[/bold]" in shown  # markup in foreign text is shown, not interpreted


# -- end to end ------------------------------------------------------------------------------


async def test_runs_with_hostile_tool_outputs_finish_and_store(tmp_path: Path) -> None:
    # Smaller instances of the slowest values (the unit tests above take them at full size).
    fresh = dict(
        HOSTILE,
        endless=Endless(),
        counted=[Counted() for _ in range(1000)],
        shared_dag=shared_dag(30),
        huge_string="x" * 2_000_000,
        huge_list=["y" * 1000] * 20_000,
        huge_dict={i: i for i in range(1000)},
    )

    @tool
    def hostile(kind: str) -> object:
        """Return something awkward."""
        return fresh[kind]

    @tool
    def echo(text: str) -> str:
        """Echo text."""
        return text[:10]

    @tool
    def raises_unprintable() -> str:
        """Raise an exception whose str raises."""
        raise BadMessageError

    lines = [f'{i}. hostile("{name}")' for i, name in enumerate(sorted(HOSTILE), 1)]
    n = len(lines)
    # $N inside a string interpolates each output's text; a bare $N passes the value on.
    refs = "".join(
        f"${i}" for i, name in enumerate(sorted(HOSTILE), 1) if name not in ("nasty", "nameless")
    )
    lines.append(f'{n + 1}. echo("{refs}")')
    lines.append(f"{n + 2}. raises_unprintable()")
    model = ScriptedModel(["\n".join(lines), "Thought: done.\nAction: Finish(survived)"])
    compiler = Compiler(model=model, tools=[hostile, echo, raises_unprintable])
    result = await asyncio.wait_for(compiler.arun("q"), 100)

    assert result.answer == "survived"
    by_id = {t.id: t for t in result.tasks}
    for i, name in enumerate(sorted(HOSTILE), 1):
        if name in ("nasty", "nameless"):
            # The tool layer asks whether these are awaitable, which reads their __class__ /
            # __mro__; that may fail the task, but must not stop the run.
            assert by_id[i].status in (TaskStatus.DONE, TaskStatus.FAILED)
        else:
            assert by_id[i].status is TaskStatus.DONE, (name, by_id[i].observation)
    assert by_id[n + 1].status is TaskStatus.DONE
    assert by_id[n + 2].status is TaskStatus.FAILED

    joiner = model.calls[1].messages[-1].content
    joiner.encode("utf-8")
    bodies = re.findall(r'<observation task="(\d+)" status="\w+">(.*?)</observation>', joiner, re.S)
    assert len(bodies) == n + 2
    for _, body in bodies:
        # a backslash per escaped tag at most
        assert len(body) <= MAX_OBSERVATION_CHARS + MARKER + 100

    text = result.to_json(indent=None)
    text.encode("utf-8")
    loaded = strict_loads(text)
    assert strict_loads(as_json_ready(result, id="x")) == loaded | {"id": "x"}
    assert depth_of(loaded) <= MAX_DEPTH + 4
    with RunStore(tmp_path / "runs.sqlite3") as store:
        saved = store.load(store.save(result)).to_dict()
    assert [t["id"] for t in saved["tasks"]] == [t.id for t in result.tasks]
    assert saved["tasks"][0]["output"] == loaded["tasks"][0]["output"]
