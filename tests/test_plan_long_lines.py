"""The streaming plan parser is exact for lines of any length.

Its output does not depend on how the stream is split, also for lines of hundreds of KB and
several MB; lines (and tasks over several lines) longer than ``max_line_chars`` become one typed
error naming the limit, never corrupted text, while memory stays bounded; and feeding costs
time linear in the text.
"""

from __future__ import annotations

import ast
import time
import tracemalloc
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagcall import (
    END_OF_PLAN,
    PlanError,
    PlanParser,
    PlanSyntaxError,
    TaskSpec,
    UsageError,
    parse_plan,
)
from dagcall._plan import DEFAULT_MAX_LINE_CHARS, _quote_bare_refs, _Scan

TOOLS = ["search", "math"]
HANG = 20.0  # seconds: only to catch a hang or quadratic blow-up, never a performance claim
MARK = len(END_OF_PLAN)


def describe(items: Iterable[Any]) -> list[Any]:
    return [
        i if isinstance(i, TaskSpec) else (type(i).__name__, i.message, i.task_id, i.line)
        for i in items
    ]


def state(parser: PlanParser) -> tuple[Any, ...]:
    return (
        parser.text,
        parser.ignored,
        parser.trailing_thought,
        parser.finished,
        parser.join_seen,
        parser.unfinished,
    )


