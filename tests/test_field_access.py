"""Field access in the plan language: ``$N.field``, ``$N["key"]``, ``$N[0]`` select inside a
typed result, checked when the task is dispatched."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pydantic
import pytest

from dagcall import (
    BadReferenceError,
    Compiler,
    Optimizations,
    ScriptedModel,
    TaskStatus,
    ToolArgumentError,
    tool,
)
from dagcall._grammar import plan_grammar
from dagcall.plan import MAX_PATH, Ref, SelectionError, TaskSpec, Template, parse_plan, select

FINISH = "Thought: done.\nAction: Finish(ok)"


def plan(*lines: str) -> str:
    return "\n".join(lines) + "\n<END_OF_PLAN>"


def parsed(*lines: str) -> list[Any]:
    items, _ = parse_plan("\n".join(lines) + "\n", ["f", "g"])
    return items


def task(*lines: str) -> TaskSpec:
    last = parsed(*lines)[-1]
    assert isinstance(last, TaskSpec), last
    return last


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ('"$1.city"', Ref(1, ("city",))),
        ("$1.city", Ref(1, ("city",))),
        ('"$1[0]"', Ref(1, (0,))),
        ("$1[-1]", Ref(1, (-1,))),
        ('$1["a b"]', Ref(1, ("a b",))),
        ("\"$1['a b']\"", Ref(1, ("a b",))),
        ("$1.items[0].name", Ref(1, ("items", 0, "name"))),
        ('"${1}.items[2]"', Ref(1, ("items", 2))),
        ('$1["日本"].名前', Ref(1, ("日本", "名前"))),
        ('$1["say \\"hi\\""]', Ref(1, ('say "hi"',))),
        ('"$1"', Ref(1)),
        ("$1.__class__", Ref(1, ("__class__",))),  # parsed as a name; never looked up
    ],
)
def test_whole_argument_selections(arg: str, expected: Ref) -> None:
    spec = task('1. f("x")', f"2. g({arg})")
    assert spec.args == (expected,)
    assert spec.deps == {1}


def test_selections_inside_strings_and_the_sentence_ending_dot() -> None:
    spec = task(
        '1. f("x")',
        '2. g("population of $1.city", "it was $1.", "then $1. Next", "$1.5 and $1,000", '
        '"first: $1[0]!", "$1[citation needed]")',
    )
    assert spec.args == (
        Template(("population of ", Ref(1, ("city",)))),
        Template(("it was ", Ref(1), ".")),
        Template(("then ", Ref(1), ". Next")),
        "$1.5 and $1,000",  # money, as before
        Template(("first: ", Ref(1, (0,)), "!")),
        Template((Ref(1), "[citation needed]")),  # not a key: plain text after $1
    )


def test_a_later_or_unknown_task_in_a_selection_is_still_a_bad_reference() -> None:
    items = parsed('1. f("x")', '2. g("${3}.a")', "3. g($4.b)")
    assert isinstance(items[1], BadReferenceError)
    assert isinstance(items[2], BadReferenceError)
    # A bare $N with no task N before it, in text, stays text with its dot and name.
    assert task('1. f("cost $7.total")').args == ("cost $7.total",)


@pytest.mark.parametrize(
    "arg",
    [
        "$1[99999999999999999999]",
        '"$1[99999999999999999999]"',
        "$1" + ".a" * (MAX_PATH + 1),
        '"$1' + "[0]" * (MAX_PATH + 1) + '"',
    ],
)
def test_hostile_selections_are_plan_errors_not_crashes(arg: str) -> None:
    items = parsed('1. f("x")', f"2. g({arg})")
    assert isinstance(items[1], BadReferenceError)
    assert items[1].task_id == 2
    assert "$1" in items[1].message


def test_hostile_inputs_never_raise() -> None:
    for arg in [
        "$1.",
        "$1..a",
        "$1[",
        "$1[]",
        "$1['unclosed]",
        "$1[0",
        '$1["\\N{BOGUS}"]',
        "$1.a" * 10_000,
        "$1[" * 5000,
        "$1." + "a" * 100_000,
        "$1.__class__.__init__.__globals__",
    ]:
        for form in (arg, json.dumps(arg)):
            parsed('1. f("x")', f"2. g({form})")  # an item, maybe an error: never an exception


def test_a_deep_chain_within_the_limit_parses() -> None:
    spec = task('1. f("x")', "2. g($1" + "[0]" * MAX_PATH + ")")
    assert spec.args == (Ref(1, (0,) * MAX_PATH),)


def test_streamed_in_any_split_gives_the_same_tasks() -> None:
    text = '1. f("x")\n2. g($1.items[0]["a b"], "n: $1.name.")\n'
    whole, _ = parse_plan(text, ["f", "g"])
    from dagcall.plan import PlanParser

    for cut in range(1, len(text)):
        p = PlanParser(["f", "g"])
        items = p.feed(text[:cut]) + p.feed(text[cut:]) + p.close()
        assert items == whole


def test_ref_spelling_round_trips() -> None:
    for ref in (Ref(1), Ref(2, ("a", 0, -1)), Ref(3, ("a b", "名前", 'q"'))):
        spec = task('1. f("x")', '2. f("y")', '3. f("z")', f"4. g({ref!s})")
        assert spec.args == (ref,)


# -- selection ---------------------------------------------------------------------------------


class City(pydantic.BaseModel):
    name: str
    population: int

    @property
    def expensive(self) -> str:  # pragma: no cover - must never run
        raise AssertionError("a property ran")


@dataclasses.dataclass
class Box:
    items: list[Any]
    label: str = "box"


def test_select_reads_only_data() -> None:
    data = {"a": [1, {"b": (2, 3)}], "0": "zero"}
    assert select(data, ["a", 1, "b", -1]) == 3
    assert select(data, [0]) == "zero"  # an index on a mapping also finds its string key
    assert select(City(name="Paris", population=2), ["name"]) == "Paris"
    assert select(Box([City(name="x", population=1)]), ["items", 0, "population"]) == 1
    cases: list[tuple[object, list[str | int]]] = [
        (City(name="P", population=1), ["expensive"]),
        (City(name="P", population=1), ["__class__"]),
        (City(name="P", population=1), ["model_fields"]),
        (Box([]), ["__dict__"]),
        ("text", ["upper"]),
        ("text", [0]),
        ({"a": 1}, ["__class__"]),
        ([1, 2], ["append"]),
        ([1, 2], [99999999999999999]),
        (object(), ["__class__"]),
        (None, ["a"]),
    ]
    for value, path in cases:
        with pytest.raises(SelectionError):
            select(value, path, name="$1")


def test_missing_selections_say_what_exists_bounded() -> None:
    expected = r"\$1\.nme does not exist: \$1 is a dict with the keys 'name', 'id'"
    with pytest.raises(SelectionError, match=expected):
        select({"name": 1, "id": 2}, ["nme"], name="$1")
    many = {f"k{i}": i for i in range(1000)}
    with pytest.raises(SelectionError) as caught:
        select(many, ["x" * 10_000], name="$1")
    assert "(1000 in all)" in caught.value.message
    assert len(caught.value.message) < 1000
    with pytest.raises(SelectionError, match=r"list of 2 items"):
        select([1, 2], [5], name="$1")
    with pytest.raises(SelectionError, match=r"City with the fields 'name', 'population'"):
        select(City(name="P", population=1), ["nme"], name="$1")


# -- in a run ------------------------------------------------------------------------------------


@tool
def lookup(kind: str) -> Any:
    """Structured results of several kinds."""
    if kind == "dict":
        return {"city": "Paris", "items": [{"name": "first"}, {"name": "second"}], "n": 3}
    if kind == "model":
        return City(name="Lyon", population=500_000)
    if kind == "dataclass":
        return Box([10, 20, 30], label="tens")
    if kind == "mcp":  # MCP structured content: a JSON object
        return {"structuredContent": {"temperature": 21.5}}
    raise ValueError(kind)


seen: list[Any] = []


@tool
def record(value: Any = None, text: str = "") -> str:
    """Keep what it was given."""
    seen.append((value, text))
    return "ok"


async def run(*lines: str, **options: Any) -> Any:
    seen.clear()
    model = ScriptedModel([plan(*lines), FINISH])
    return await Compiler(model=model, tools=[lookup, record], **options).arun("q")


async def test_selections_are_substituted_with_their_types() -> None:
    result = await run(
        '1. lookup("dict")',
        '2. lookup("model")',
        '3. lookup("dataclass")',
        '4. lookup("mcp")',
        "5. record($1.items[1].name)",
        "6. record($1.n)",
        "7. record($2.population)",
        "8. record($3.items[-1])",
        "9. record($4.structuredContent.temperature)",
        '10. record(text="$1.city has $2.population people; $3.label.")',
        "11. join()",
    )
    assert all(t.status is TaskStatus.DONE for t in result.tasks), [t.error for t in result.tasks]
    values = [v for v, _ in seen[:5]]
    assert sorted(values, key=str) == sorted(["second", 3, 500_000, 30, 21.5], key=str)
    assert seen[5][1] == "Paris has 500000 people; tens."
    assert result.tasks[6].resolved_args == {"value": 500_000}


async def test_a_missing_field_fails_only_that_task_and_the_joiner_sees_it() -> None:
    model = ScriptedModel(
        [
            plan(
                '1. lookup("dict")',
                "2. record($1.items[5].name)",
                "3. record($1.cty)",
                "4. record($1.city)",
                "5. record($2)",
                "6. join()",
            ),
            FINISH,
        ]
    )
    result = await Compiler(model=model, tools=[lookup, record]).arun("q")
    t1, t2, t3, t4, t5 = result.tasks
    assert t1.status is TaskStatus.DONE
    assert t4.status is TaskStatus.DONE
    for failed, needle in ((t2, "$1.items[5] does not exist"), (t3, "$1.cty does not exist")):
        assert failed.status is TaskStatus.FAILED
        assert isinstance(failed.error, ToolArgumentError)
        assert needle in failed.error.message
        assert failed.error.task_id == failed.id
        assert failed.started_at is None  # never called
    assert "'city', 'items', 'n'" in t3.observation
    assert t5.status is TaskStatus.SKIPPED
    joiner_prompt = "\n".join(m.content for m in model.calls[1].messages)
    assert "$1.cty does not exist" in joiner_prompt


async def test_field_access_off_reads_references_as_before() -> None:
    result = await run(
        '1. lookup("dict")',
        "2. record($1.n)",
        '3. record(text="n=$1.n")',
        "4. join()",
        optimize=Optimizations(field_access=False),
    )
    assert all(t.status is TaskStatus.DONE for t in result.tasks)
    whole = result.tasks[0].observation
    assert seen[0][0].endswith(".n")
    assert seen[0][0].startswith("{")
    assert seen[1][1].startswith("n={")
    assert seen[1][1].endswith(".n")
    assert whole


# -- grammar and prompt ------------------------------------------------------------------------


def test_the_grammar_has_selections_and_llama_cpp_reads_it() -> None:
    grammar = plan_grammar([lookup, record])
    assert re.search(r'^ref ::= "\$" \[1-9\] \[0-9\]\? access\*$', grammar, re.M)
    assert re.search(r"^access ::= ", grammar, re.M)
    assert _matches(grammar, "ref", "$1")
    for text in ("$1.city", "$2[0]", "$3[-1]", '$1["a b"]', "$12.items[0].name"):
        assert _matches(grammar, "ref", text), text
    for text in ("$1.", "$1.5", "$1[", "$0", "$1..a", "$1[x]"):
        assert not _matches(grammar, "ref", text), text
    whole = plan_grammar([record])
    line = '1. record($1.a[0], text="x")\n'
    assert _matches(whole, "task", line)
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)


def test_the_planner_prompt_describes_selections() -> None:
    compiler = Compiler(model=ScriptedModel([]), tools=[lookup])
    system = compiler.planner_messages("q")[0].content
    assert "$1.city" in system
    assert '$1["full name"]' in system
    assert "$2.items[0]" in system


# A small GBNF matcher for the grammar's own constructs (enough to check acceptance).


def _matches(grammar: str, rule: str, text: str) -> bool:
    rules = _parse_gbnf(grammar)
    return len(text) in _match(rules, ("rule", rule), text, 0, 0)


def _parse_gbnf(grammar: str) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for line in grammar.strip().splitlines():
        name, _, body = line.partition(" ::= ")
        rules[name.strip()] = _Parser(body).alternation()
    return rules


class _Parser:
    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def alternation(self) -> Any:
        options = [self.sequence()]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            options.append(self.sequence())
        return ("alt", options)

    def sequence(self) -> Any:
        items: list[Any] = []
        while True:
            self.ws()
            if self.i >= len(self.s) or self.s[self.i] in "|)":
                return ("seq", items)
            items.append(self.repeat(self.atom()))

    def repeat(self, node: Any) -> Any:
        if self.i < len(self.s) and self.s[self.i] in "*+?":
            op = self.s[self.i]
            self.i += 1
            return ("rep", node, {"*": (0, None), "+": (1, None), "?": (0, 1)}[op])
        m = re.compile(r"\{(\d+),(\d*)\}").match(self.s, self.i)
        if m:
            self.i = m.end()
            return ("rep", node, (int(m.group(1)), int(m.group(2)) if m.group(2) else None))
        return node

    def atom(self) -> Any:
        c = self.s[self.i]
        if c == '"':
            m = re.compile(r'"((?:[^"\\]|\\.)*)"').match(self.s, self.i)
            assert m
            self.i = m.end()
            return ("lit", json.loads(m.group(0)))
        if c == "[":
            m = re.compile(r"\[((?:[^\]\\]|\\.)*)\]").match(self.s, self.i)
            assert m
            self.i = m.end()
            body = m.group(1).replace("\\n", "\n")
            return ("cls", re.compile(f"[{body}]"))
        if c == "(":
            self.i += 1
            node = self.alternation()
            assert self.s[self.i] == ")"
            self.i += 1
            return node
        m = re.compile(r"[\w-]+").match(self.s, self.i)
        assert m, self.s[self.i :]
        self.i = m.end()
        return ("rule", m.group(0))


def _match(rules: dict[str, Any], node: Any, text: str, pos: int, depth: int) -> set[int]:
    if depth > 200:
        return set()
    kind = node[0]
    if kind == "lit":
        return {pos + len(node[1])} if text.startswith(node[1], pos) else set()
    if kind == "cls":
        return {pos + 1} if pos < len(text) and node[1].fullmatch(text[pos]) else set()
    if kind == "rule":
        return _match(rules, rules[node[1]], text, pos, depth + 1)
    if kind == "alt":
        out: set[int] = set()
        for option in node[1]:
            out |= _match(rules, option, text, pos, depth + 1)
        return out
    if kind == "seq":
        ends = {pos}
        for item in node[1]:
            ends = {e for p in ends for e in _match(rules, item, text, p, depth + 1)}
        return ends
    lo, hi = node[2]
    ends, reached, count, visited = {pos}, {pos} if lo == 0 else set(), 0, {pos}
    while ends and (hi is None or count < hi):
        ends = {e for p in ends for e in _match(rules, node[1], text, p, depth + 1)}
        count += 1
        if hi is None:  # unbounded: each position once, so an empty match cannot loop
            ends -= visited
            visited |= ends
        if count >= lo:
            reached |= ends
    return reached


async def test_hostile_selections_in_a_run_fail_their_task_only() -> None:
    result = await run(
        '1. lookup("model")',
        '2. lookup("dict")',
        "3. record($1.__class__)",
        "4. record($1.model_fields)",
        "5. record($2.__class__.__init__)",
        "6. record($2.items.append)",
        "7. record($1.name)",
        "8. join()",
    )
    t = {task.id: task for task in result.tasks}
    for i in (3, 4, 5, 6):
        assert t[i].status is TaskStatus.FAILED, i
        assert isinstance(t[i].error, ToolArgumentError)
    assert seen[0][0] == "Lyon"
    assert len(seen) == 1
    assert "City with the fields 'name', 'population'" in t[3].error.message
