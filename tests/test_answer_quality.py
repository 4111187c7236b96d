"""Per-question planner examples (ExampleBank), the answer checks and the joiner's grammar."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest

from dagcall import Compiler, ExampleBank, StopReason, TaskStatus, ToolError, tool
from dagcall._checks import (
    answer_problem,
    comparison_problem,
    expected_kind,
    grounded,
    listed_options,
    matching_option,
    name_to_look_up,
    nested_replan,
    settle_expression,
    size_of_difference,
    unasked_factor,
)
from dagcall._grammar import joiner_grammar
from dagcall._plan import parse_plan
from dagcall.models import ScriptedModel
from dagcall.tools import calculator, math_tool

POPULATION = {"varnholt": 52300, "ostvale": 35100, "quillmere": 26900}


@tool
def town_population(town: str) -> int:
    """The number of people living in a town, by the town's bare name."""
    try:
        return POPULATION[town.strip().lower()]
    except KeyError:
        raise ToolError(
            f"unknown town {town!r}; pass a bare town name such as 'Varnholt'"
        ) from None


@tool
def mayor_of(town: str) -> str:
    """The name of a town's mayor."""
    return "Ilse Marrow"


@tool
def archive(query: str) -> str:
    """Search the town archive and return a paragraph of text."""
    return "Varnholt is twinned with Ostvale."


TOOLS = [town_population, mayor_of, archive, calculator]


def plans_of(text: str) -> list[str]:
    """The plans in an examples text (between the Question lines and <END_OF_PLAN>)."""
    return [p.split("\n", 1)[1] for p in text.split("Question: ")[1:]]


# -- the example bank ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "pattern", "expression"),
    [
        ("How much larger is the population of Varnholt than Ostvale?", "more", '"$1 - $2"'),
        ("How many more people live in Varnholt than Ostvale?", "more", '"$1 - $2"'),
        ("How many fewer people live in Ostvale than in Varnholt?", "less", '"$2 - $1"'),
        ("How much smaller is Quillmere than Varnholt?", "less", '"$2 - $1"'),
        ("How many times the population of Ostvale is Varnholt's?", "ratio", '"$1 / $2"'),
        ("How many times more people live in Varnholt than Ostvale?", "ratio", '"$1 / $2"'),
        ("What is the average population of the three towns?", "average", "/ 3"),
        ("What is the combined population of Varnholt and Ostvale?", "total", '"$1 + $2'),
        ("What would Varnholt's population be after growing by 20%?", "percent", "(1 + 0.15)"),
        ("If the population of Varnholt grew by 10%, what would it be?", "percent", "(1 + "),
        ("What would Varnholt's population be if it fell by 20%?", "percent_down", "(1 - "),
        ("If Varnholt were 30% smaller, how many people would live there?", "percent_down", "(1 -"),
    ],
)
def test_the_bank_picks_the_pattern_the_wording_calls_for(
    question: str, pattern: str, expression: str
) -> None:
    bank = ExampleBank()
    assert bank.patterns(question)[0] == pattern
    text = bank.examples(question, TOOLS)
    assert text is not None
    first = plans_of(text)[0]
    assert expression in first  # the worked arithmetic of that pattern comes first
    assert "town_population(" in first  # the user's own tools
    assert "calculator(" in first
    for plan in plans_of(text):  # and every example is a plan that parses with them
        items, parser = parse_plan(plan, {t.name for t in TOOLS})
        assert parser.finished, plan
        assert all(hasattr(i, "tool") for i in items), plan


def test_choices_and_yes_no_questions_get_plans_the_joiner_answers() -> None:
    bank = ExampleBank()
    for question in (
        "Which of Varnholt, Ostvale and Quillmere has the most people?",
        "Is Varnholt more populous than Ostvale?",
    ):
        text = bank.examples(question, TOOLS, join_answer=True)
        assert text is not None
        first = plans_of(text)[0]
        assert "calculator(" not in first, first
        assert 'join("' not in first, first


def test_a_chain_passes_the_name_one_tool_gives_to_the_next() -> None:
    text = ExampleBank().examples("What is the population of the town of the mayor of X?", TOOLS)
    assert text is not None
    assert 'mayor_of("Amber")\n' in text
    assert 'town_population("$1")' in text


def test_numbers_are_answered_by_name_when_plans_may_name_their_answer() -> None:
    q = "How much larger is the population of Varnholt than Ostvale?"
    with_join = ExampleBank().examples(q, TOOLS, join_answer=True)
    without = ExampleBank().examples(q, TOOLS, join_answer=False)
    assert with_join is not None
    assert 'join("$3")' in with_join
    assert without is not None
    assert 'join("$' not in without


def test_tools_the_bank_cannot_cast_keep_the_built_in_example() -> None:
    # a text search and the LLM math tool only (the paper's tools): no look-up to cast
    assert ExampleBank().examples("How much larger is A than B?", [archive, math_tool()]) is None

    @tool
    def send_mail(to: str) -> str:
        """Send a mail."""
        return "sent"

    assert ExampleBank().examples("Is A larger?", [send_mail]) is None  # text, not a value
    compiler = Compiler(
        ScriptedModel(['1. archive("x")\n2. join()']), [archive], examples=ExampleBank()
    )
    system = compiler.planner_messages("How much larger is A than B?")[0].content
    assert "lookup(" in system  # the built-in example's made-up tools


def test_the_compiler_puts_the_chosen_examples_in_the_planner_prompt() -> None:
    compiler = Compiler(ScriptedModel([]), TOOLS, examples=ExampleBank())
    system = compiler.planner_messages("How many fewer people live in Ostvale than Varnholt?")[0]
    assert 'calculator("$2 - $1")' in system.content
    assert "lookup(" not in system.content
    other = compiler.planner_messages("What is the average population of the towns?")[0]
    assert "/ 3" in other.content
    assert 'calculator("$2 - $1")' not in other.content


class Shipment(TypedDict):
    carrier: str
    weight_kg: float


@tool
def shipment(order: str) -> Shipment:
    """An order's shipment record."""
    return {"carrier": "Ostline", "weight_kg": 4.5}


@tool
def carrier_rating(carrier: str) -> float:
    """A carrier's rating out of 5."""
    return 4.2


@tool
def fare(route: str, fare_class: str) -> float:
    """The fare of a route in a fare class ("economy" or "first")."""
    return 120.0


@tool
def delivery_days(depot: str, town: str) -> int:
    """How many days a delivery from a depot to a town takes."""
    return 3


RECORD_TOOLS = [shipment, carrier_rating, fare, delivery_days, calculator]


def _parses(text: str, tools: list[Any]) -> None:
    for plan in plans_of(text):
        items, parser = parse_plan(plan, {t.name for t in tools})
        assert parser.finished, plan
        assert all(hasattr(i, "tool") for i in items), plan


def test_a_lookup_of_two_arguments_is_cast_with_its_other_argument_made_up() -> None:
    text = ExampleBank().examples("What is the combined fare of the routes A and B?", RECORD_TOOLS)
    assert text is not None
    first = plans_of(text)[0]
    assert 'fare("Amber", "Elm")' in first
    assert 'calculator("$1 + $2 + $3")' in first
    assert "(fare class Elm)?" in text.split("Question: ")[1].splitlines()[0]
    _parses(text, RECORD_TOOLS)


def test_the_lookup_is_chosen_by_its_name_first_and_word_forms_count() -> None:
    # "delivers" is a form of "delivery": the tool named for it wins over a fuller description
    bank = ExampleBank()
    text = bank.examples("Which depot delivers to Telsby fastest, North or South?", RECORD_TOOLS)
    assert text is not None
    assert "delivery_days(" in plans_of(text)[0]


