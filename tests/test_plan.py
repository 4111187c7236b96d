"""The plan language and its streaming parser."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagcall import (
    BadReferenceError,
    DuplicateTaskError,
    PlanError,
    PlanParser,
    PlanSyntaxError,
    Ref,
    TaskSpec,
    Template,
    UnknownToolError,
    parse_plan,
)

TOOLS = ["search", "math", "lookup"]


def tasks_of(text: str, **kw: Any) -> list[TaskSpec]:
    items, _ = parse_plan(text, TOOLS, **kw)
    errors = [i for i in items if isinstance(i, PlanError)]
    assert not errors, errors
    return [i for i in items if isinstance(i, TaskSpec)]


def errors_of(text: str) -> list[PlanError]:
    items, _ = parse_plan(text, TOOLS)
    return [i for i in items if isinstance(i, PlanError)]


def test_positional_and_keyword_literal_arguments() -> None:
    (t,) = tasks_of('1. lookup("x", 3, 2.5, [1, "a"], {"k": None}, flag=True, n=-4)\n')
    assert t.id == 1
    assert t.tool == "lookup"
    assert t.args == ("x", 3, 2.5, [1, "a"], {"k": None})
    assert t.kwargs == {"flag": True, "n": -4}
    assert t.deps == frozenset()
    assert t.call == 'lookup("x", 3, 2.5, [1, "a"], {"k": None}, flag=True, n=-4)'


def test_whole_argument_references_in_every_spelling() -> None:
    plan = '1. search("a")\n2. search("b")\n3. math("$1", "${2}", $1, ${2}, x="$2")\n'
    t3 = tasks_of(plan)[2]
    assert t3.args == (Ref(1), Ref(2), Ref(1), Ref(2))
    assert t3.kwargs == {"x": Ref(2)}
    assert t3.deps == {1, 2}
    # As written, before substitution:
    assert t3.raw_args == ("$1", "${2}", "$1", "${2}")


def test_references_inside_text_are_templates() -> None:
    plan = '1. search("a")\n2. search("b")\n3. math(expression="$1 - ${2} + 1")\n'
    t3 = tasks_of(plan)[2]
    assert t3.kwargs["expression"] == Template((Ref(1), " - ", Ref(2), " + 1"))


def test_list_of_references() -> None:
    plan = '1. search("a")\n2. search("b")\n3. math("$1 - $2", context=["$1", "$2"])\n'
    t3 = tasks_of(plan)[2]
    assert t3.kwargs["context"] == [Ref(1), Ref(2)]
    nested = tasks_of('1. search("a")\n2. lookup({"k": ["$1", ("$1", 2)]})\n')[1]
    assert nested.args == ({"k": [Ref(1), (Ref(1), 2)]},)


def test_dollar_amounts_are_text_unless_an_earlier_task() -> None:
    plan = (
        '1. search("Apple market cap")\n'
        '2. search("Is a company that costs $5 billion big? It paid $1.5 and $1,000")\n'
    )
    t2 = tasks_of(plan)[1]
    # $5: no task 5 before; $1.5 / $1,000: money even though task 1 exists.
    assert t2.args == ("Is a company that costs $5 billion big? It paid $1.5 and $1,000",)
    assert t2.deps == frozenset()


def test_dollar_number_of_an_earlier_task_is_a_reference() -> None:
    plan = '1. search("a")\n2. search("b")\n3. search("compare $1 with $2.")\n'
    assert tasks_of(plan)[2].deps == {1, 2}


def test_thoughts_attach_to_the_next_task_and_join_ends_the_plan() -> None:
    plan = (
        "Thought: first look it up.\n"
        "1. search('a')\n"
        "2. search('b')\n"
        "Thought: then\nThought: combine.\n"
        "3. math('$1+$2')\n"
        "Thought: that is all.\n"
        "4. join()\n"
        "5. search('after join is ignored')\n"
    )
    items, parser = parse_plan(plan, TOOLS)
    assert [t.thought for t in items if isinstance(t, TaskSpec)] == [
        "first look it up.",
        None,
        "then combine.",
    ]
    assert parser.finished
    assert parser.join_seen
    assert parser.trailing_thought == "that is all."


def test_end_of_plan_marker_ends_parsing_even_mid_line() -> None:
    items, parser = parse_plan('1. search("a")\n2. join()<END_OF_PLAN>\n3. search("x")', TOOLS)
    assert [i.id for i in items if isinstance(i, TaskSpec)] == [1]
    assert parser.finished
    items, parser = parse_plan('1. search("a")<END_OF_PLAN>', TOOLS)
    assert [i.id for i in items if isinstance(i, TaskSpec)] == [1]


def test_unterminated_last_line_is_parsed_at_close() -> None:
    assert [t.id for t in tasks_of('1. search("a")\n2. search("b")')] == [1, 2]


def test_call_spanning_lines() -> None:
    (t,) = tasks_of('1. lookup(\n    "a",\n    key=[1,\n 2],\n)\n2. join()\n')
    assert t.args == ("a",)
    assert t.kwargs == {"key": [1, 2]}


def test_missing_closing_parenthesis_is_a_plan_error_and_the_rest_still_parses() -> None:
    items, _ = parse_plan('1. search("a"\n2. search("b")\n3. join()\n', TOOLS)
    assert isinstance(items[0], PlanSyntaxError)
    assert items[0].task_id == 1
    assert "never closed" in items[0].message
    assert isinstance(items[1], TaskSpec)
    assert items[1].id == 2


def test_missing_parenthesis_at_end_of_stream() -> None:
    (err,) = errors_of('1. search("a"')
    assert isinstance(err, PlanSyntaxError)


def test_unknown_tool() -> None:
    (err,) = errors_of('1. browse("a")\n')
    assert isinstance(err, UnknownToolError)
    assert err.task_id == 1
    assert "browse" in err.message
    assert "search" in err.message  # says what is available


def test_duplicate_id() -> None:
    items, _ = parse_plan('1. search("a")\n1. search("b")\n', TOOLS)
    assert isinstance(items[0], TaskSpec)
    assert isinstance(items[1], DuplicateTaskError)


@pytest.mark.parametrize(
    "plan",
    [
        '1. search("$2")\n2. search("b")\n',  # later task
        '1. search("$1")\n',  # itself
        '1. search("$7")\n',  # missing
        '1. search("look up ${7}")\n',  # braces always mean a reference
        "1. search($3)\n",
    ],
)
def test_bad_references(plan: str) -> None:
    errors = errors_of(plan)
    assert errors
    assert isinstance(errors[0], BadReferenceError)
    assert errors[0].task_id == 1


def test_references_to_prior_rounds() -> None:
    (t,) = tasks_of('4. math("$3 * 2", context=["$1"])\n', prior_ids=[1, 2, 3])
    assert t.deps == {1, 3}


def test_duplicate_of_prior_round_id() -> None:
    items, _ = parse_plan('2. search("a")\n', TOOLS, prior_ids=[1, 2])
    assert isinstance(items[0], DuplicateTaskError)


@pytest.mark.parametrize(
    "line",
    [
        "1. search(query)\n",  # a name, not a literal
        "1. search(*args)\n",
        "1. search(**kw)\n",
        '1. search("a") + 1\n',
        "1. Search for the population of Paris\n",
        "1. search(__import__('os').system('echo pwned'))\n",
        "1. search(1 if True else 2)\n",
    ],
)
def test_non_literal_or_non_call_lines_are_syntax_errors(line: str) -> None:
    (err,) = errors_of(line)
    assert isinstance(err, PlanSyntaxError)


def test_unnumbered_call_is_reported_but_prose_is_ignored() -> None:
    items, parser = parse_plan('Here is the plan:\nsearch("a")\n```\n1. search("b")\n```\n', TOOLS)
    assert isinstance(items[0], PlanSyntaxError)
    assert isinstance(items[1], TaskSpec)
    assert parser.ignored == ["Here is the plan:"]


def test_dependents_of_a_broken_task_refer_to_it() -> None:
    items, _ = parse_plan('1. browse("a")\n2. search("$1")\n', TOOLS)
    assert isinstance(items[0], UnknownToolError)
    assert isinstance(items[1], TaskSpec)
    assert items[1].deps == {1}


def test_each_task_is_returned_as_soon_as_its_line_is_complete() -> None:
    parser = PlanParser(TOOLS)
    assert parser.feed('1. search("a")') == []  # line not complete yet
    (t1,) = parser.feed("\n2. sea")
    assert isinstance(t1, TaskSpec)
    assert t1.id == 1
    assert parser.feed('rch("b")') == []
    (t2,) = parser.feed("\n")
    assert isinstance(t2, TaskSpec)
    assert t2.id == 2
    assert parser.feed("3. join()\n") == []
    assert parser.finished
    assert parser.feed('4. search("c")\n') == []


# -- chunk-split invariance -------------------------------------------------------------------

PLANS = [
    'Thought: a\n1. search("Apple $5 billion")\n2. search(query="b")\n'
    'Thought: both\n3. math("$1 - $2", context=["$1", "${2}"])\n4. join()\n<END_OF_PLAN>',
    '1. search("a"\n2. browse("x")\n3. lookup(\n "k",\n n=[1,\n 2])\n4. search("$9")\n'
    '5. search("$3")\n5. math("dup")\nsearch("unnumbered")\nprose line\n6. join()',
    '1. lookup({"a": ["$1"]})\n2. math($1)\n3. math("$2 and $1.5")<END_OF_PLAN>junk',
    "1. search('tab\\tand \\\"quote\\\" $1')\n2. math('''multi\nline''')\n",
]


def _describe(items: list[Any]) -> list[Any]:
    return [
        i if isinstance(i, TaskSpec) else (type(i).__name__, i.message, i.task_id) for i in items
    ]


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(text[last:p])
        last = p
    pieces.append(text[last:])
    return pieces


def _stream(plan: str, cuts: list[int]) -> tuple[list[Any], PlanParser]:
    """Feed the plan to a parser in the pieces the cuts make."""
    parser = PlanParser(TOOLS)
    streamed: list[Any] = []
    for piece in _split(plan, cuts):
        streamed += parser.feed(piece)
    streamed += parser.close()
    return streamed, parser


@settings(max_examples=300, deadline=None)
@given(plan=st.sampled_from(PLANS), cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_result_is_identical_however_the_stream_is_split(plan: str, cuts: list[int]) -> None:
    whole, whole_parser = parse_plan(plan, TOOLS)
    streamed, parser = _stream(plan, cuts)
    assert _describe(streamed) == _describe(whole)
    assert parser.trailing_thought == whole_parser.trailing_thought
    assert parser.ignored == whole_parser.ignored


_line = st.one_of(
    st.builds(
        lambda i, tool, arg: f"{i}. {tool}({arg!r})",
        st.integers(1, 8),
        st.sampled_from(["search", "math", "nope"]),
        st.text(alphabet="ab $12{}()\"'", max_size=12),
    ),
    st.sampled_from(["Thought: hm", "", "join()", "1. search(", ")", "```", "<END_OF_PLAN>"]),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_line, max_size=12), cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_generated_plans_are_split_invariant(lines: list[str], cuts: list[int]) -> None:
    plan = "\n".join(lines)
    whole, _ = parse_plan(plan, TOOLS)
    streamed, _ = _stream(plan, cuts)
    assert _describe(streamed) == _describe(whole)
    for item in streamed:  # only typed outcomes
        assert isinstance(item, TaskSpec | PlanError)