def pieces(text: str, cuts: Iterable[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(text[last:p])
        last = p
    out.append(text[last:])
    return out


def run(chunks: Iterable[str], *, complete: bool = True, **kw: Any) -> tuple[list[Any], Any]:
    parser = PlanParser(TOOLS, **kw)
    items: list[Any] = []
    for chunk in chunks:
        items += parser.feed(chunk)
    items += parser.close(complete=complete)
    return describe(items), state(parser)


def whole(text: str, **kw: Any) -> tuple[list[Any], Any]:
    items, parser = parse_plan(text, TOOLS, **kw)
    return describe(items), state(parser)


def assert_split_invariant(text: str, cuts: Iterable[int], **kw: Any) -> list[Any]:
    expected = whole(text, **kw)
    assert run(pieces(text, cuts), **kw) == expected
    assert run([text], complete=False, **kw) == run(pieces(text, cuts), complete=False, **kw)
    return expected[0]


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- split invariance with a small limit: every boundary case is cheap to reach -------------

LIMIT = 48


def task_of_length(task_id: int, length: int, quote: str = "'") -> str:
    """``N. search('xx…')`` exactly ``length`` characters long (or the shortest such line)."""
    head = f"{task_id}. search({quote}"
    return head + "x" * max(0, length - len(head) - len(quote) - 1) + quote + ")"


_near = st.integers(LIMIT - 3, LIMIT + MARK + 3)
_line = st.one_of(
    st.builds(task_of_length, st.integers(1, 9), _near),
    st.builds(task_of_length, st.integers(1, 9), st.integers(0, 4 * LIMIT)),
    st.builds(lambda n: "Thought: " + "t" * n, st.integers(0, 2 * LIMIT)),
    st.builds(lambda n: "prose " * n, st.integers(0, 20)),
    st.builds(lambda n: " " * n, _near),
    st.builds(lambda n: "join()  # " + "c" * n, st.integers(0, 2 * LIMIT)),
    st.builds(lambda n: "3. math(" + "$1 " * n + ")", st.integers(0, 30)),
    st.builds(
        lambda i, rows: f"{i}. search('''" + "\n".join("r" * r for r in rows) + "''')",
        st.integers(1, 9),
        st.lists(st.integers(0, LIMIT), max_size=5),
    ),
    st.sampled_from(
        [
            "",
            "join()",
            "1. search(",
            '    "open",',
            ")",
            "```",
            END_OF_PLAN,
            "2. search('$1')",
            "search('unnumbered')",
            "1. search('''",
            "'''",
        ]
    ),
    st.text(alphabet="ab1. ()'\"#$\\", max_size=LIMIT + 20),
)


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(_line, max_size=10),
    end=st.sampled_from(["", "\n", END_OF_PLAN, "x" * (LIMIT + 5) + END_OF_PLAN]),
    cuts=st.lists(st.integers(min_value=0), max_size=25),
)
def test_near_the_limit_output_is_identical_however_split(
    lines: list[str], end: str, cuts: list[int]
) -> None:
    text = "\n".join(lines) + end
    items = assert_split_invariant(text, cuts, max_line_chars=LIMIT)
    # Fed one character at a time, too.
    assert run(list(text), max_line_chars=LIMIT) == whole(text, max_line_chars=LIMIT)
    for item in items:
        if isinstance(item, tuple) and "max_line_chars" in item[1]:
            assert item[0] == "PlanSyntaxError"


@pytest.mark.parametrize("delta", [-2, -1, 0, 1, 2, MARK - 2, MARK - 1, MARK, MARK + 1])
@pytest.mark.parametrize("after", ["\n2. math('ok')\n", END_OF_PLAN, "", "\n" + END_OF_PLAN])
def test_lines_just_below_at_and_above_the_limit(delta: int, after: str) -> None:
    line = task_of_length(1, LIMIT + delta)
    assert len(line) == LIMIT + delta
    text = line + after
    # Every cut position, so the end marker and the limit are split every possible way.
    for cut in range(len(text) + 1):
        assert_split_invariant(text, [cut], max_line_chars=LIMIT)
    items, _ = parse_plan(text, TOOLS, max_line_chars=LIMIT)
    first = items[0]
    if delta <= 0:
        assert isinstance(first, TaskSpec)
        assert first.args == ("x" * (LIMIT + delta - len("1. search('')")),)
    else:
        assert isinstance(first, PlanSyntaxError)
        assert first.task_id == 1
        assert f"max_line_chars={LIMIT}" in first.message
    assert [type(i) for i in items[1:]] == ([TaskSpec] if "ok" in after else [])


# -- long lines at the default limit --------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    sizes=st.lists(st.integers(10_000, 300_000), min_size=1, max_size=3),
    style=st.sampled_from(["'", '"', "'''"]),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    chunk=st.sampled_from([None, 997, 65_536]),
)
def test_long_lines_parse_exactly_however_split(
    sizes: list[int], style: str, cuts: list[int], chunk: int | None
) -> None:
    args = [("abc$ \\t" * (n // 7 + 1))[:n].rstrip("\\") for n in sizes]
    plan = "".join(f"{i}. search({style}{a}{style})\n" for i, a in enumerate(args, 1))
    plan += f"Thought: done\n{len(args) + 1}. math('$1')\njoin()\n"
    expected = whole(plan)
    assert run(pieces(plan, cuts)) == expected
    if chunk is not None:
        assert run(chunked(plan, chunk)) == expected
    items = expected[0]
    assert [t.args[0] for t in items[:-1]] == [ast.literal_eval(style + a + style) for a in args]
    assert expected[1][0] == plan  # text is the plan exactly


def test_a_120kb_line_fed_one_character_at_a_time() -> None:
    arg = "0123456789" * 12_000
    plan = f'1. search("{arg}")\n2. math("$1")\n{END_OF_PLAN}'
    expected = whole(plan)
    assert run(plan) == expected  # a str iterates as one-character chunks
    (t1, t2) = expected[0]
    assert t1.args == (arg,)
    assert t2.deps == {1}


def test_a_900kb_triple_quoted_argument_over_many_lines_is_exact_and_linear() -> None:
    body = "\n".join(f"row {i}: ({i}) 'q' \"d\"" + "." * 60 for i in range(10_000))
    assert 800_000 < len(body) < DEFAULT_MAX_LINE_CHARS - 100
    plan = f'1. search("""{body}""")\n2. math("$1")\n'
    started = time.perf_counter()
    streamed = run(chunked(plan, 65_536))
    small = run(chunked(plan, 100))
    assert time.perf_counter() - started < HANG
    assert streamed == small == whole(plan)
    t1, t2 = streamed[0]
    assert t1.args == (body,)  # no newline inserted, none lost
    assert t2.deps == {1}


@pytest.mark.parametrize("delta", [-1, 0, 1, MARK - 1, MARK, MARK + 1])
def test_lines_around_the_default_limit(delta: int) -> None:
    line = task_of_length(1, DEFAULT_MAX_LINE_CHARS + delta, quote='"')
    plan = line + "\n2. math('$1')\n"
    limit = DEFAULT_MAX_LINE_CHARS
    expected = whole(plan)
    for cuts in ([limit - 5, limit, limit + 1, limit + MARK], [65_536 * k for k in range(1, 17)]):
        assert run(pieces(plan, cuts)) == expected
    first, second = expected[0]
    if delta <= 0:
        assert isinstance(first, TaskSpec)
        assert len(first.args[0]) == len(line) - len('1. search("")')
    else:
        assert first[:1] == ("PlanSyntaxError",)
        assert first[2] == 1
        assert "max_line_chars=1,000,000" in first[1]
    assert isinstance(second, TaskSpec)
    assert second.deps == {1}  # a dropped task still occupies its id


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0), min_size=1, max_size=3))
def test_a_5mb_line_in_a_few_big_chunks(cuts: list[int]) -> None:
    plan = "1. search('''" + "z" * 5_000_000 + "''')\n2. math('$1')\n" + END_OF_PLAN
    expected = whole(plan)
    assert run(pieces(plan, cuts)) == expected
    error, task = expected[0]
    assert error[:1] == ("PlanSyntaxError",)
    assert error[2] == 1
    assert isinstance(task, TaskSpec)


