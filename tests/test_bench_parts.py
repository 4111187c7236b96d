"""The benchmark's parts: scorer, knowledge base, answer rules, oracle, latency models, bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from dagcall import LLMCall, RunResult, TaskRecord, parse_plan, tool
from dagcall._result import CallRole
from dagcall.bench import (
    PROFILES,
    BenchDataError,
    BenchQuestion,
    KnowledgeBase,
    SimulatedModel,
    WebLatency,
    apply_rule,
    normalize_answer,
    oracle,
    score,
)
from dagcall.bench._bound import critical_path_bound
from dagcall.bench._examples import EXAMPLES
from dagcall.bench._reference import format_number, ungrounded_numbers
from dagcall.bench._simulate import count_tokens, with_latency
from dagcall.bench._systems import parallel_turns, react_steps
from dagcall.models import Message, complete

KB = KnowledgeBase(
    {
        "Mariana Trench": "The Mariana Trench is an oceanic trench in the western Pacific. "
        "Its deepest point is about 10,994 metres below sea level.",
        "Puerto Rico Trench": "The Puerto Rico Trench lies between the Caribbean Sea and the "
        "Atlantic Ocean. Its deepest point is 8,376 metres deep.",
    }
)
TRENCHES = BenchQuestion(
    "parallelqa",
    "1",
    "If Mariana Trench was 20% shallower and the Puerto Rico Trench was 20% deeper, "
    "which one would be shallower?",
    "Mariana Trench",
    plan=(
        'search("Mariana Trench")',
        'search("Puerto Rico Trench")',
        'math("Depth of the Mariana Trench if it were 20% shallower", context=["$1"])',
        'math("Depth of the Puerto Rico Trench if it were 20% deeper", context=["$2"])',
    ),
    rule={"op": "argmin", "options": {"Mariana Trench": "$3", "Puerto Rico Trench": "$4"}},
    kb=KB,
    math={3: "10994 * (1 - 20/100)", 4: "8376 * (1 + 20/100)"},
)


# -- scorer -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("107.9", "100", True),
        ("110", "100", False),  # strictly within 10%
        ("90.01", "100", True),
        ("9,609,286.6", "9609286.60", True),
        ("about 100", "100", False),
        ("The Mariana Trench.", "Mariana Trench", True),
        ("Puerto Rico Trench", "Mariana Trench", False),
        ("Yes", "yes", True),
        ("0", "0", True),
    ],
)
def test_the_papers_scorer(prediction: str, gold: str, expected: bool) -> None:
    assert score(prediction, gold) is expected


def test_squad_normalisation() -> None:
    assert normalize_answer("  The  Empire-State, a Building! ") == "empirestate building"


def test_format_number_keeps_what_the_scorer_needs() -> None:
    assert format_number(8795.2) == "8795.2"
    assert format_number(9609286.6) == "9609286.6"
    assert format_number(0.000123456) == "0.0001235"
    assert format_number(2.0) == "2"


# -- knowledge base and rules -------------------------------------------------------------
def test_knowledge_base_lookup() -> None:
    assert KB.lookup("mariana trench").startswith("The Mariana Trench")
    assert KB.lookup("the Mariana Trench!").startswith("The Mariana Trench")  # close title
    missing = KB.lookup("Java Trench")
    assert missing.startswith("Could not find Java Trench")
    assert "Mariana Trench" in missing


def test_answer_rules() -> None:
    outputs = {1: "born in 1844 in London", 2: "founded in 1989; American", 3: 5.0, 4: 7.5}
    argmin = {"op": "argmin", "options": {"A": ["$1", "1844"], "B": ["$2", "1989"]}}
    assert apply_rule(argmin, outputs) == "A"
    assert apply_rule({"op": "argmax", "options": {"x": "$3", "y": "$4"}}, outputs) == "y"
    assert apply_rule({"op": "value", "ref": "$4"}, outputs) == "7.5"
    same = {"op": "same", "facts": [["$2", "american"], ["$2", "American"]]}
    assert apply_rule(same, outputs) == "yes"
    differ = {"op": "same", "facts": [["$1", "London"], ["$2", "American"]]}
    assert apply_rule(differ, outputs) == "no"
    choose = {"op": "choose", "answer": "B", "evidence": [["$2", "1989"]]}
    assert apply_rule(choose, outputs) == "B"


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "argmin", "options": {"A": ["$1", "1900"], "B": ["$2", "1989"]}},  # not in text
        {"op": "same", "facts": [["$1", "French"], ["$2", "American"]]},
        {"op": "choose", "answer": "A", "evidence": [["$9", "x"]]},  # no task 9
        {"op": "value", "ref": "$1"},  # text, not a number
        {"op": "value", "ref": "1"},  # not a reference
        {"op": "median"},
    ],
)
def test_rules_refuse_facts_the_outputs_do_not_hold(rule: dict[str, object]) -> None:
    with pytest.raises(BenchDataError):
        apply_rule(rule, {1: "born in 1844 in London", 2: "founded in 1989; American"})


def test_ungrounded_numbers() -> None:
    texts = ["depth 10,994 metres", "if 20% shallower"]
    assert ungrounded_numbers("10994 * (1 - 20/100)", texts, []) == []
    assert ungrounded_numbers("10994 * 0.8", texts, []) == [0.8]
    assert ungrounded_numbers("8795.2 + 1", [], [8795.2000001]) == []


async def test_the_oracle_runs_the_reference_plan_through_the_compiler() -> None:
    result = await oracle(TRENCHES)
    assert result.problems == []
    assert result.answer == "Mariana Trench"
    assert result.correct
    assert result.run is not None
    assert [t.output for t in result.run.tasks][2:] == pytest.approx([8795.2, 10051.2])


async def test_the_oracle_reports_an_invented_number_and_a_missing_article() -> None:
    bad = BenchQuestion(
        **{
            **TRENCHES.__dict__,
            "math": {3: "10994 * 0.8", 4: "8376 * (1 + 20/100)"},
            "plan": (*TRENCHES.plan[:1], 'search("Puerto Rico trench, the")', *TRENCHES.plan[2:]),
        }
    )
    result = await oracle(bad)
    assert any("0.8" in p for p in result.problems)
    wrong = BenchQuestion(**{**TRENCHES.__dict__, "gold": "Puerto Rico Trench"})
    result = await oracle(wrong)
    assert not result.correct
    assert any("the dataset says" in p for p in result.problems)


# -- reference texts for the baselines ----------------------------------------------------
def test_reference_steps_follow_the_plan() -> None:
    steps = react_steps(TRENCHES, "Mariana Trench")
    assert [s.splitlines()[1] for s in steps] == [
        'Action: search("Mariana Trench")',
        'Action: search("Puerto Rico Trench")',
        'Action: math("10994 * (1 - 20/100)")',
        'Action: math("8376 * (1 + 20/100)")',
        "Action: Finish(Mariana Trench)",
    ]
    turns = parallel_turns(TRENCHES, "Mariana Trench")
    assert len(turns) == 3  # the searches together, the arithmetic together, the answer
    assert turns[0].count('"search"') == 2
    assert turns[1].count('"math"') == 2


def test_every_workload_example_parses_in_its_format() -> None:
    for workload, by_system in EXAMPLES.items():
        plan = by_system["dagcall"].split("\n", 2)[2].split("\n", 1)[1]
        items, parser = parse_plan(plan, {"search", "math"})
        assert parser.finished, workload
        assert not [i for i in items if isinstance(i, Exception)], workload
        assert "Action: Finish(" in by_system["react"]
        assert by_system["parallel-fc"].rstrip().endswith("}")


# -- latency models ----------------------------------------------------------------------
async def test_simulated_model_timing_and_token_counts() -> None:
    profile = PROFILES["gpt-3.5"]
    model = SimulatedModel(
        lambda _: "1. search('A')\n2. search('B')\njoin()", profile, time_scale=0.02
    )
    messages = [Message("user", "word " * 400)]
    start = time.perf_counter()
    completion = await complete(model, messages)
    took = time.perf_counter() - start
    usage = completion.usage
    assert usage is not None
    assert not usage.estimated
    assert usage.input_tokens == count_tokens("word " * 400) + 4
    assert usage.output_tokens == count_tokens("1. search('A')\n2. search('B')\njoin()")
    expected = profile.time_to_first_token(usage.input_tokens)
    expected += (usage.output_tokens - 1) / profile.decode_tokens_per_second
    assert took >= expected * 0.02
    assert completion.time_to_first_token is not None
    assert completion.time_to_first_token >= profile.time_to_first_token(usage.input_tokens) * 0.02


async def test_simulated_model_streams_plan_lines_as_they_complete() -> None:
    model = SimulatedModel(lambda _: "1. a()\n2. b()\n", PROFILES["gpt-4"], time_scale=0.01)
    chunks = [c async for c in model.stream([Message("user", "q")]) if isinstance(c, str)]
    assert chunks == ["1. a()\n", "2. b()\n"]
    stopped = [
        c async for c in model.stream([Message("user", "q")], stop=["2."]) if isinstance(c, str)
    ]
    assert "".join(stopped) == "1. a()\n"


def test_web_latency_is_seeded_per_call() -> None:
    latency = WebLatency(median=0.6, sigma=0.35, seed=1)
    assert latency.of("q1", "search", "x") == latency.of("q1", "search", "x")
    draws = [latency.of("q", i) for i in range(2000)]
    assert len(set(draws)) == 2000
    assert 0.55 < sorted(draws)[1000] < 0.65
    assert WebLatency(seed=2).of("q1", "search", "x") != latency.of("q1", "search", "x")


async def test_with_latency_waits_then_calls_the_tool() -> None:
    @tool
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    slow = with_latency(double, WebLatency(median=1.0, sigma=0.0), key="k", time_scale=0.05)
    assert slow.render() == double.render()
    start = time.perf_counter()
    assert await slow.invoke({"x": 4}) == 8
    assert time.perf_counter() - start >= 0.05


# -- the critical-path bound -------------------------------------------------------------
def _task(
    id: int, parsed: float, start: float, end: float, deps: list[int], round: int = 0
) -> TaskRecord:
    return TaskRecord(
        id=id,
        tool="t",
        call="t()",
        round=round,
        parsed_at=parsed,
        started_at=start,
        ended_at=end,
        deps=tuple(deps),
    )


def _call(role: CallRole, start: float, end: float, round: int = 0) -> LLMCall:
    return LLMCall(role, "m", round, 0, 0, start, end, None)


def _run(usage: list[LLMCall], tasks: list[TaskRecord]) -> RunResult:
    return RunResult(question="q", usage=usage, tasks=tasks)


def test_critical_path_bound_by_hand() -> None:
    run = _run(
        [_call("planner", 0.1, 2.0), _call("joiner", 5.0, 6.0)],
        [
            _task(1, 1.0, 1.2, 2.2, []),  # could start at its line, 1.0 -> ends 2.0
            _task(2, 1.5, 1.5, 3.5, []),  # ends 3.5
            _task(3, 1.9, 3.9, 4.4, [1, 2]),  # deps done at 3.4 (shifted) -> ends 3.9
        ],
    )
    # shifted by -0.1: task 1 ends 1.9, task 2 ends 3.4, task 3 3.4 + 0.5 = 3.9; the plan ends
    # at 1.9; the joiner (1 s) follows the last task
    assert critical_path_bound(run) == pytest.approx(4.9)
    assert critical_path_bound(_run([_call("react", 0, 1)], [])) is None


def test_critical_path_bound_adds_rounds() -> None:
    run = _run(
        [
            _call("planner", 0.0, 1.0),
            _call("joiner", 2.0, 2.5),
            _call("planner", 2.6, 3.0, round=1),
            _call("joiner", 3.5, 4.0, round=1),
        ],
        [_task(1, 0.5, 0.5, 1.5, []), _task(2, 2.9, 2.9, 3.4, [1], round=1)],
    )
    # round 1: task ends 1.5, joiner 0.5 -> 2.0; round 2 starts at 2.0 (shift -0.6):
    # task parsed 2.3, ends 2.8, plan ends 2.4, joiner 0.5 -> 3.3
    assert critical_path_bound(run) == pytest.approx(3.3)


async def test_a_simulated_dagcall_run_is_close_to_its_bound() -> None:
    from dagcall.bench._systems import Setup, build_runner

    setup = Setup(profile=PROFILES["gpt-3.5"], time_scale=0.02)
    result = await build_runner("dagcall", TRENCHES, setup, "Mariana Trench")()
    assert result.answer == "Mariana Trench"
    bound = critical_path_bound(result)
    assert bound is not None
    assert bound <= result.wall_time
    planner = result.usage[0]
    searches = [t for t in result.tasks if t.tool == "search"]
    # both look-ups started while the plan was still streaming
    assert all(t.started_at is not None and t.started_at < planner.ended_at for t in searches)


def test_concurrent_simulated_streams_share_the_loop() -> None:
    async def main() -> float:
        model = SimulatedModel(lambda _: "x " * 20, PROFILES["gpt-3.5"], time_scale=0.01)
        await complete(model, [Message("user", "q")])  # loads the tokenizer, outside the timing
        start = time.perf_counter()
        await asyncio.gather(*(complete(model, [Message("user", "q")]) for _ in range(20)))
        return time.perf_counter() - start

    one = PROFILES["gpt-3.5"].time_to_first_token(5) + 20 / 70
    assert asyncio.run(main()) < 20 * one * 0.01  # overlapped, not one after another