def test_a_record_is_never_cast_as_a_number_and_its_fields_drive_the_examples() -> None:
    bank = ExampleBank()
    # the question names a field that another tool takes: a chain through $1.carrier
    text = bank.examples("What is the rating of the carrier of order 17?", RECORD_TOOLS)
    assert text is not None
    first = plans_of(text)[0]
    assert 'shipment("Amber")\n' in first
    assert 'carrier_rating("$1.carrier")' in first
    # a number field in arithmetic: $1.weight_kg (and "weighs" is a form of "weight")
    text = bank.examples("How much do 3 of order 17's parcels weigh in all?", RECORD_TOOLS)
    assert text is not None
    assert 'calculator("$1.weight_kg * 3")' in plans_of(text)[0]
    _parses(text, RECORD_TOOLS)
    # a field asked for as it stands: read it, no arithmetic
    text = bank.examples("How much does the parcel of order 17 weigh?", RECORD_TOOLS)
    assert text is not None
    first = plans_of(text)[0]
    assert first.startswith('1. shipment("Amber")\nThought: The answer is the weight_kg field')
    assert "calculator(" not in first
    # a question about no field: the record tool is not summed or compared as a number
    text = bank.examples("How much larger is A's fare than B's?", RECORD_TOOLS)
    assert text is not None
    assert "shipment(" not in text

    @tool
    def save_note(title: str, body: str) -> None:
        """Save a note."""

    assert "save_note(" not in (
        bank.examples("What is the total of A and B?", [save_note, fare, calculator]) or ""
    )
    assert bank.examples("What is the total of A and B?", [save_note, calculator]) is None
    only_records = [shipment, calculator]
    assert bank.examples("How much larger is A than B?", only_records) is None


def test_a_count_of_things_gets_the_multiple_pattern() -> None:
    bank = ExampleBank()
    assert bank.patterns("What do 4 first-class fares on route A cost?")[0] == "times"
    assert "times" in bank.patterns("What is the total weight of 3 parcels?")
    for question in (
        "What was the fare in 2019?",
        "If the fare rose by 10%, what would it be?",
        "How many times larger is A than B?",
        "How much does the parcel of order 17 weigh?",  # an identifier, not a count
    ):
        assert "times" not in bank.patterns(question), question
    text = bank.examples("What do 4 economy fares on route A cost?", RECORD_TOOLS)
    assert text is not None
    assert 'calculator("$1 * 4")' in plans_of(text)[0]


def test_a_failed_call_on_a_whole_record_is_told_how_to_select_a_field() -> None:
    plan = (
        '1. shipment("17")\n2. calculator("$1 * 3")\n3. carrier_rating("$1")\n'
        '4. calculator("2 *")\n5. join()\n<END_OF_PLAN>'
    )
    joiner = ScriptedModel(["Thought: failed.\nAction: Finish(none)"])
    compiler = Compiler(
        planner_model=ScriptedModel([plan]),
        joiner_model=joiner,
        tools=RECORD_TOOLS,
        max_replans=0,
        check_answers=False,
    )
    run = compiler.run("What do 3 of order 17's parcels weigh?")
    spliced, whole, plain = run.tasks[1], run.tasks[2], run.tasks[3]
    assert spliced.status is TaskStatus.FAILED
    note = "$1 is a record with the fields carrier, weight_kg; pass one of them by selecting it"
    assert note + ", as in $1.weight_kg" in spliced.observation  # a number field first
    assert whole.status is TaskStatus.FAILED  # a dict where a str was wanted
    assert note in whole.observation
    assert plain.status is TaskStatus.FAILED
    assert "record" not in plain.observation  # no record in its arguments, no note
    assert "$1.weight_kg" in joiner.calls[0].messages[-1].content  # the joiner sees it


def test_a_failed_call_that_names_itself_or_a_later_task_is_told_so() -> None:
    plan = (
        '1. fare("A", "economy")\n2. calculator("$1 * $2")\n3. calculator("$1 + ${4}")\n'
        '4. calculator("$1 * 2")\n5. join()\n<END_OF_PLAN>'
    )
    compiler = Compiler(
        planner_model=ScriptedModel([plan]),
        joiner_model=ScriptedModel(["Thought: x.\nAction: Finish(x)"]),
        tools=RECORD_TOOLS,
        max_replans=0,
        check_answers=False,
    )
    run = compiler.run("What do two economy fares on route A cost?")
    own = run.tasks[1]
    assert own.status is TaskStatus.FAILED
    assert "$2 in task 2's arguments is not an earlier task, so it stayed text" in own.observation
    assert "numbered before it" in own.observation
    assert run.tasks[3].status is TaskStatus.DONE  # a right task gets no note
    assert "note" not in run.tasks[3].observation


def test_per_question_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_question"):
        ExampleBank(per_question=0)


# -- the answer checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Which is taller, A or B?", "choice"),
        ("Who was born first?", "choice"),
        ("Is A taller than B?", "yesno"),
        ("Did the company exist in 1990?", "yesno"),
        ("Whether A is older", "yesno"),
        ("How much larger is A than B?", "number"),
        ("How many moons has A?", "number"),
        ("What is the total length of the rivers?", "number"),
        ("If A grew by 10% and B fell by 5%, what would the combined population be?", "number"),
        ("Given that A doubles, what is the ratio of the largest to the smallest?", "number"),
        ("If A grew by 10%, how many people would live there?", "number"),
        ("I wonder how many people live there", None),
        ("What is the population of the capital of Xland?", "number"),
        ("What was the average yearly rainfall?", "number"),
        ("Name the capital of Xland.", None),
    ],
)
def test_expected_kind(question: str, kind: str | None) -> None:
    assert expected_kind(question) == kind


@pytest.mark.parametrize(
    ("answer", "value"),
    [("9800 - 3150", "6650"), ("(3 + 4) * 2", "14"), ("10 / 4", "2.5"), ("2^3", "8")],
)
def test_an_answer_that_is_only_arithmetic_is_computed(answer: str, value: str) -> None:
    assert settle_expression(answer) == value


@pytest.mark.parametrize(
    "answer", ["6650", "K2", "1990-1995", "about 3 + 4 people", "__import__('os')", "1 / 0", ""]
)
def test_other_answers_are_not_computed(answer: str) -> None:
    assert settle_expression(answer) is None


def test_answers_of_the_wrong_kind_are_found() -> None:
    results = ["52300", "35100"]
    assert answer_problem("Which is larger, Varnholt or Ostvale?", "52300", results)
    assert answer_problem("Which is larger, Varnholt or Ostvale?", "Varnholt", results) is None
    among_values = "Which value is larger: the difference of A and B, or the sum of C and D?"
    assert answer_problem(among_values, "52300", results) is None  # a number is the choice
    assert answer_problem("Is Varnholt larger than Ostvale?", "Varnholt", results)
    assert answer_problem("Which town is older, Varnholt or Ostvale?", "Yes", results)
    assert (
        answer_problem("Is Varnholt or Ostvale older?", "Yes", results) is None
    )  # yes/no fits too
    assert answer_problem("Is Varnholt larger than Ostvale?", "Yes, it is.", results) is None
    assert answer_problem("How much larger is Varnholt than Ostvale?", "Varnholt", results)
    assert answer_problem("How much larger is Varnholt than Ostvale?", "17200", results) is None
    assert answer_problem("What is X?", "", results)


def test_a_number_no_result_supports_is_found() -> None:
    results = ["Varnholt has 52,300 people.", "35100"]
    q = "How much larger is Varnholt than Ostvale?"
    assert answer_problem(q, "17,200 people", results) is None  # a difference of two results
    assert answer_problem(q, "52300", results) is None  # a result itself
    assert answer_problem(q, "9", results) is not None  # neither
    assert answer_problem(q, "48213", results) is not None
    assert grounded(87400, [52300, 35100], [])  # a sum
    assert grounded(1.49, [52300, 35100], [])  # a ratio
    assert grounded(57530, [52300], [10])  # 10% more, the percentage from the question
    assert grounded(38100, [52300, 35100, 26900], [])  # the mean of three
    assert not grounded(12345, [52300, 35100], [])


def test_a_round_number_is_not_an_answer_by_itself_but_a_scaled_result_is() -> None:
    """A joiner with no temperature for one star answered 1000: a round number must be
    supported like any other, while a result in another metric unit (7200 m as 7.2 km) or
    as a percentage (0.42 as 42) still counts as that result."""
    q = "How many kelvin hotter is the star Zephrel orbits than the star Ossuin?"
    assert answer_problem(q, "1000", ["Brannoch", "7200"]) is not None
    assert answer_problem(q, "100", ["Brannoch", "7200"]) is not None
    assert answer_problem("How many are there?", "2", ["7200"]) is None  # a small count
    assert grounded(7.2, [7200], [])
    assert grounded(1600, [1.6], [])
    assert grounded(42, [0.42], [])
    assert not grounded(7.3, [7200], [])


# -- the checks in a run -------------------------------------------------------------------

