"""Plan reuse (PlanCache): a plan is reused only when the question has the stored one's shape
and the instantiated plan fits; otherwise it is at most the planner's example."""

from __future__ import annotations

import asyncio

import pytest

from dagcall import Compiler, PlanCache, ScriptedModel, TaskStatus, UsageError, tool

FINISH = "Thought: done.\nAction: Finish(the answer)"
HEIGHTS = {"Eiffel Tower": 330.0, "Statue of Liberty": 93.0, "Burj Khalifa": 828.0, "Big Ben": 96.0}


def plan(*lines: str) -> str:
    return "\n".join(lines) + "\n<END_OF_PLAN>"


@tool
async def height(landmark: str) -> float:
    """A landmark's height in metres."""
    await asyncio.sleep(0.01)
    return HEIGHTS[landmark]


@tool
def calculator(expression: str) -> float:
    """a + b."""
    a, _, b = expression.split()
    return float(a) + float(b)


@tool
def search(query: str) -> str:
    """Search."""
    return f"about {query}"


TOOLS = [height, calculator, search]
SUM_Q = "What is the combined height of the {} and the {}?"
SUM_PLAN = plan('1. height("{}")', '2. height("{}")', '3. calculator("$1 + $2")', '4. join("$3")')


def test_a_question_of_the_same_shape_reuses_the_plan_without_a_planner_call() -> None:
    cache = PlanCache()
    first = ScriptedModel([SUM_PLAN.format("Eiffel Tower", "Statue of Liberty")])
    compiler = Compiler(model=first, tools=TOOLS, plan_cache=cache)
    result = compiler.run(SUM_Q.format("Eiffel Tower", "Statue of Liberty"))
    assert result.answer == "423"
    assert len(cache) == 1
    assert result.rounds[0].plan_cache is None  # planned, then learned

    again = ScriptedModel([])  # no call at all: the plan is reused and the answer elided
    compiler = Compiler(model=again, tools=TOOLS, plan_cache=cache)
    result = compiler.run(SUM_Q.format("Burj Khalifa", "Big Ben"))
    assert result.answer == "924"
    assert result.usage == []
    assert result.rounds[0].plan_cache == "exact"
    assert [t.call for t in result.tasks][:2] == ['height("Burj Khalifa")', 'height("Big Ben")']
    assert all(t.status is TaskStatus.DONE for t in result.tasks)
    assert cache.stats()["exact_hits"] == 1


@pytest.mark.parametrize(
    "question",
    [
        'What is the combined height of the Big "Ben and the Eiffel Tower?',  # a quote
        "What is the combined height of the Big $1 and the Eiffel Tower?",  # a reference
        # far more than a name where a name was
        "What is the combined height of the tallest tower in the whole of France and the "
        "Eiffel Tower?",
        "What is the combined weight of the Eiffel Tower and Big Ben?",  # another question
    ],
)
def test_a_plan_is_reused_only_when_it_fits(question: str) -> None:
    cache = PlanCache(min_similarity=1.0)  # no examples either: only exact reuse or none
    cache.learn(
        SUM_Q.format("Eiffel Tower", "Statue of Liberty"),
        SUM_PLAN.format("Eiffel Tower", "Statue of Liberty"),
        ["height", "calculator"],
    )
    assert cache.lookup(question, ["height", "calculator"]) is None


def test_a_plan_with_more_of_the_question_in_it_is_an_example_only() -> None:
    cache = PlanCache()
    question = "How tall is the Eiffel Tower in metres?"
    assert cache.learn(
        question, plan('1. search("height of Eiffel Tower")', "2. join()"), ["search"]
    )
    hit = cache.lookup("How tall is the Burj Khalifa in metres?", ["search"])
    assert hit is not None
    assert hit.kind == "example"  # "height of Burj Khalifa" would be a guess
    # ... and the planner gets it as its example
    model = ScriptedModel([plan('1. search("Burj Khalifa height")', "2. join()"), FINISH])
    result = Compiler(model=model, tools=TOOLS, plan_cache=cache, check_answers=False).run(
        "How tall is the Burj Khalifa in metres?"
    )
    assert result.rounds[0].plan_cache == "example"
    assert question in model.calls[0].messages[0].content


def test_only_clean_one_round_runs_are_learned_and_only_their_tools_are_used() -> None:
    cache = PlanCache()
    failing = plan('1. height("Atlantis")', '2. join("$1")')  # a KeyError: not learned
    Compiler(  # the failed look-up goes to the joiner (no replan, no second look at it)
        model=ScriptedModel([failing, FINISH]), tools=TOOLS, plan_cache=cache, check_answers=False
    ).run("How tall is the Atlantis?")
    assert len(cache) == 0
    assert not cache.learn("q", "1. nosuchtool(1)\n2. join()", ["height"])  # does not parse
    assert cache.learn(
        "How tall is the Big Ben?", plan('1. height("Big Ben")', "2. join()"), ["height"]
    )
    assert cache.lookup("How tall is the Eiffel Tower?", ["search"]) is None  # no height tool
    assert cache.lookup("How tall is the Eiffel Tower?", ["height"]) is not None


def test_the_plan_cache_is_off_by_default_and_checked() -> None:
    compiler = Compiler(
        model=ScriptedModel([SUM_PLAN.format("Eiffel Tower", "Big Ben")]), tools=TOOLS
    )
    assert compiler.plan_cache is None
    with pytest.raises(UsageError, match="PlanCache"):
        Compiler(model=ScriptedModel([]), tools=TOOLS, plan_cache={})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        PlanCache(max_entries=0)