@pytest.mark.parametrize("lines", [1, 50_000])
def test_a_5mb_argument_is_exact_when_the_limit_allows_it(lines: int) -> None:
    body = "\n".join(["r" * (5_000_000 // lines - 1)] * lines)
    plan = f"1. search('''{body}''')\n2. math('$1')\n"
    started = time.perf_counter()
    streamed = run(chunked(plan, 65_536), max_line_chars=6_000_000)
    assert time.perf_counter() - started < HANG
    assert streamed == whole(plan, max_line_chars=6_000_000)
    t1, t2 = streamed[0]
    assert t1.args == (body,)  # not a newline inserted or lost in five million characters
    assert t2.deps == {1}
    assert streamed[1][0] == plan


# -- the limit: a typed error, never corruption, bounded memory ------------------------------


def test_a_5mb_line_in_64kb_chunks_is_one_typed_error_and_linear() -> None:
    plan = "Thought: go\n1. search('''" + "z" * 5_000_000 + "''')\n2. math('1+1')\n"
    parser = PlanParser(TOOLS)
    items: list[PlanError | TaskSpec] = []
    started = time.perf_counter()
    for chunk in chunked(plan, 65_536):
        items += parser.feed(chunk)
    items += parser.close()
    assert time.perf_counter() - started < HANG
    error, task = items
    assert isinstance(error, PlanSyntaxError)
    assert error.task_id == 1
    assert "max_line_chars=1,000,000" in error.message
    assert len(error.message) < 400
    assert isinstance(task, TaskSpec)
    assert task.id == 2
    assert "\n" not in "".join(str(a) for a in task.args)
    assert len(parser.text) < 1_000  # a note in place of the dropped line
    line = plan.splitlines()[1]
    assert f"{len(line) + 1:,} characters dropped" in parser.text


def stream_measured(chunks: Iterable[str], **kw: Any) -> tuple[list[Any], int]:
    parser = PlanParser(TOOLS, **kw)
    items: list[Any] = []
    tracemalloc.start()
    try:
        for chunk in chunks:
            items += parser.feed(chunk)
        items += parser.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return items, peak


def runaway_line(total: int) -> Iterable[str]:
    yield "1. search('"
    for _ in range(total // 65_536):
        yield "y" * 65_536
    yield "')\n2. math('1')\n"


def runaway_task(total: int) -> Iterable[str]:
    yield '1. search("""'
    row = ("w" * 99 + "\n") * 655
    for _ in range(total // len(row)):
        yield row
    yield '""")\n2. math("1")\n'


@pytest.mark.parametrize("source", [runaway_line, runaway_task])
def test_memory_stays_bounded_while_a_runaway_line_streams(source: Any) -> None:
    limit = 100_000
    items, peak = stream_measured(source(10_000_000), max_line_chars=limit)
    assert peak < 20 * limit  # a few copies of the limit, not the 10 MB streamed
    error, task = items
    assert isinstance(error, PlanSyntaxError)
    assert error.task_id == 1
    assert "max_line_chars=100,000" in error.message
    assert isinstance(task, TaskSpec)


def test_a_task_over_several_lines_counts_its_whole_text() -> None:
    rows = ["r" * 30] * 5
    plan = "1. search('''" + "\n".join(rows) + "''')\nprose\n2. math('1')\n"
    text_len = len(plan.split("\nprose")[0])
    items, parser = parse_plan(plan, TOOLS, max_line_chars=text_len)
    assert [type(i) for i in items] == [TaskSpec, TaskSpec]
    assert parser.ignored == ["prose"]
    items, parser = parse_plan(plan, TOOLS, max_line_chars=text_len - 1)
    error, task = items
    assert isinstance(error, PlanSyntaxError)
    assert error.task_id == 1
    assert f"max_line_chars={text_len - 1:,}" in error.message
    assert isinstance(task, TaskSpec)
    assert parser.ignored == []  # the dropped task's continuation lines went with it
    assert "characters dropped" in parser.text


@pytest.mark.parametrize(
    "line", ["Thought: " + "t" * 100, "prose " * 20, " " * 100, "search('" + "s" * 100 + "')"]
)
def test_an_over_long_line_that_is_not_a_task_is_one_error_without_an_id(line: str) -> None:
    items, parser = parse_plan(f"1. search('a')\n{line}\n2. math('$1')\n", TOOLS, max_line_chars=50)
    first, error, last = items
    assert isinstance(first, TaskSpec)
    assert isinstance(error, PlanSyntaxError)
    assert error.task_id is None
    assert "max_line_chars=50" in error.message
    assert isinstance(last, TaskSpec)
    assert parser.trailing_thought is None


def test_an_over_long_continuation_drops_the_open_task() -> None:
    plan = "1. search(\n    '" + "q" * 200 + "')\n2. math('1')\n"
    items, _ = parse_plan(plan, TOOLS, max_line_chars=100)
    error, task = items
    assert isinstance(error, PlanSyntaxError)
    assert error.task_id == 1
    assert isinstance(task, TaskSpec)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "100", None])
def test_the_limit_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(UsageError, match="max_line_chars"):
        PlanParser(TOOLS, max_line_chars=bad)


def test_the_default_limit_is_public() -> None:
    assert PlanParser.DEFAULT_MAX_LINE_CHARS == DEFAULT_MAX_LINE_CHARS == 1_000_000
    assert PlanParser(TOOLS).max_line_chars == DEFAULT_MAX_LINE_CHARS


# -- linear cost ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [
        # a call over 90,000 short lines: parsing it again at every line would be quadratic
        "1. math([\n" + "1,\n" * 90_000 + "])\n",
        "1. search(\n" + "  'a'\n" * 90_000 + ")\n",  # implicit concatenation over lines
        # 100,000 bare references on one line
        "1. search('a')\n2. math([" + "$1," * 100_000 + "])\n",
        # 200,000 short lines of prose and tasks
        "".join(f"{i}. math('{i}')\nsome prose\n" for i in range(1, 30_001)),
    ],
    ids=["call-over-lines", "strings-over-lines", "bare-refs", "many-lines"],
)
def test_feeding_cost_stays_linear(plan: str) -> None:
    started = time.perf_counter()
    streamed = run(chunked(plan, 65_536))
    assert time.perf_counter() - started < HANG
    assert not [i for i in streamed[0] if not isinstance(i, TaskSpec)]


# -- the parse gate: skipping a parse never hides a complete call ----------------------------

_code = st.lists(
    st.sampled_from(
        [*"()[]{}'\"#\\ab1,=$ \n", '"""', "'''", "f'", "rb'", "search(", "x=", "\\\n", "$1"]
    ),
    max_size=16,
).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_code)
def test_the_scan_only_defers_text_that_cannot_parse(src: str) -> None:
    """While the scan says a call is open (or already broken), parsing it would fail: so the
    parses it skips never hide a complete call."""
    lines = src.split("\n")
    scan = _Scan()
    for k, line in enumerate(lines):
        scan.feed(line)
        if scan.open or scan.broken:
            text = "\n".join(lines[: k + 1])
            with pytest.raises((SyntaxError, ValueError)):
                ast.parse(_quote_bare_refs(text), mode="eval")


ROWS = ["'a',", "[1,", "2],", "# c ( '", "'''x", "y''',", "", "k=3,", "$0,", "(", "),", "\\"]


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(st.sampled_from(ROWS), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_a_call_over_lines_is_returned_at_the_line_that_completes_it(
    rows: list[str], cuts: list[int]
) -> None:
    body = "search(\n" + "\n".join(rows) + "\n)"
    plan = f"0. math('z')\n1. {body}\n2. math('$1')\n"
    items = assert_split_invariant(plan, cuts)
    try:
        call = ast.parse(_quote_bare_refs(body), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise ValueError("not one call")
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError):
        assert any(isinstance(i, tuple) and i[2] == 1 for i in items)  # a plan error for task 1
        return
    _, t1, t2 = items
    assert isinstance(t1, TaskSpec)
    assert (t1.raw_args, t1.raw_kwargs) == (args, kwargs)
    assert isinstance(t2, TaskSpec)
    assert t2.deps == {1}