PLAN = '1. town_population("Varnholt")\n2. town_population("Ostvale")\n3. join()\n<END_OF_PLAN>'


def test_the_sum_or_mean_of_several_one_number_results_is_grounded() -> None:
    question = "If A, B, C and D each grew by 10%, what would be their average height?"
    observations = ["A is 540.1 m tall.", "B is 828 m tall.", "594.11", "910.8", "487.5", "608.6"]
    mean = (594.11 + 910.8 + 487.5 + 608.6) / 4
    assert answer_problem(question, f"{mean:.2f}", observations) is None
    assert answer_problem(question, f"{mean * 4:.2f}", observations) is None  # their sum
    assert grounded(mean, [], [], [594.11, 910.8, 487.5, 608.6])
    assert not grounded(mean * 3.7, [], [], [594.11, 910.8, 487.5, 608.6])


def test_an_expression_after_an_if_clause_is_computed() -> None:
    joiner = ScriptedModel(["Thought: Add them.\nAction: Finish(52300 + 35100)"])
    compiler = Compiler(planner_model=ScriptedModel([PLAN]), joiner_model=joiner, tools=TOOLS)
    run = compiler.run("If Varnholt and Ostvale merged, what would the combined population be?")
    assert run.answer == "87400"
    assert len(joiner.calls) == 1


def test_a_number_where_a_name_was_asked_is_put_to_the_joiner_again() -> None:
    joiner = ScriptedModel(
        [
            "Thought: The larger is 52300.\nAction: Finish(52300)",
            "Thought: Varnholt has more people.\nAction: Finish(Varnholt)",
        ]
    )
    compiler = Compiler(planner_model=ScriptedModel([PLAN]), joiner_model=joiner, tools=TOOLS)
    run = compiler.run("Which town has more people, Varnholt or Ostvale?")
    assert run.answer == "Varnholt"
    assert len(run.rounds) == 1
    assert "asks which one" in run.rounds[0].answer_checks[0]
    assert [c.role for c in run.usage] == ["planner", "joiner", "joiner"]
    again = joiner.calls[1].messages  # the joiner saw its first reply and what was wrong
    assert again[-2].content.endswith("Finish(52300)")
    assert "asks which one" in again[-1].content


def test_without_checks_the_first_answer_stands() -> None:
    joiner = ScriptedModel(["Thought: 52300.\nAction: Finish(52300)"])
    compiler = Compiler(
        planner_model=ScriptedModel([PLAN]), joiner_model=joiner, tools=TOOLS, check_answers=False
    )
    run = compiler.run("Which town has more people, Varnholt or Ostvale?")
    assert run.answer == "52300"
    assert run.rounds[0].answer_checks == []


def test_an_expression_answer_is_computed_without_another_call() -> None:
    joiner = ScriptedModel(["Thought: Subtract.\nAction: Finish(52300 - 35100)"])
    compiler = Compiler(planner_model=ScriptedModel([PLAN]), joiner_model=joiner, tools=TOOLS)
    run = compiler.run("How much larger is Varnholt than Ostvale?")
    assert run.answer == "17200"
    assert len(run.usage) == 2
    assert "computed" in run.rounds[0].answer_checks[0]


def test_failed_calls_are_replanned_before_any_joiner_call() -> None:
    bad = '1. town_population("population of Varnholt")\n2. join("$1")\n<END_OF_PLAN>'
    good = '2. town_population("Varnholt")\n3. join("$2")\n<END_OF_PLAN>'
    planner = ScriptedModel([bad, good])
    joiner = ScriptedModel([])  # never called: the first round failed, the second is named
    compiler = Compiler(planner_model=planner, joiner_model=joiner, tools=TOOLS)
    run = compiler.run("What is the population of Varnholt?")
    assert run.answer == "52300"
    assert run.stop_reason is StopReason.FINISH
    first = run.rounds[0]
    assert first.decision == "replan"
    assert "pass a bare town name" in (first.replan_reason or "")
    assert run.tasks[0].status is TaskStatus.FAILED
    replan_prompt = planner.calls[1].messages[-1].content
    assert "pass a bare town name" in replan_prompt
    assert "failed" in replan_prompt
    assert [c.role for c in run.usage] == ["planner", "planner"]


def test_in_the_last_round_failures_go_to_the_joiner() -> None:
    bad = '1. town_population("population of Varnholt")\n2. join()\n<END_OF_PLAN>'
    joiner = ScriptedModel(["Thought: The look-up failed.\nAction: Finish(unknown)"])
    compiler = Compiler(
        planner_model=ScriptedModel([bad]), joiner_model=joiner, tools=TOOLS, max_replans=0
    )
    run = compiler.run("Name the population of Varnholt.")
    assert run.answer == "unknown"
    assert len(joiner.calls) == 1


def _still_unsupported(max_replans: int) -> tuple[ScriptedModel, ScriptedModel, Compiler]:
    bad = (
        '1. town_population("Varnholt")\n2. town_population("population of Ostvale")\n'
        "3. join()\n<END_OF_PLAN>"
    )
    good = '4. town_population("Ostvale")\n5. join()\n<END_OF_PLAN>'
    planner = ScriptedModel([bad, good])
    joiner = ScriptedModel(
        [
            "Thought: About that.\nAction: Finish(48213)",
            "Thought: I stand by it.\nAction: Finish(48213)",
            "Thought: Subtract.\nAction: Finish(17200)",
        ]
    )
    compiler = Compiler(
        planner_model=planner, joiner_model=joiner, tools=TOOLS, max_replans=max_replans
    )
    return planner, joiner, compiler


def test_an_answer_still_unsupported_after_the_re_ask_replans_the_failed_calls() -> None:
    """The joiner made a number up, was shown that no result supports it, and made it up
    again, while a call it needed had failed with a hint: the failed call is replanned with
    its error, instead of the made-up number standing."""
    planner, _, compiler = _still_unsupported(max_replans=1)
    run = compiler.run("How many more people live in Varnholt than in Ostvale?")
    assert run.answer == "17200"
    first = run.rounds[0]
    assert first.decision == "replan"
    assert first.answer is None
    assert "still unsupported" in first.answer_checks[-1]
    assert "pass a bare town name" in (first.replan_reason or "")
    assert "pass a bare town name" in planner.calls[1].messages[-1].content
    assert [c.role for c in run.usage] == ["planner", "joiner", "joiner", "planner", "joiner"]


def test_an_expression_the_calculator_refused_is_mended_like_a_tool_error() -> None:
    """The calculator's own error (a subclass of ToolError) says how to mend the call."""

    @tool
    def town_record(town: str) -> dict[str, object]:
        """A town's record: its name and population."""
        return {"town": town, "population": POPULATION[town.strip().lower()]}

    bad = '1. town_record("Varnholt")\n2. calculator("$1 - 35100")\n3. join()\n<END_OF_PLAN>'
    good = '4. calculator("$1.population - 35100")\n5. join()\n<END_OF_PLAN>'
    planner = ScriptedModel([bad, good])
    made_up = "Thought: About that.\nAction: Finish(48213)"
    joiner = ScriptedModel([made_up, made_up, "Thought: Done.\nAction: Finish(17200)"])
    compiler = Compiler(
        planner_model=planner, joiner_model=joiner, tools=[town_record, calculator], max_replans=1
    )
    run = compiler.run("How many more people live in Varnholt than the 35100 of Ostvale?")
    assert run.answer == "17200"
    assert "still unsupported" in run.rounds[0].answer_checks[-1]
    assert "$1.population" in (run.rounds[0].replan_reason or "")


def test_a_timed_out_call_is_not_mended_by_a_replan() -> None:
    @tool(timeout=0.1)
    async def slow_population(town: str) -> int:
        """The number of people living in a town."""
        await asyncio.sleep(5)
        return 0

    plan = '1. slow_population("Varnholt")\n2. join()\n<END_OF_PLAN>'
    made_up = "Thought: About that.\nAction: Finish(48213)"
    joiner = ScriptedModel([made_up, made_up])
    compiler = Compiler(
        planner_model=ScriptedModel([plan]),
        joiner_model=joiner,
        tools=[slow_population],
        max_replans=1,
    )
    run = compiler.run("How many people live in Varnholt?")
    assert run.answer == "48213"
    assert len(run.rounds) == 1
    assert not any("still unsupported" in c for c in run.rounds[0].answer_checks)


