"""Toolworld: the fictional worlds' data and strict tools, the questions' golds against the
tables (through a real Compiler), the scorer, and the simulated run of all three systems."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from dagcall import Compiler, TaskStatus, ToolError
from dagcall.bench import BenchConfig
from dagcall.bench._toolworld import (
    ARTICLES,
    CITIES,
    DELIVERY,
    PLANETS,
    PRODUCTS,
    STARS,
    STOCK,
    SUPPLIERS,
    WAREHOUSES,
    ToolworldQuestion,
    parallel_turns,
    react_steps,
    reference_answer,
    reference_run,
    run_toolworld,
    score_toolworld,
    toolworld_questions,
    toolworld_tools,
)
from dagcall.models import ScriptedModel

SHAPES = {
    "sum",
    "difference",
    "difference (smaller)",
    "signed difference",
    "ratio",
    "average",
    "extreme (max)",
    "extreme (min)",
    "comparison (name)",
    "yes/no",
    "two-hop",
    "percent change",
    "combined",
}


def call(world: str, name: str, **arguments: Any) -> Any:
    by_name = {t.name: t for t in toolworld_tools(world)}
    return asyncio.run(by_name[name].invoke(arguments))


# -- the worlds and their tools ----------------------------------------------------------
def test_the_worlds_have_enough_unique_questions_of_every_shape() -> None:
    atlas, orbit = toolworld_questions("atlas"), toolworld_questions("orbit")
    depot = toolworld_questions("depot")
    assert len(atlas) >= 14
    assert len(orbit) >= 12
    assert len(depot) >= 12
    assert toolworld_questions() == [*atlas, *orbit, *depot]
    ids = [q.key for q in toolworld_questions()]
    assert len(set(ids)) == len(ids)
    assert len({q.id for q in toolworld_questions()}) == len(ids)
    assert {q.shape for q in toolworld_questions()} >= SHAPES
    for world in (atlas, orbit, depot):  # each world has numbers, names and yes/no
        assert {q.kind for q in world} == {"number", "name", "yesno"}
    assert any(len(q.rounds) == 2 for q in atlas)  # an encyclopedia hop, then a look-up
    with pytest.raises(ValueError, match="unknown toolworld world"):
        toolworld_questions("earth")


def test_the_worlds_use_different_tools_and_argument_names() -> None:
    atlas = {t.name: t for t in toolworld_tools("atlas")}
    orbit = {t.name: t for t in toolworld_tools("orbit")}
    assert set(atlas) == {
        "city_population",
        "city_elevation",
        "city_founded",
        "encyclopedia",
        "calculator",
    }
    assert set(orbit) == {
        "planet_mass",
        "orbital_period",
        "moon_count",
        "host_star",
        "star_temperature",
        "calculator",
    }
    depot = {t.name: t for t in toolworld_tools("depot")}
    assert set(depot) == {
        "unit_price",
        "stock_count",
        "product_details",
        "supplier_town",
        "delivery_days",
        "calculator",
    }
    assert set(atlas) & set(orbit) == set(atlas) & set(depot) == {"calculator"}
    assert set(orbit) & set(depot) == {"calculator"}
    for t in [*atlas.values(), *orbit.values(), *depot.values()]:
        assert t.description, t.name
        assert t.render().startswith(t.name)
    assert "(city: str)" in atlas["city_population"].render()
    assert "(planet: str)" in orbit["host_star"].render()
    assert "(star: str)" in orbit["star_temperature"].render()
    # depot: two-argument look-ups, and a look-up whose result is a record
    assert "(product: str, currency: str)" in depot["unit_price"].render()
    assert "(warehouse: str, town: str)" in depot["delivery_days"].render()
    assert any(len(q.rounds[0]) > 1 and "$1." in q.calls[1] for q in toolworld_questions("depot"))


def test_names_are_invented_and_answers_are_names_of_the_world() -> None:
    real = {"paris", "london", "mars", "earth", "jupiter", "venus", "sun", "sirius", "vega"}
    names = {n.casefold() for n in [*CITIES, *ARTICLES, *PLANETS, *STARS]}
    names |= {n.casefold() for n in [*PRODUCTS, *WAREHOUSES, *SUPPLIERS, *DELIVERY]}
    assert not names & real
    entities: dict[str, list[str]] = {
        "atlas": list(CITIES),
        "orbit": list(PLANETS),
        "depot": [*PRODUCTS, *WAREHOUSES],
    }
    for q in toolworld_questions():
        if q.kind == "name" and q.among:
            assert q.gold in q.among
            assert q.gold in entities[q.world]
        elif q.kind == "name":  # a hop's result: a town
            assert q.gold in DELIVERY
        elif q.kind == "yesno":
            assert q.gold in ("yes", "no")
        else:
            float(q.gold)


def test_lookups_accept_bare_names_in_any_case_with_quotes_and_spaces() -> None:
    assert call("atlas", "city_population", city="Varnholt") == 48200
    assert call("atlas", "city_population", city='  "varnholt" ') == 48200
    assert call("atlas", "city_elevation", city="'BRINDLECOVE'") == 8
    assert call("atlas", "city_founded", city="Esselin") == 1755
    assert "Marrowick" in call("atlas", "encyclopedia", query="druvania")
    assert "Varnholt" in call("atlas", "encyclopedia", query="Vell river")
    assert call("orbit", "planet_mass", planet=" Ibrith ") == 14.6
    assert call("orbit", "host_star", planet="quen") == "Teyvar"
    assert call("orbit", "star_temperature", star="Teyvar") == 5400
    assert call("orbit", "moon_count", planet="Ostrel") == 0
    assert call("orbit", "orbital_period", planet="Talluk") == 730
    assert call("depot", "unit_price", product="tesk kettle", currency="florin") == 23.75
    assert call("depot", "unit_price", product="Tesk kettle", currency="Crowns") == 9.5
    assert call("depot", "stock_count", product=" Morrow rope", warehouse="EASTBRIDGE") == 410
    assert call("depot", "product_details", product="Ulna blanket") == {
        "product": "Ulna blanket",
        "supplier": "Dallow Mills",
        "weight_kg": 1.9,
        "category": "bedding",
    }
    assert call("depot", "supplier_town", supplier="'Pym Cordage'") == "Cardell"
    assert call("depot", "delivery_days", warehouse="Southmoor", town="telsby") == 4


@pytest.mark.parametrize(
    ("world", "name", "arguments", "hint"),
    [
        (
            "atlas",
            "city_population",
            {"city": "length of the Vell river"},
            "unknown city 'length of the Vell river'; pass a bare city name such as 'Varnholt'",
        ),
        ("atlas", "city_elevation", {"city": "Varnholt, Druvania"}, "such as 'Varnholt'"),
        ("atlas", "city_founded", {"city": "Druvania"}, "unknown city 'Druvania'"),
        ("atlas", "encyclopedia", {"query": "population of Varnholt"}, "such as 'Druvania'"),
        ("orbit", "planet_mass", {"planet": "the planet Quen"}, "bare planet name such as 'Quen'"),
        ("orbit", "moon_count", {"planet": "Teyvar"}, "unknown planet 'Teyvar'"),
        ("orbit", "star_temperature", {"star": "Quen"}, "bare star name such as 'Teyvar'"),
        (
            "depot",
            "unit_price",
            {"product": "Tesk kettle", "currency": "dollar"},
            "unknown currency 'dollar'; pass 'crown' or 'florin'",
        ),
        (
            "depot",
            "unit_price",
            {"product": "kettle", "currency": "crown"},
            "bare product name such as 'Tesk kettle'",
        ),
        (
            "depot",
            "stock_count",
            {"product": "Morrow rope", "warehouse": "Northgate warehouse"},
            "bare warehouse name such as 'Northgate'",
        ),
        ("depot", "supplier_town", {"supplier": "Carrow"}, "such as 'Ingle Works'"),
        (
            "depot",
            "delivery_days",
            {"warehouse": "Northgate", "town": "the town of Telsby"},
            "bare town name such as 'Telsby'",
        ),
    ],
)
def test_strict_lookups_refuse_anything_but_a_name_with_a_hint(
    world: str, name: str, arguments: dict[str, str], hint: str
) -> None:
    with pytest.raises(ToolError) as info:
        call(world, name, **arguments)
    assert hint in str(info.value)
    assert "Quillmere" not in str(info.value)  # one example, not the whole list


def test_the_calculator_is_the_safe_one() -> None:
    assert call("atlas", "calculator", expression="48200 - 31000") == 17200
    with pytest.raises(ToolError):
        call("orbit", "calculator", expression="__import__('os').getcwd()")


# -- the golds are what the reference plans compute --------------------------------------
def _compiled(question: ToolworldQuestion) -> Any:
    """The reference plan through a real Compiler with scripted planner and joiner."""
    plans = [question.plan_text(i) for i in range(len(question.rounds))]
    joins = ["Thought: next hop.\nAction: Replan(look it up)"] * (len(plans) - 1)
    joins.append(f"Thought: done.\nAction: Finish({question.gold})")
    planner, joiner = ScriptedModel(plans), ScriptedModel(joins)
    compiler = Compiler(
        planner_model=planner,
        joiner_model=joiner,
        tools=toolworld_tools(question.world),
        max_replans=len(plans) - 1,
    )
    run = asyncio.run(compiler.arun(question.question))
    planner.assert_all_used()
    joiner.assert_all_used()
    return run


def _depot_value(call: str, outputs: dict[int, Any]) -> Any:
    """A depot call's value straight from the tables (its ``$N`` arguments read from
    ``outputs``: a field, or the whole result)."""
    tool, raw = call.split("(", 1)
    args: list[Any] = []
    for arg in re.findall(r'"([^"]*)"', raw):
        ref = re.fullmatch(r"\$(\d+)(?:\.(\w+))?", arg)
        if ref:
            value = outputs[int(ref.group(1))]
            args.append(value[ref.group(2)] if ref.group(2) else value)
        else:
            args.append(arg)
    if tool == "unit_price":
        return PRODUCTS[args[0]][0] * (2.5 if args[1] == "florin" else 1.0)
    if tool == "stock_count":
        return STOCK[args[0]][WAREHOUSES.index(args[1])]
    if tool == "product_details":
        _, supplier, weight, category = PRODUCTS[args[0]]
        return {"product": args[0], "supplier": supplier, "weight_kg": weight, "category": category}
    if tool == "supplier_town":
        return SUPPLIERS[args[0]]
    if tool == "delivery_days":
        return DELIVERY[args[1]][WAREHOUSES.index(args[0])]
    return None  # the calculator: checked through the plan


def _direct(question: ToolworldQuestion) -> str:
    """The gold computed straight from the tables, without any plan."""
    if question.world == "depot":
        outputs: dict[int, Any] = {}
        for i, c in enumerate(question.calls, 1):
            outputs[i] = _depot_value(c, outputs)
        if question.rule in ("max", "min"):
            pick = max if question.rule == "max" else min
            return pick(question.among, key=lambda e: outputs[question.among.index(e) + 1])
        last = outputs[len(outputs)]
        if question.rule != "value" or last is None:
            return ""
        return str(last[question.field] if question.field else last)
    pop = {c: v[0] for c, v in CITIES.items()}
    elev = {c: v[1] for c, v in CITIES.items()}
    year = {c: v[2] for c, v in CITIES.items()}
    table: dict[str, dict[str, Any]] = {
        "city_population": pop,
        "city_elevation": elev,
        "city_founded": year,
        "planet_mass": {p: v[0] for p, v in PLANETS.items()},
        "orbital_period": {p: v[1] for p, v in PLANETS.items()},
        "moon_count": {p: v[2] for p, v in PLANETS.items()},
        "star_temperature": dict(STARS),
    }
    name = question.calls[-1].split("(")[0] if question.rule == "value" else ""
    if question.rule in ("max", "min"):
        tool = question.calls[0].split("(")[0]
        pick = max if question.rule == "max" else min
        return pick(question.among, key=lambda e: table[tool][e])
    if name == "calculator" or question.rule != "value":
        return ""  # arithmetic and comparisons: checked through the plan
    literal = re.findall(r'"([^"$]+)"', question.calls[-1])
    # star_temperature("$1") has no literal: the host star of the first call's planet
    first = re.findall(r'"([^"$]+)"', question.calls[0])[0]
    entity = literal[-1] if literal else PLANETS[first][3]
    return str(table[name][entity])


@pytest.mark.parametrize("question", toolworld_questions(), ids=lambda q: q.key)
def test_reference_plan_runs_and_gives_the_gold(question: ToolworldQuestion) -> None:
    run = _compiled(question)
    assert len(run.tasks) == len(question.calls)
    failed = [(t.call, t.observation) for t in run.tasks if t.status is not TaskStatus.DONE]
    assert not failed
    assert run.answer == question.gold
    outputs = {t.id: t.output for t in run.tasks}
    derived = reference_answer(question, outputs)
    assert score_toolworld(derived, question.gold, question.kind), (derived, question.gold)
    if question.kind == "number":
        final = outputs[max(outputs)]
        last = float(final[question.field] if question.field else final)
        assert abs(last - float(question.gold)) <= 1e-3 * max(1.0, abs(last))
    direct = _direct(question)
    if direct:
        assert score_toolworld(direct, question.gold, question.kind), (direct, question.gold)
    if len(question.rounds) == 2:  # the second hop's entity is read off the first's paragraph
        paragraph = str(outputs[1])
        hop = re.findall(r'"([^"$]+)"', question.rounds[1][0])[0]
        assert hop in paragraph
        assert hop not in question.question


def test_a_wrong_gold_would_be_caught() -> None:
    q = toolworld_questions("atlas")[0]
    outputs = {t.id: t.output for t in _compiled(q).tasks}
    assert not score_toolworld(reference_answer(q, outputs), "80500", "number")
    name_q = next(q for q in toolworld_questions("orbit") if q.kind == "name")
    outputs = {t.id: t.output for t in _compiled(name_q).tasks}
    other = next(e for e in name_q.among if e != name_q.gold)
    assert not score_toolworld(reference_answer(name_q, outputs), other, "name")


# -- scoring -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "gold", "ok"),
    [
        ("79200", "79200", True),
        ("79,200", "79200", True),
        ("79200.0", "79200", True),
        ("about 79,200 people", "79200", True),
        ("The combined population is 79200.", "79200", True),
        ("79800", "79200", True),  # within 1%
        ("80100", "79200", False),  # 1.1% off
        ("-228", "-228", True),
        ("−228 metres", "-228", True),
        ("228", "-228", False),
        ("1.1667", "1.1667", True),
        ("1.17", "1.1667", True),
        ("9.4 Earth masses", "9.4", True),
        ("9800 - 3150", "6650", False),
        ("9800-3150", "6650", False),
        ("48200 + 31000 = 79200", "79200", False),
        ("(2.4 + 0.8 + 0.3) / 3", "1.1667", False),
        ("64800 * 1.1", "71280", False),
        ("I could not find it", "79200", False),
        ("", "79200", False),
    ],
)
def test_numbers_within_one_percent_and_never_an_expression(
    answer: str, gold: str, ok: bool
) -> None:
    assert score_toolworld(answer, gold, "number") is ok


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ("Korvessa", True),
        ("korvessa", True),
        ("Korvessa has the largest population.", True),
        ("KORVESSA.", True),
        ("Korvessa or Varnholt", False),
        ("Varnholt", False),
        ("Korvessan", False),
        ("The largest of the three cities by population is Korvessa, " + "far " * 20, False),
        ("I don't know", False),
    ],
)
def test_names_match_as_a_word_of_a_short_single_name_answer(answer: str, ok: bool) -> None:
    assert score_toolworld(answer, "Korvessa", "name") is ok


@pytest.mark.parametrize(
    ("answer", "gold", "ok"),
    [
        ("yes", "yes", True),
        ("Yes, Marrowick is higher.", "yes", True),
        ("YES", "yes", True),
        ("No.", "no", True),
        ("no, it is not", "yes", False),
        ("yes", "no", False),
        ("It is not, no", "no", False),  # the leading word counts
        ("yesterday", "yes", False),
        ("nobody knows", "no", False),
    ],
)
def test_yes_no_by_the_leading_word(answer: str, gold: str, ok: bool) -> None:
    assert score_toolworld(answer, gold, "yesno") is ok


# -- the simulated references ------------------------------------------------------------
def test_react_and_parallel_references_have_the_values_filled_in() -> None:
    q = next(q for q in toolworld_questions("orbit") if q.shape == "combined")
    run = asyncio.run(reference_run(q))
    steps = react_steps(q, run)
    assert len(steps) == len(q.calls) + 1
    assert 'star_temperature("Brannoch")' in "\n".join(steps)
    assert 'calculator("7200 - 3900")' in steps[-2]
    assert not any("$" in s for s in steps)
    assert steps[-1].endswith(f"Finish({q.gold})")
    turns = [json.loads(t) for t in parallel_turns(q, run)]
    assert [len(t.get("tool_calls", [])) for t in turns] == [2, 1, 1, 0]
    assert turns[1]["tool_calls"][0] == {
        "name": "star_temperature",
        "arguments": {"star": "Brannoch"},
    }
    assert turns[-1] == {"answer": q.gold}
    two_rounds = next(q for q in toolworld_questions("atlas") if q.shape == "combined")
    run = asyncio.run(reference_run(two_rounds))
    turns = [json.loads(t) for t in parallel_turns(two_rounds, run)]
    assert [len(t.get("tool_calls", [])) for t in turns] == [1, 2, 1, 0]


def test_run_toolworld_simulated_gives_correct_records_for_every_system() -> None:
    config = BenchConfig(time_scale=0.001, limit=2)
    records = asyncio.run(run_toolworld(config))
    expected = [
        (f"{world}/{q.id}", system)
        for world in ("atlas", "orbit", "depot")
        for q in toolworld_questions(world)[:2]
        for system in ("react", "parallel-fc", "dagcall")
    ]
    assert [(r.question_id, r.system) for r in records] == expected
    for r in records:
        assert r.workload == "toolworld"
        assert r.error is None, r.error
        assert r.correct, (r.question_id, r.system, r.answer, r.gold)
        assert r.run is not None
        assert all(t.status is TaskStatus.DONE for t in r.run.tasks)
        assert r.latency > 0
        assert r.llm_calls >= 2
    react = next(r for r in records if r.system == "react")
    dag = next(r for r in records if r.system == "dagcall")
    assert react.llm_calls == len(toolworld_questions("atlas")[0].calls) + 1
    assert dag.llm_calls == 2


def test_run_toolworld_two_round_questions_and_world_selection() -> None:
    config = BenchConfig(time_scale=0.001, systems=("dagcall", "react", "parallel-fc"))
    two = [q for q in toolworld_questions("atlas") if len(q.rounds) == 2]
    records = asyncio.run(run_toolworld(config, worlds=("atlas",)))
    assert {r.question_id.split("/")[0] for r in records} == {"atlas"}
    assert len(records) == 3 * len(toolworld_questions("atlas"))
    assert all(r.correct and r.error is None for r in records), [
        (r.question_id, r.system, r.answer) for r in records if not r.correct
    ]
    dag = {r.question_id: r for r in records if r.system == "dagcall"}
    for q in two:
        run = dag[q.key].run
        assert run is not None
        assert len(run.rounds) == 2
    with pytest.raises(ValueError, match="unknown toolworld world"):
        asyncio.run(run_toolworld(config, worlds=("earth",)))


def test_depot_runs_every_system_right_with_record_fields_resolved() -> None:
    # config.worlds (the CLI's --world) chooses the world when run_toolworld is not told
    config = BenchConfig(time_scale=0.001, worlds=("depot",))
    records = asyncio.run(run_toolworld(config))
    assert {r.question_id.split("/")[0] for r in records} == {"depot"}
    assert len(records) == 3 * len(toolworld_questions("depot"))
    assert all(r.correct and r.error is None for r in records), [
        (r.question_id, r.system, r.answer) for r in records if not r.correct
    ]
    chain = next(q for q in toolworld_questions("depot") if q.shape == "two-hop chain")
    run = asyncio.run(reference_run(chain))
    steps = "\n".join(react_steps(chain, run))
    assert 'supplier_town("Carrow Brothers")' in steps  # $1.supplier, resolved
    assert 'delivery_days("Northgate", "Dunmarrow")' in steps
    turns = [json.loads(t) for t in parallel_turns(chain, run)]
    assert [len(t.get("tool_calls", [])) for t in turns] == [1, 1, 1, 0]


def test_with_a_real_model_the_llm_math_tool_can_replace_the_calculator() -> None:
    """``--toolworld-math llm``: the plans' arithmetic goes to the paper's math tool, whose
    expression the same model writes (here a scripted model, told apart by its prompts)."""
    question = toolworld_questions("atlas")[0]  # Varnholt + Quillmere

    def reply(messages: list[Any]) -> str:
        prompt = "\n".join(m.content for m in messages)
        if prompt.startswith("Translate a math problem"):  # the math tool's own prompt
            return "52300 + 26900"
        if "Finish(" in prompt:  # the joiner's
            return "Thought: Their sum.\nAction: Finish(79200)"
        return (
            '1. city_population("Varnholt")\n2. city_population("Quillmere")\n'
            '3. math("the sum of the two populations", ["$1", "$2"])\njoin()<END_OF_PLAN>'
        )

    model = ScriptedModel(reply)
    config = BenchConfig(model=model, limit=1, systems=("dagcall",), tool_latency_median=0)
    config.toolworld_math = "llm"
    (record,) = asyncio.run(run_toolworld(config, worlds=("atlas",)))
    assert record.run is not None
    calls = [t.tool for t in record.run.tasks]
    assert calls == ["city_population", "city_population", "math"], record.run.tasks
    assert record.run.tasks[2].output == 79200
    assert record.question_id == f"atlas/{question.id}"
    assert "tool" in [c.role for c in record.run.usage]  # the math model was called