def test_in_the_last_round_the_re_asked_answer_stands() -> None:
    _, joiner, compiler = _still_unsupported(max_replans=0)
    run = compiler.run("How many more people live in Varnholt than in Ostvale?")
    assert run.answer == "48213"
    assert len(run.rounds) == 1
    assert len(joiner.calls) == 2


# -- the joiner's grammar ------------------------------------------------------------------


def test_the_joiner_grammar_parses_and_follows_may_replan() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for may in (True, False):
        llama_cpp.LlamaGrammar.from_string(joiner_grammar(may_replan=may), verbose=False)
    assert "Replan(" in joiner_grammar(may_replan=True)
    assert "Replan(" not in joiner_grammar(may_replan=False)


def test_a_grammar_capable_joiner_is_given_the_grammar() -> None:
    joiner = ScriptedModel(["Thought: ok.\nAction: Finish(Varnholt)"], supports_grammar=True)
    compiler = Compiler(
        planner_model=ScriptedModel([PLAN]), joiner_model=joiner, tools=TOOLS, max_replans=0
    )
    assert compiler.run("Which is larger, Varnholt or Ostvale?").answer == "Varnholt"
    grammar = joiner.calls[0].grammar or ""
    assert "Finish(" in grammar
    assert "Replan(" not in grammar  # the last round: no replan


def test_the_joiner_is_told_when_calls_failed_and_it_may_replan() -> None:
    bad = '1. town_population("population of Varnholt")\n2. join()\n<END_OF_PLAN>'
    joiner = ScriptedModel(["Thought: It failed.\nAction: Replan(use the bare name)", FINISH_YES])
    planner = ScriptedModel([bad, '2. town_population("Varnholt")\n3. join()\n<END_OF_PLAN>'])
    compiler = Compiler(planner_model=planner, joiner_model=joiner, tools=TOOLS, max_replans=1)
    run = compiler.run("Is Varnholt home to more than 50000 people?")
    assert run.answer == "yes"
    first, last = (c.messages[-1].content for c in joiner.calls)
    assert "Some calls failed" in first  # it may replan: told so
    assert "Some calls failed" not in last  # the last round, and nothing failed in it


FINISH_YES = "Thought: The result says 52300, which is more.\nAction: Finish(yes)"


def test_timeouts_and_refusals_are_not_replanned_unasked() -> None:
    import asyncio

    @tool(timeout=0.05)
    async def slow_population(town: str) -> int:
        """A slow look-up."""
        await asyncio.sleep(5)
        return 1

    plan = '1. slow_population("Varnholt")\n2. join("$1")\n<END_OF_PLAN>'
    joiner = ScriptedModel(["Thought: It timed out.\nAction: Finish(unknown)"])
    compiler = Compiler(
        planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=[slow_population]
    )
    run = compiler.run("Name the population of Varnholt.")
    assert run.tasks[0].status is TaskStatus.FAILED
    assert run.answer == "unknown"  # the joiner decided; no replan was forced
    assert [c.role for c in run.usage] == ["planner", "joiner"]


def test_the_joiner_sees_each_tools_numbers_in_order() -> None:
    plan = (
        '1. town_population("Quillmere")\n2. town_population("Varnholt")\n'
        '3. town_population("Ostvale")\n4. join()\n<END_OF_PLAN>'
    )
    joiner = ScriptedModel(["Thought: Varnholt is first.\nAction: Finish(Varnholt)"])
    compiler = Compiler(planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=TOOLS)
    assert compiler.run("Which of the three towns has the most people?").answer == "Varnholt"
    prompt = joiner.calls[0].messages[-1].content
    assert (
        'town_population results, highest first: town_population("Varnholt") = 52300, '
        'town_population("Ostvale") = 35100, town_population("Quillmere") = 26900; '
        'the lowest: town_population("Quillmere") = 26900'
    ) in prompt


def test_the_lowest_is_named_even_when_the_order_is_cut() -> None:
    @tool
    def depth(lake: str) -> int:
        """A lake's depth in metres."""
        return 10 * int(lake.removeprefix("L"))

    calls = "".join(f'{i}. depth("L{i}")\n' for i in range(1, 11))
    joiner = ScriptedModel(["Thought: L1.\nAction: Finish(L1)"])
    plan = ScriptedModel([calls + "11. join()\n<END_OF_PLAN>"])
    compiler = Compiler(planner_model=plan, joiner_model=joiner, tools=[depth])
    compiler.run("Which of the ten lakes is shallowest?")
    line = next(
        x for x in joiner.calls[0].messages[-1].content.splitlines() if "highest first" in x
    )
    assert line.count(" = ") == 9  # eight in order, then the lowest
    assert 'depth("L3") = 30' in line
    assert 'depth("L2")' not in line
    assert line.endswith('; the lowest: depth("L1") = 10')


def test_one_number_or_text_results_get_no_order() -> None:
    joiner = ScriptedModel(["Thought: ok.\nAction: Finish(52300)"])
    plan = '1. town_population("Varnholt")\n2. archive("Varnholt")\n3. join()\n<END_OF_PLAN>'
    compiler = Compiler(planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=TOOLS)
    compiler.run("How many people live in Varnholt?")
    assert "highest first" not in joiner.calls[0].messages[-1].content


def test_a_text_named_as_the_answer_to_a_number_question_goes_to_the_joiner() -> None:
    plan = '1. archive("Druvania")\n2. join("$1")\n<END_OF_PLAN>'
    joiner = ScriptedModel(["Thought: The archive does not say.\nAction: Finish(52300)"])
    compiler = Compiler(
        planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=TOOLS, max_replans=0
    )
    run = compiler.run("What is the population of the capital of Druvania?")
    assert not run.rounds[0].joiner_elided  # "Varnholt is twinned ..." is no number
    assert [c.role for c in run.usage] == ["planner", "joiner"]


def test_a_named_answer_that_leaves_a_result_unread_goes_to_the_joiner() -> None:
    # the plan stopped short: task 3 is computed but the named answer, task 1, does not use it
    plan = (
        '1. town_population("Varnholt")\n2. town_population("Ostvale")\n'
        '3. calculator("$1 + $2")\n4. join("$1")\n<END_OF_PLAN>'
    )
    joiner = ScriptedModel(["Thought: Task 3 adds them.\nAction: Finish(87400)"])
    compiler = Compiler(
        planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=TOOLS, max_replans=0
    )
    run = compiler.run("What is the combined population of Varnholt and Ostvale?")
    assert not run.rounds[0].joiner_elided
    assert run.answer == "87400"
    assert [c.role for c in run.usage] == ["planner", "joiner"]
    # and when the named task uses every result, the joiner is skipped as before
    whole = plan.replace('join("$1")', 'join("$3")')
    run = Compiler(
        planner_model=ScriptedModel([whole]), joiner_model=ScriptedModel([]), tools=TOOLS
    ).run("What is the combined population of Varnholt and Ostvale?")
    assert run.rounds[0].joiner_elided
    assert run.answer == "87400"


def test_a_replan_that_only_repeats_calls_may_not_replan_again() -> None:
    first = '1. town_population("Varnholt")\n2. join()\n<END_OF_PLAN>'
    again = '2. town_population("Varnholt")\n3. join()\n<END_OF_PLAN>'
    joiner = ScriptedModel(
        [
            "Thought: Not sure.\nAction: Replan(more)",
            "Thought: It is 52300.\nAction: Finish(52300)",
        ],
        supports_grammar=True,
    )
    compiler = Compiler(
        planner_model=ScriptedModel([first, again]),
        joiner_model=joiner,
        tools=TOOLS,
        max_replans=3,
    )
    run = compiler.run("How many people live in Varnholt?")
    assert run.answer == "52300"
    assert "Replan(" in (joiner.calls[0].grammar or "")
    assert "Replan(" not in (joiner.calls[1].grammar or "")  # nothing new came back
    assert "only repeated calls" in run.rounds[1].answer_checks[0]
    # a replan with a new call may still replan
    other = '2. town_population("Ostvale")\n3. join()\n<END_OF_PLAN>'
    joiner = ScriptedModel(
        ["Thought: ?\nAction: Replan(more)", "Thought: ok\nAction: Finish(1)"],
        supports_grammar=True,
    )
    Compiler(
        planner_model=ScriptedModel([first, other]),
        joiner_model=joiner,
        tools=TOOLS,
        max_replans=3,
    ).run("How many people live in Varnholt?")
    assert "Replan(" in (joiner.calls[1].grammar or "")


def test_the_replanner_is_told_to_take_a_suggested_name() -> None:
    first = '1. archive("Varnholt")\n2. join()\n<END_OF_PLAN>'
    planner = ScriptedModel([first, '2. town_population("Varnholt")\n3. join()\n<END_OF_PLAN>'])
    joiner = ScriptedModel(
        ["Thought: ?\nAction: Replan(population)", "Thought: ok\nAction: Finish(52300)"]
    )
    Compiler(planner_model=planner, joiner_model=joiner, tools=TOOLS).run(
        "How many people live in Varnholt?"
    )
    assert "suggested name exactly" in planner.calls[1].messages[-1].content


# -- questions that list their options ------------------------------------------------------

OPTIONS_Q = (
    "Find a town like Varnholt and Ostvale\nOptions:\n(A) Quillmere\n(B) Port Quillmere\n"
    '(C) Love #9 "Town"\n\nAnswer with one.'
)


def test_listed_options_are_read_one_a_line() -> None:
    assert listed_options(OPTIONS_Q) == ["Quillmere", "Port Quillmere", 'Love #9 "Town"']
    assert listed_options("Options:\n- only one") == []
    assert listed_options("Which town, Varnholt or Ostvale?") == []
    assert listed_options("Choices:\n1. Amber\n2. Birch\n") == ["Amber", "Birch"]


@pytest.mark.parametrize(
    ("answer", "option"),
    [
        ("quillmere.", "Quillmere"),
        ("The answer is Port Quillmere", "Port Quillmere"),  # the longer name, not both
        ('love #9 "town"', 'Love #9 "Town"'),
        ("No similar town found", None),
        ("Quillmere or Love #9 Town", None),  # two options named
    ],
)
def test_an_answer_names_one_option_or_none(answer: str, option: str | None) -> None:
    assert matching_option(answer, listed_options(OPTIONS_Q)) == option


def test_an_answer_outside_the_options_is_put_to_the_joiner_again() -> None:
    assert answer_problem(OPTIONS_Q, "Quillmere", ()) is None
    problem = answer_problem(OPTIONS_Q, "None of them", ()) or ""
    assert "exactly one of Quillmere; Port Quillmere" in problem
    plan = '1. archive("Varnholt")\n2. join()\n<END_OF_PLAN>'
    joiner = ScriptedModel(
        [
            "Thought: No town matches.\nAction: Finish(No similar town found)",
            "Thought: Quillmere is closest.\nAction: Finish(Quillmere)",
        ],
        supports_grammar=True,
    )
    compiler = Compiler(
        planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=TOOLS, max_replans=0
    )
    run = compiler.run(OPTIONS_Q)
    assert run.answer == "Quillmere"
    assert "lists its options" in run.rounds[0].answer_checks[0]
    grammar = joiner.calls[0].grammar or ""  # a grammar-capable joiner can only pick one
    assert '"Finish(" ("Quillmere" | "Port Quillmere" | "Love #9 \\"Town\\"") ")"' in grammar


def test_the_joiner_grammar_with_options_parses() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for may in (True, False):
        options = ["Fargo", 'Love "Potion" #9', "Amélie", "Film 😀"]
        grammar = joiner_grammar(may_replan=may, answers=options)
        llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
        assert ("Replan(" in grammar) is may
        assert '"Amélie" | "Film 😀"' in grammar  # as UTF-8, not as \\u escapes


def test_the_bank_is_the_default_and_builtin_keeps_the_one_example() -> None:
    question = "How many fewer people live in Ostvale than Varnholt?"
    default = Compiler(ScriptedModel([]), TOOLS).planner_messages(question)[0].content
    assert 'calculator("$2 - $1")' in default
    builtin = Compiler(ScriptedModel([]), TOOLS, examples="builtin").planner_messages(question)
    assert "lookup(" in builtin[0].content
    assert 'town_population("Amber")' not in builtin[0].content
    mine = Compiler(ScriptedModel([]), TOOLS, examples="Question: mine").planner_messages(question)
    assert "Question: mine" in mine[0].content
    assert "lookup(" not in mine[0].content


def test_the_fields_of_records_are_read_as_data_only() -> None:
    import dataclasses

    from pydantic import BaseModel

    from dagcall._plan import record_fields

    class Parcel(BaseModel):
        carrier: str
        weight_kg: float

    @dataclasses.dataclass
    class Box:
        side: int

    class Hostile:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("no")

    assert record_fields({"a": 1, 2: "x"}) == {"a": 1}
    assert record_fields(Parcel(carrier="Ostline", weight_kg=2.0)) == {
        "carrier": "Ostline",
        "weight_kg": 2.0,
    }
    assert record_fields(Box(3)) == {"side": 3}
    assert record_fields(Box) == {}  # the class, not an instance
    assert record_fields(Hostile()) == {}
    assert record_fields("text") == record_fields([1, 2]) == {}


# -- answers that contradict the order of what one tool measured ---------------------------

YEARS = [
    ("founding_year", {"town": "Quillmere"}, 1820.0),
    ("founding_year", {"town": "Ostvale"}, 1702.0),
]
AGES = [("age_of", {"person": "Ilse"}, 41.0), ("age_of", {"person": "Bram"}, 67.0)]
PRICES = [
    ("unit_price", {"product": "Morrow rope", "currency": "crown"}, 4.5),
    ("unit_price", {"product": "Tesk kettle", "currency": "crown"}, 12.0),
    ("unit_price", {"product": "Fenwick stove", "currency": "crown"}, 90.0),
]


@pytest.mark.parametrize(
    ("question", "measured", "wrong", "right"),
    [
        ("Which town is older, Quillmere or Ostvale?", YEARS, "Quillmere", "Ostvale"),
        ("Which town was founded first, Quillmere or Ostvale?", YEARS, "Quillmere", "Ostvale"),
        ("Which town is newer, Quillmere or Ostvale?", YEARS, "Ostvale", "Quillmere"),
        ("Who is older, Ilse or Bram?", AGES, "Ilse", "Bram"),  # ages: the higher
        ("Who is younger, Ilse or Bram?", AGES, "Bram", "Ilse"),
        (
            "Which of Morrow rope, Tesk kettle and Fenwick stove is cheapest?",
            PRICES,
            "The Fenwick stove",
            "Morrow rope",
        ),
        (
            "Which is the most expensive: Morrow rope, Tesk kettle or Fenwick stove?",
            PRICES,
            "Tesk kettle",
            "Fenwick stove",
        ),
        (
            "Which is more affordable, the Tesk kettle or the Fenwick stove?",
            PRICES,
            "Fenwick stove",
            "Tesk kettle",
        ),
    ],
)
def test_a_choice_against_the_order_of_one_tools_results_is_found(
    question: str, measured: Any, wrong: str, right: str
) -> None:
    problem = comparison_problem(question, wrong, measured)
    assert problem is not None
    assert right in problem
    assert "point to" in problem
    assert comparison_problem(question, right, measured) is None


def test_a_yes_or_no_must_follow_the_two_numbers_either_side_of_than() -> None:
    ask = "Is a Morrow rope cheaper than a Tesk kettle, in crowns?"
    problem = comparison_problem(ask, "No", PRICES)
    assert problem is not None
    assert problem.endswith("the answer is yes.")
    assert comparison_problem(ask, "Yes, it costs 4.5 crowns.", PRICES) is None
    flipped = "Is a Tesk kettle cheaper than a Morrow rope?"
    assert comparison_problem(flipped, "No", PRICES) is None
    assert "the answer is no" in str(comparison_problem(flipped, "Yes", PRICES))
    older = "Was Quillmere founded earlier than Ostvale?"
    assert "the answer is no" in str(comparison_problem(older, "Yes", YEARS))
    assert "earlier year" in str(
        comparison_problem("Is Ostvale older than Quillmere?", "No", YEARS)
    )


@pytest.mark.parametrize(
    ("question", "answer", "measured"),
    [
        # qualified comparisons ask more than an order
        ("Is Quillmere more than twice as old as Ostvale?", "Yes", YEARS),
        ("Is a Tesk kettle not cheaper than a Morrow rope?", "Yes", PRICES),
        ("Which town lies farther south, Quillmere or Ostvale?", "Quillmere", YEARS),
        ("Which is the most northerly, Quillmere or Ostvale?", "Quillmere", YEARS),
        (
            "Which costs less per kilogram, the Tesk kettle or the Morrow rope?",
            "Tesk kettle",
            PRICES,
        ),
        # the things measured are not the ones the question names (a chain, a wrong plan)
        ("Which star is hotter, the one Quen orbits or the one Ibrith orbits?", "Ilse", AGES),
        # two tools measured the same things: a combined question
        (
            "Which town is older, Quillmere or Ostvale?",
            "Quillmere",
            [
                *YEARS,
                ("elevation", {"town": "Quillmere"}, 10.0),
                ("elevation", {"town": "Ostvale"}, 5.0),
            ],
        ),
        # no comparison word, or two
        ("Which town did Aldric Penhallow found, Quillmere or Ostvale?", "Quillmere", YEARS),
        ("Which is older but smaller, Quillmere or Ostvale?", "Quillmere", YEARS),
        ("Which is taller or older, Quillmere or Ostvale?", "Quillmere", YEARS),
        # the answer names both, or neither
        ("Which town is older, Quillmere or Ostvale?", "Quillmere, then Ostvale", YEARS),
        ("Which town is older, Quillmere or Ostvale?", "Neither", YEARS),
        # a tie, and listed options (their own check)
        (
            "Which town is older, Quillmere or Ostvale?",
            "Quillmere",
            [("founding_year", {"town": t}, 1800.0) for t in ("Quillmere", "Ostvale")],
        ),
        ("Which town is older?\nOptions:\nQuillmere\nOstvale", "Quillmere", YEARS),
        # a number question
        ("How much older is Ostvale than Quillmere?", "118", YEARS),
    ],
)
def test_comparisons_the_results_cannot_settle_plainly_are_left_alone(
    question: str, answer: str, measured: Any
) -> None:
    assert comparison_problem(question, answer, measured) is None


@tool
def founding_year(town: str) -> int:
    """The year a town was founded, by the town's bare name."""
    return {"quillmere": 1820, "ostvale": 1702}[town.strip().lower()]


def test_a_choice_the_results_contradict_is_put_to_the_joiner_again() -> None:
    plan = '1. founding_year("Quillmere")\n2. founding_year("Ostvale")\n3. join()\n<END_OF_PLAN>'
    joiner = ScriptedModel(
        [
            "Thought: 1820 is the larger year.\nAction: Finish(Quillmere)",
            "Thought: The earlier year is older.\nAction: Finish(Ostvale)",
        ]
    )
    compiler = Compiler(
        planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=[founding_year]
    )
    run = compiler.run("Which town is older, Quillmere or Ostvale?")
    assert run.answer == "Ostvale"
    check = run.rounds[0].answer_checks[0]
    assert 'founding_year("Ostvale") = 1702 is the lowest' in check
    assert "earlier year" in check
    assert check in joiner.calls[1].messages[-1].content
    right = ScriptedModel(["Thought: 1702 is earlier.\nAction: Finish(Ostvale)"])
    again = Compiler(planner_model=ScriptedModel([plan]), joiner_model=right, tools=[founding_year])
    assert again.run("Which town is older, Quillmere or Ostvale?").rounds[0].answer_checks == []


@pytest.mark.parametrize(
    "question",
    [
        "How much shorter is the Vell than the Orm, in km?",
        "How many more moons does Quen have than Ibrith?",
        "By how much is Ostvale older than Quillmere?",
        "If Quen lost 2 moons, how many fewer would it have than Ibrith?",
    ],
)
def test_a_negative_size_of_a_difference_is_made_positive(question: str) -> None:
    assert size_of_difference(question, "-250") == "250"
    assert size_of_difference(question, "It is -250 km shorter.") == "It is 250 km shorter."
    assert size_of_difference(question, "250") is None
    assert size_of_difference(question, "-250 or -3") is None  # not one number


def test_a_negative_number_asked_for_as_it_stands_is_left_alone() -> None:
    signed = "What is the elevation of Varnholt minus the elevation of Marrowick, in metres?"
    assert size_of_difference(signed, "-250") is None
    assert size_of_difference("What was the change in Quen's moons?", "-250") is None
    assert size_of_difference("How cold is Ibrith, in degrees?", "-40") is None
    assert size_of_difference("Is Quen colder than Ibrith?", "-40") is None


def test_a_named_or_joined_answer_subtracted_the_wrong_way_is_its_size() -> None:
    question = "How many more people live in Varnholt than in Ostvale?"
    wrong = '1. town_population("Varnholt")\n2. town_population("Ostvale")\n'
    named = ScriptedModel([f'{wrong}3. calculator("$2 - $1")\n4. join("$3")\n<END_OF_PLAN>'])
    run = Compiler(planner_model=named, joiner_model=ScriptedModel([]), tools=TOOLS).run(question)
    assert run.answer == "17200"
    assert run.rounds[0].joiner_elided
    assert "size of the difference: 17200" in run.rounds[0].answer_checks[0]
    joined = ScriptedModel([f'{wrong}3. calculator("$2 - $1")\n4. join()\n<END_OF_PLAN>'])
    joiner = ScriptedModel(["Thought: $3 is the difference.\nAction: Finish(-17200 people)"])
    run = Compiler(planner_model=joined, joiner_model=joiner, tools=TOOLS).run(question)
    assert run.answer == "17200 people"
    off = Compiler(
        planner_model=ScriptedModel(
            [f'{wrong}3. calculator("$2 - $1")\n4. join("$3")\n<END_OF_PLAN>']
        ),
        joiner_model=ScriptedModel([]),
        tools=TOOLS,
        check_answers=False,
    )
    assert off.run(question).answer == "-17200"


DAYS = [
    ("delivery_days", {"warehouse": w, "town": "Cardell"}, d)
    for w, d in (("Northgate", 4.0), ("Southmoor", 6.0), ("Eastbridge", 2.0))
]


def test_speed_words_read_a_time_the_other_way_and_say_nothing_over_other_measures() -> None:
    fastest = "Which warehouse delivers to Cardell fastest: Northgate, Southmoor or Eastbridge?"
    assert "Eastbridge" in str(comparison_problem(fastest, "Southmoor", DAYS))
    assert comparison_problem(fastest, "Eastbridge", DAYS) is None
    speeds = [("top_speed", args, v * 10) for _, args, v in DAYS]
    assert "Southmoor" in str(comparison_problem(fastest, "Eastbridge", speeds))
    unknown = [("delivery", args, v) for _, args, v in DAYS]
    assert comparison_problem(fastest, "Southmoor", unknown) is None
    ranks = [("world_rank", args, v) for _, args, v in DAYS]
    assert (
        comparison_problem("Which is ranked higher, Northgate or Eastbridge?", "Northgate", ranks)
        is None
    )


def test_year_questions_ask_for_a_number_and_a_year_answers_which_year() -> None:
    assert (
        expected_kind("In what year was the town founded by Aldric Penhallow founded?") == "number"
    )
    assert expected_kind("What year did Quen's first moon get its name?") == "number"
    found = answer_problem("In what year was Ostvale founded?", "Ostvale", ["1702"])
    assert found is not None
    assert "asks for a number" in found
    assert answer_problem("Which year was Ostvale founded in?", "1702", ["1702"]) is None


def test_a_replan_written_as_the_answer_is_taken_as_the_replan() -> None:
    assert (
        nested_replan("Replan(\"town_population('Ostvale')\")") == "\"town_population('Ostvale')\""
    )
    assert nested_replan(" replan( ) ") == "(no reason given)"
    assert nested_replan("Replanting (season)") is None
    plans = ScriptedModel(
        [
            '1. archive("Varnholt")\n2. join()\n<END_OF_PLAN>',
            '3. town_population("Ostvale")\n4. join()\n<END_OF_PLAN>',
        ]
    )
    joiner = ScriptedModel(
        [
            'Thought: Ostvale is its twin.\nAction: Finish(Replan("town_population(Ostvale)"))',
            "Thought: 35100.\nAction: Finish(35100)",
        ]
    )
    compiler = Compiler(planner_model=plans, joiner_model=joiner, tools=TOOLS, max_replans=1)
    run = compiler.run("What is the population of Varnholt's twin town?")
    assert run.answer == "35100"
    assert run.rounds[0].decision == "replan"
    assert run.rounds[0].replan_reason == '"town_population(Ostvale)"'
    assert "taken as the replan" in run.rounds[0].answer_checks[0]


def test_a_name_read_from_a_text_where_a_number_was_asked_is_looked_up_next() -> None:
    paragraph = ["Varnholt is twinned with Ostvale."]
    asked = "What is the population of the town Varnholt is twinned with?"
    reason = name_to_look_up(asked, "Ostvale", paragraph)
    assert reason is not None
    assert "look up that number for Ostvale" in reason
    assert name_to_look_up(asked, "unknown", paragraph) is None  # no name
    assert name_to_look_up(asked, "Brindlecove", paragraph) is None  # no result names it
    assert name_to_look_up(asked, "Ostvale", [*paragraph, "35100"]) is None  # a number is there
    assert name_to_look_up("Which town is Varnholt twinned with?", "Ostvale", paragraph) is None
    plans = ScriptedModel(
        [
            '1. archive("Varnholt")\n2. join()\n<END_OF_PLAN>',
            '3. town_population("Ostvale")\n4. join()\n<END_OF_PLAN>',
        ]
    )
    joiner = ScriptedModel(
        [
            "Thought: The twin is Ostvale.\nAction: Finish(Ostvale)",
            "Thought: 35100.\nAction: Finish(35100)",
        ]
    )
    run = Compiler(planner_model=plans, joiner_model=joiner, tools=TOOLS, max_replans=1).run(asked)
    assert run.answer == "35100"
    assert [c.role for c in run.usage] == ["planner", "joiner", "planner", "joiner"]
    assert "look up that number for Ostvale" in str(run.rounds[0].replan_reason)
    assert "look up that number for Ostvale" in plans.calls[1].messages[-1].content
    last = ScriptedModel(["Thought: The twin is Ostvale.\nAction: Finish(Ostvale)"] * 2)
    final = Compiler(
        planner_model=ScriptedModel(['1. archive("Varnholt")\n2. join()\n<END_OF_PLAN>']),
        joiner_model=last,
        tools=TOOLS,
        max_replans=0,
    ).run(asked)
    assert final.answer == "Ostvale"  # no replan left: the joiner is asked again, as before
    assert "asks for a number" in final.rounds[0].answer_checks[0]


def test_an_answer_no_result_supports_is_shown_the_results_numbers() -> None:
    joiner = ScriptedModel(
        [
            "Thought: About 1900.\nAction: Finish(1900)",
            "Thought: Varnholt has 52300.\nAction: Finish(52300)",
        ]
    )
    plan = '1. town_population("Varnholt")\n2. archive("Varnholt")\n3. join()\n<END_OF_PLAN>'
    run = Compiler(planner_model=ScriptedModel([plan]), joiner_model=joiner, tools=TOOLS).run(
        "How many people live in Varnholt?"
    )
    assert run.answer == "52300"
    check = run.rounds[0].answer_checks[0]
    assert check.endswith('The results\' numbers: town_population("Varnholt") = 52300.')
    assert check in joiner.calls[1].messages[-1].content


# -- futile replans ------------------------------------------------------------------------

BAD_PLAN = (
    '1. town_population("Varnholt")\n2. town_population("population of Ostvale")\n'
    "3. join()\n<END_OF_PLAN>"
)
REPLAN_FOR_HINT = "Thought: Task 2 failed.\nAction: Replan(look up Ostvale again)"
FINISH_DIFF = "Thought: 52300 - 35100.\nAction: Finish(17200)"


def _futile_run(
    replans: list[str], joins: list[str], max_replans: int = 1
) -> tuple[ScriptedModel, ScriptedModel, Any]:
    planner = ScriptedModel([BAD_PLAN, *replans])
    joiner = ScriptedModel(joins)
    compiler = Compiler(
        planner_model=planner, joiner_model=joiner, tools=TOOLS, max_replans=max_replans
    )
    run = compiler.run("How many more people live in Varnholt than in Ostvale?")
    return planner, joiner, run


def test_a_replan_that_repeats_a_failed_call_is_planned_again_without_the_joiner() -> None:
    """The replanner repeated the call that had failed, unchanged: joining it can bring nothing,
    so the planner is asked at once for other calls, with the error, and this extra plan is
    granted even though the replan was the last one allowed."""
    repeat = '4. town_population("population of Ostvale")\n5. join()\n<END_OF_PLAN>'
    good = '6. town_population("Ostvale")\n7. join()\n<END_OF_PLAN>'
    planner, _, run = _futile_run([repeat, good], [REPLAN_FOR_HINT, FINISH_DIFF])
    assert run.answer == "17200"
    assert [r.decision for r in run.rounds] == ["replan", "replan", "finish"]
    futile = run.rounds[1]
    assert futile.answer is None
    assert "repeated what cannot work" in (futile.replan_reason or "")
    assert "pass a bare town name" in (futile.replan_reason or "")
    assert "repeated what cannot work" in planner.calls[2].messages[-1].content
    assert [c.role for c in run.usage] == ["planner", "joiner", "planner", "planner", "joiner"]


def test_a_replan_that_builds_on_a_failed_task_is_planned_again() -> None:
    """A new plan whose only work needs a task that failed in an earlier round is as futile."""
    on_failed = '4. calculator("$1 - $2")\n5. join()\n<END_OF_PLAN>'
    good = '6. town_population("Ostvale")\n7. calculator("$1 - $6")\n8. join()\n<END_OF_PLAN>'
    _, _, run = _futile_run([on_failed, good], [REPLAN_FOR_HINT, FINISH_DIFF])
    assert run.answer == "17200"
    reason = run.rounds[1].replan_reason or ""
    assert "needs task 2" in reason
    assert "none of the failed tasks' $N" in reason
    assert run.task(7).status is TaskStatus.DONE


def test_a_replan_with_a_new_call_goes_to_the_joiner() -> None:
    """One new call next to the repeated failure may bring what the answer needs: joined."""
    mixed = (
        '4. town_population("population of Ostvale")\n5. archive("Ostvale population")\n'
        "6. join()\n<END_OF_PLAN>"
    )
    unknown = "Thought: Not found.\nAction: Finish(unknown)"
    planner, _, run = _futile_run([mixed], [REPLAN_FOR_HINT, unknown, unknown])
    assert len(planner.calls) == 2
    assert [c.role for c in run.usage][:4] == ["planner", "joiner", "planner", "joiner"]
    assert not any("repeated what cannot work" in c for r in run.rounds for c in r.answer_checks)


def test_a_futile_replan_earns_one_extra_plan_a_run_not_more() -> None:
    """Repeated twice: the second futile plan, in the extended last round, is joined as usual
    (the joiner then answers with what there is), so a stubborn planner cannot loop."""
    repeat = '4. town_population("population of Ostvale")\n5. join()\n<END_OF_PLAN>'
    again = '6. town_population("population of Ostvale")\n7. join()\n<END_OF_PLAN>'
    unknown = "Thought: Ostvale is unknown.\nAction: Finish(unknown)"
    planner, _, run = _futile_run([repeat, again], [REPLAN_FOR_HINT, unknown, unknown])
    assert len(planner.calls) == 3
    assert len(run.rounds) == 3
    assert [c.role for c in run.usage][:5] == ["planner", "joiner", "planner", "planner", "joiner"]
    assert not any("repeated what cannot work" in c for c in run.rounds[-1].answer_checks)
    assert run.answer == "unknown"


def _retried_run(population: Any) -> tuple[ScriptedModel, Any]:
    """A run whose first plan calls ``population("Varnholt")``, whose joiner replans, and
    whose replan repeats the call unchanged."""
    name = population.name
    plan = f'1. {name}("Varnholt")\n2. join()\n<END_OF_PLAN>'
    repeat = f'3. {name}("Varnholt")\n4. join()\n<END_OF_PLAN>'
    planner = ScriptedModel([plan, repeat])
    joiner = ScriptedModel(["Thought: It did not work.\nAction: Replan(try again)", FINISH_YES])
    compiler = Compiler(
        planner_model=planner, joiner_model=joiner, tools=[population], max_replans=1
    )
    return planner, compiler.run("Is Varnholt home to more than 50000 people?")


def test_a_timed_out_call_may_be_tried_again() -> None:
    """A timeout is not a verdict on the call: repeating it is a fair replan."""
    tries: list[str] = []

    @tool(timeout=0.2)
    async def slow_population(town: str) -> int:
        """The number of people living in a town."""
        tries.append(town)
        if len(tries) == 1:
            await asyncio.sleep(5)
        return POPULATION[town.strip().lower()]

    planner, run = _retried_run(slow_population)
    assert run.answer == "yes"
    assert len(planner.calls) == 2
    assert tries == ["Varnholt", "Varnholt"]


# -- units converted unasked ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "call", "factor"),
    [
        ("How heavy is a kettle, in kilograms?", 'calculator("$1.weight_kg * 1000")', 1000.0),
        ("How heavy is a kettle?", 'calculator("1000*$1")', 1000.0),
        ("How heavy is a kettle?", 'calculator("($1 - $2) / (1e6)")', 1e6),
        ("How heavy is a kettle?", 'calculator("$1 * 100.0")', 100.0),
        ("By what percent did it grow?", 'calculator("($2 - $1) / $1 * 100")', None),
        ("What share of 1000 seats is it?", 'calculator("$1 / 1000")', None),
        ("How many thousand people live there?", 'calculator("$1 / 1000")', None),
        ("How heavy are 3 kettles?", 'calculator("$1 * 3")', None),
        ("How heavy is a kettle?", 'calculator("$1 * 10")', None),
        ("How heavy is a kettle?", 'calculator("$1 * 1000.5")', None),
        ("How heavy is a kettle?", 'calculator("21000 + $1")', None),
        ("How heavy is a kettle?", 'calculator("1000 * 2")', None),  # no result in it
    ],
)
def test_unasked_factor(question: str, call: str, factor: float | None) -> None:
    assert unasked_factor(question, call) == factor


@tool
def kettle(product: str) -> dict[str, object]:
    """A product's record: its name and weight in kilograms."""
    return {"product": product, "weight_kg": 1.6}


SCALED_PLAN = (
    '1. kettle("Tesk kettle")\n2. calculator("$1.weight_kg * 1000")\n3. join("$2")\n<END_OF_PLAN>'
)


def _scaled_run(question: str, replies: list[str]) -> tuple[ScriptedModel, Any]:
    joiner = ScriptedModel(replies)
    compiler = Compiler(
        planner_model=ScriptedModel([SCALED_PLAN]),
        joiner_model=joiner,
        tools=[kettle, calculator],
        max_replans=0,
    )
    return joiner, compiler.run(question)


def test_a_result_scaled_unasked_is_not_elided_and_the_joiner_looks_again() -> None:
    joiner, run = _scaled_run(
        "How much does a Tesk kettle weigh, in kilograms?",
        [
            "Thought: Task 2 gives 1600.\nAction: Finish(1600)",
            "Thought: The record gives 1.6 kg.\nAction: Finish(1.6)",
        ],
    )
    assert run.answer == "1.6"
    assert not run.rounds[0].joiner_elided
    assert len(joiner.calls) == 2
    assert "scales a result by 1000" in run.rounds[0].answer_checks[0]
    assert "scales a result by 1000" in joiner.calls[1].messages[-1].content


def test_a_unit_the_question_asks_for_stands_when_the_joiner_keeps_it() -> None:
    joiner, run = _scaled_run(
        "How many grams does a Tesk kettle weigh?",
        ["Thought: 1.6 kg.\nAction: Finish(1600)", "Thought: Grams.\nAction: Finish(1600)"],
    )
    assert run.answer == "1600"
    assert len(joiner.calls) == 2


def test_a_factor_the_question_names_is_elided_as_usual() -> None:
    joiner, run = _scaled_run("How many thousand grams does a Tesk kettle weigh?", [])
    assert run.answer == "1600"
    assert run.rounds[0].joiner_elided
    assert joiner.calls == []


# -- pointers past a failed call ------------------------------------------------------------

STARS = {"ossuin": 3900, "brannoch": 7200}


@tool
def host_star(planet: str) -> str:
    """The star a planet orbits."""
    if planet.strip().lower() != "zephrel":
        raise ToolError(f"unknown planet {planet!r}; pass a bare planet name such as 'Zephrel'")
    return "Brannoch"


@tool
def star_temperature(star: str) -> int:
    """A star's surface temperature in kelvin."""
    return STARS[star.strip().lower()]


def test_a_rejected_argument_the_question_names_for_another_tool_is_pointed_there() -> None:
    plan = (
        '1. host_star("Zephrel")\n2. host_star("Ossuin")\n3. star_temperature("$1")\n'
        '4. star_temperature("$2")\n5. calculator("$3 - $4")\n6. join("$5")\n<END_OF_PLAN>'
    )
    fixed = '7. star_temperature("Ossuin")\n8. calculator("$3 - $7")\n9. join("$8")\n<END_OF_PLAN>'
    planner = ScriptedModel([plan, fixed])
    compiler = Compiler(
        planner_model=planner,
        joiner_model=ScriptedModel([]),
        tools=[host_star, star_temperature, archive, calculator],
        max_replans=1,
    )
    run = compiler.run("How many kelvin hotter is the star Zephrel orbits than the star Ossuin?")
    assert run.answer == "3300"
    reason = run.rounds[0].replan_reason or ""
    assert 'the question calls Ossuin a star, so call star_temperature("Ossuin")' in reason
    assert "tools not called yet" not in reason  # the pointer says more
    assert 'call star_temperature("Ossuin")' in planner.calls[1].messages[-1].content


def test_a_failed_call_with_no_pointer_lists_the_tools_not_called_yet() -> None:
    bad = '1. town_population("population of Ostvale")\n2. join("$1")\n<END_OF_PLAN>'
    good = '3. town_population("Ostvale")\n4. join("$3")\n<END_OF_PLAN>'
    compiler = Compiler(
        planner_model=ScriptedModel([bad, good]),
        joiner_model=ScriptedModel([]),
        tools=TOOLS,
        max_replans=1,
    )
    run = compiler.run("What is the population of Ostvale?")
    assert run.answer == "35100"
    reason = run.rounds[0].replan_reason or ""
    assert "tools not called yet: mayor_of(town), archive(query), calculator(expression)" in reason


def test_no_pointer_when_the_question_names_nothing_for_another_tool() -> None:
    plan = '1. host_star("Ossuin")\n2. star_temperature("$1")\n3. join("$2")\n<END_OF_PLAN>'
    compiler = Compiler(
        planner_model=ScriptedModel([plan, plan]),
        joiner_model=ScriptedModel(["Thought: Unknown.\nAction: Finish(unknown)"] * 3),
        tools=[host_star, star_temperature],
        max_replans=1,
    )
    run = compiler.run("What is the temperature of the star that Ossuin orbits?")
    reason = run.rounds[0].replan_reason or ""
    assert "failed" in reason
    assert "Note:" not in reason


def test_an_unsupported_number_is_answered_again_as_arithmetic_and_computed() -> None:
    """Told its number follows from no result, a joiner that cannot subtract may write the
    subtraction: it is computed."""
    joiner = ScriptedModel(
        [
            "Thought: 52300 - 35100 is about 17000.\nAction: Finish(17000)",
            "Thought: Subtract.\nAction: Finish(52300 - 35100)",
        ]
    )
    compiler = Compiler(
        planner_model=ScriptedModel([PLAN]), joiner_model=joiner, tools=TOOLS, max_replans=0
    )
    run = compiler.run("How many more people live in Varnholt than in Ostvale?")
    assert run.answer == "17200"
    assert "the arithmetic itself" in joiner.calls[1].messages[-1].content


def test_a_repeated_call_that_now_succeeds_is_joined() -> None:
    """A flaky tool failed once and worked when the replan called it again unchanged: the
    round is joined, not judged futile by its call text."""
    tries: list[str] = []

    @tool
    def flaky_population(town: str) -> int:
        """The number of people living in a town."""
        tries.append(town)
        if len(tries) == 1:
            raise ToolError("the registry is busy; try again")
        return POPULATION[town.strip().lower()]

    planner, run = _retried_run(flaky_population)
    assert run.answer == "yes"
    assert len(planner.calls) == 2
    assert not any("repeated what cannot work" in c for r in run.rounds for c in r.answer_checks)
