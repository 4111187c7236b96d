"""WebShop: the generated store, its instructions and reward, the tools, and the three systems
(ReAct, the LATS-style tree search, dagcall) on the simulated profile and with scripted
models standing for real ones."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from dagcall import RunResult, ToolArgumentError, ToolError
from dagcall.bench import PROFILES, BenchConfig, SimulatedModel, run_bench, write_report
from dagcall.bench._webshop import (
    DAGCALL_EXAMPLES,
    REACT_EXAMPLES,
    WEBSHOP_SYSTEMS,
    Episode,
    Shopper,
    run_webshop,
    webshop_episode,
)
from dagcall.bench._webshop_store import (
    CATEGORIES,
    Catalogue,
    Instruction,
    WebShopSession,
    catalogue,
    generate_instructions,
    reward,
)
from dagcall.cli import main
from dagcall.models import Message, Model, ScriptedModel

pytest.importorskip("bm25s")


@pytest.fixture(scope="module")
def store() -> Catalogue:
    return catalogue()


def run_of(episode: Episode) -> RunResult:
    assert episode.run is not None, episode.error
    return episode.run


def simulated(reply: object) -> Model:
    return SimulatedModel(reply, PROFILES["gpt-3.5"], time_scale=0.002)  # type: ignore[arg-type]


# -- the catalogue -----------------------------------------------------------------------
def test_catalogue_is_large_seeded_and_categorised(store: Catalogue) -> None:
    assert len(store.products) >= 1000
    assert len({p.item_id for p in store.products}) == len(store.products)
    counts = Counter(p.category for p in store.products)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 150
    for p in store.products[:50]:
        assert p.title
        assert p.description
        assert p.price > 0
        assert p.product_type in CATEGORIES[p.category].types
        assert 3 <= len(p.attributes) <= 5
        assert [n for n, _ in p.options] == [n for n, _ in CATEGORIES[p.category].options]
        assert all(values for _, values in p.options)
        assert re.fullmatch(r"B0[0-9A-Z]{8}", p.item_id)
    again = Catalogue(seed=0)
    assert [p.item_id for p in again.products] == [p.item_id for p in store.products]
    assert again.products[7] == store.products[7]
    other = Catalogue(size=60, seed=1)
    assert [p.title for p in other.products] != [p.title for p in store.products[:60]]


# -- instructions ------------------------------------------------------------------------
def test_instructions_come_from_a_real_target_and_are_satisfiable(store: Catalogue) -> None:
    goals = generate_instructions(store, 60, seed=0)
    assert len({g.target_id for g in goals}) == 60
    assert generate_instructions(store, 60, seed=0) == goals
    assert generate_instructions(store, 60, seed=1) != goals
    for g in goals:
        target = store.by_id[g.target_id]
        assert (g.category, g.product_type) == (target.category, target.product_type)
        assert 2 <= len(g.attributes) <= 3
        assert set(g.attributes) <= set(target.attributes)
        for name, value in g.options:
            assert value in target.offered()[name]
        assert target.price <= g.price_ceiling
        text = g.text
        assert target.product_type in text
        assert all(a in text for a in g.attributes)
        assert all(v in text for _, v in g.options)
        assert f"{g.price_ceiling:.2f}" in text
        assert reward(g, target, g.goal_options) == 1.0  # always satisfiable
    openings = Counter(" ".join(g.text.split()[:2]) for g in goals)
    assert len(openings) >= 5  # several templates and phrasings


# -- the reward --------------------------------------------------------------------------
def _goal(store: Catalogue) -> Instruction:
    return generate_instructions(store, 1, seed=3)[0]


def test_reward_edge_cases(store: Catalogue) -> None:
    goal = _goal(store)
    target = store.by_id[goal.target_id]
    n = goal.constraints
    assert reward(goal, target, goal.goal_options) == 1.0
    # options only partly chosen (or not at all): their share is lost
    first, *_ = goal.options
    assert reward(goal, target, dict([first])) == pytest.approx((n - len(goal.options) + 1) / n)
    assert reward(goal, target, {}) == pytest.approx((n - len(goal.options)) / n)
    # an option value other than the one asked for does not count
    name, value = first
    others = [v for v in target.offered()[name] if v != value]
    if others:
        wrong = {**goal.goal_options, name: others[0]}
        assert reward(goal, target, wrong) == pytest.approx((n - 1) / n)
    # over the price ceiling: the price's share is lost
    dear = type(target)(**{**target.__dict__, "price": goal.price_ceiling + 0.01})
    assert reward(goal, dear, goal.goal_options) == pytest.approx((n - 1) / n)
    # a product of another category is worth little whatever else matches
    foreign = next(p for p in store.products if p.category != goal.category)
    assert reward(goal, foreign, {}) <= 0.1
    clone = type(target)(**{**target.__dict__, "category": foreign.category, "product_type": "x"})
    assert reward(goal, clone, goal.goal_options) == pytest.approx(0.1)
    # another type of the same category: half
    sibling = next(t for t in CATEGORIES[goal.category].types if t != goal.product_type)
    cousin = type(target)(**{**target.__dict__, "product_type": sibling})
    assert reward(goal, cousin, goal.goal_options) == pytest.approx(0.5)
    assert all(0 <= reward(goal, p, {}) <= 1 for p in store.products[:200])


# -- search and tools --------------------------------------------------------------------
def test_bm25_search_finds_a_product_by_its_title(store: Catalogue) -> None:
    top1 = 0
    for p in store.products[::24]:
        hits = store.search(p.title)
        assert 1 <= len(hits) <= 10
        assert p in hits, p.title
        top1 += hits[0] == p
    assert top1 >= 0.7 * len(store.products[::24])
    assert store.search("the of and") == []  # stop words only


async def test_tools_and_their_error_observations(store: Catalogue) -> None:
    goal = _goal(store)
    session = WebShopSession(store, goal)
    tools = {t.name: t for t in session.tools()}
    assert tools["buy"].side_effects
    assert not tools["search"].side_effects
    listing = await tools["search"].invoke({"query": " ".join(goal.attributes)})
    assert listing.startswith("1. [B0")
    first = re.findall(r"\[(B0[0-9A-Z]{8})\]", listing)
    page = await tools["open_item"].invoke({"item_id": listing, "rank": 2})
    assert page.startswith(f"[{first[1]}]")
    assert "Options:" in page
    assert "Attributes:" in page
    assert session.opened == [store.by_id[first[1]]]
    with pytest.raises(ToolArgumentError, match="no item"):
        session.do_open("B0NOSUCHID")
    with pytest.raises(ToolArgumentError, match="rank 11"):
        session.do_open(listing, 11)
    target = store.by_id[goal.target_id]
    name, values = target.options[0]
    missing = next(v for v in CATEGORIES[goal.category].options[0][1] if v not in values)
    with pytest.raises(ToolArgumentError, match="not offered"):
        session.do_buy(target.item_id, {name: missing})
    with pytest.raises(ToolArgumentError, match="no option"):
        session.do_buy(target.item_id, {"engraving": "yes"})
    assert session.purchase is None
    done = await tools["buy"].invoke({"item_id": target.item_id, "options": goal.goal_options})
    assert done.startswith(f"Bought {target.item_id}")
    assert session.reward == 1.0
    with pytest.raises(ToolError, match="already bought"):
        session.do_buy(target.item_id, goal.goal_options)
    with pytest.raises(ToolError, match="episode is over"):
        session.do_search("anything")
    assert session.purchase is not None
    assert session.purchase.item_id == target.item_id


async def test_a_second_buy_is_an_error_observation_in_a_run(store: Catalogue) -> None:
    goal = _goal(store)
    target = store.by_id[goal.target_id]
    options = json.dumps(goal.goal_options)
    model = ScriptedModel(
        [
            '1. open_item("B0NOSUCHID")\njoin()<END_OF_PLAN>',
            "Thought: no such item.\nAction: Replan(buy the target)",
            f'2. buy("{target.item_id}", {options})\njoin()<END_OF_PLAN>',
            "Thought: again.\nAction: Replan(buy it once more)",
            f'3. buy("{target.item_id}", {options})\njoin()<END_OF_PLAN>',
            "Thought: done.\nAction: Finish(bought)",
        ]
    )
    episode = await webshop_episode("dagcall", store, goal, model=model)
    assert episode.error is None
    assert episode.run is not None
    observations = {t.id: str(t.observation) for t in episode.run.tasks}
    assert "no item" in observations[1]
    assert observations[2].startswith("Bought")
    assert "already bought" in observations[3]
    assert episode.reward == 1.0


# -- the systems -------------------------------------------------------------------------
async def test_the_three_systems_shop_on_the_simulated_profile(store: Catalogue) -> None:
    goals = generate_instructions(store, 4, seed=0)
    episodes = await asyncio.gather(
        *(
            webshop_episode(system, store, goal, simulated=simulated)
            for goal in goals
            for system in WEBSHOP_SYSTEMS
        )
    )
    for ep in episodes:
        assert ep.error is None, ep.error
        assert ep.run is not None
        assert ep.session.purchase is not None  # every system buys exactly once
        assert ep.session.buy_attempts == 1
        assert 0 <= ep.reward <= 1
        assert ep.run.answer.startswith("bought")
    calls = {s: [len(run_of(e).usage) for e in episodes if e.system == s] for s in WEBSHOP_SYSTEMS}
    # dagcall opens several items per model call; LATS makes the most calls
    assert sum(calls["dagcall"]) <= sum(calls["react"]) < sum(calls["lats"])
    for ep in episodes:
        if ep.system == "dagcall":
            first = [t for t in run_of(ep).tasks if t.round == 0]
            tools = [t.tool for t in first]
            assert tools[:6] == ["search"] + ["open_item"] * 5
            assert tools[6:] in (["choose", "buy"], [])


async def test_reference_policies_differ_by_how_many_items_they_see(store: Catalogue) -> None:
    """ReAct buys the first item it judges a fit; with no fit seen it buys the best seen."""
    goal = _goal(store)
    session = WebShopSession(store, goal)
    shopper = Shopper(session)
    assert "search(" in shopper.react_step(1)
    session.do_search(shopper.queries()[0])
    step = shopper.react_step(2)
    assert "open_item(" in step
    candidates = shopper.candidates()
    assert all(p.price <= goal.price_ceiling for p in candidates)
    session.do_open(candidates[0].item_id)
    assert shopper.judge(store.by_id[goal.target_id]) == 1.0
    last = shopper.react_step(7)  # the budget's last action: buy the best seen
    assert last.split("Action: ")[1].startswith("buy(")


async def test_episodes_are_isolated_under_concurrency(store: Catalogue) -> None:
    goal = _goal(store)
    episodes = await asyncio.gather(
        *(webshop_episode("dagcall", store, goal, simulated=simulated) for _ in range(4))
    )
    sessions = {id(e.session) for e in episodes}
    assert len(sessions) == 4
    for e in episodes:
        assert e.session.buy_attempts == 1  # no episode saw another's purchase
        assert e.error is None


# -- real models: the prompts and plans ---------------------------------------------------
async def test_dagcall_with_a_real_model_gets_real_prompts(store: Catalogue) -> None:
    goal = _goal(store)
    query = " ".join([*goal.attributes, goal.product_type])
    results = store.search(query)
    pick = results[0]
    options = {n: v for n, v in goal.options if v in pick.offered()[n]}
    model = ScriptedModel(
        [
            f"1. search({json.dumps(query)})\n"
            + "".join(f'{i}. open_item("$1", rank={i - 1})\n' for i in range(2, 5))
            + "5. join()\n<END_OF_PLAN>",
            f"Thought: it fits.\nAction: Replan(buy {pick.item_id})",
            f"6. buy({json.dumps(pick.item_id)}, {json.dumps(options)})\n7. join()\n<END_OF_PLAN>",
            f"Thought: bought.\nAction: Finish(bought {pick.item_id})",
        ]
    )
    episode = await webshop_episode("dagcall", store, goal, model=model)
    assert episode.error is None, episode.error
    system = model.calls[0].messages[0].content
    for text in ("search(query", "open_item(item_id", "buy(item_id", "rank, the 1-based rank"):
        assert text in system
    assert 'open_item("$1", rank=1)' in system
    assert DAGCALL_EXAMPLES.splitlines()[0] in system
    assert goal.text in model.calls[0].messages[-1].content
    assert [t.tool for t in run_of(episode).tasks if t.round == 0] == ["search"] + ["open_item"] * 3
    assert episode.session.purchase is not None
    assert episode.session.purchase.item_id == pick.item_id
    model.assert_all_used()


async def test_react_and_lats_with_a_real_model(store: Catalogue) -> None:
    goal = _goal(store)
    target = store.by_id[goal.target_id]
    buy = f"buy({json.dumps(target.item_id)}, {json.dumps(goal.goal_options)})"
    react = ScriptedModel(
        [
            f'Thought: search.\nAction: search("{goal.product_type}")',
            f'Thought: look.\nAction: open_item("{target.item_id}")',
            f"Thought: buy.\nAction: {buy}",
            "Thought: done.\nAction: Finish(bought)",
        ]
    )
    ep = await webshop_episode("react", store, goal, model=react)
    assert ep.error is None
    assert ep.reward == 1.0
    assert REACT_EXAMPLES.splitlines()[2] in react.calls[0].messages[0].content

    def lats(messages: list[Message]) -> str:
        prompt = messages[-1].content
        if prompt.startswith("Instruction:"):
            return "It matches.\nScore: 10"
        if "Now buy" in prompt:
            assert target.item_id in prompt
            return f"Action: {buy}"
        if "(nothing yet)" in prompt:
            assert "search(query" in prompt  # the tools' descriptions
            return f'Action: search("{goal.product_type}")'
        return f'Action: open_item("{target.item_id}")'

    ep = await webshop_episode("lats", store, goal, model=ScriptedModel(lats))
    assert ep.error is None, ep.error
    assert ep.reward == 1.0
    assert ep.run is not None
    assert [t.tool for t in ep.run.tasks] == ["search", "open_item", "buy"]


# -- the harness -------------------------------------------------------------------------
async def test_run_webshop_records_reward_and_success() -> None:
    config = BenchConfig(workloads=("webshop",), time_scale=0.005, webshop_episodes=3)
    records = await run_webshop(config)
    assert len(records) == 3 * len(WEBSHOP_SYSTEMS)
    for r in records:
        assert r.reward is not None
        assert 0 <= r.reward <= 1
        assert r.correct == (r.reward == 1.0)
        assert r.latency > 0
        assert r.llm_calls >= 2
        assert r.cost
        assert (r.bound is not None) == (r.system == "dagcall")


def test_bench_cli_smoke_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    code = main(
        ["bench", "-w", "webshop", "--limit", "2", "--time-scale", "0.005", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| webshop | lats | 2 |" in captured.out
    assert "mean reward" in captured.out
    assert "speedup vs lats" in captured.out
    assert "101.7x" in captured.out
    report = (out / "report.md").read_text()
    assert "| webshop | dagcall | 2 |" in report
    summary = json.loads((out / "summary.json").read_text())
    rows = {s["system"]: s for s in summary["summaries"]}
    assert set(rows) == set(WEBSHOP_SYSTEMS)
    assert rows["dagcall"]["mean_reward"] is not None
    assert rows["dagcall"]["versus"]["lats"]["speedup"] > 0
    assert (out / "latency.png").exists()


async def test_run_bench_with_webshop_alone(tmp_path: Path) -> None:
    config = BenchConfig(workloads=("webshop",), time_scale=0.005, limit=1)
    outcome = await run_bench(config)
    assert {s.system for s in outcome.summaries} == set(WEBSHOP_SYSTEMS)
    react = next(s for s in outcome.summaries if s.system == "react")
    assert react.speedup == pytest.approx(1.0)
    assert "lats" in react.versus
    written = write_report(outcome, tmp_path)
    assert "WebShop, scored by WebShop's reward" in (tmp_path / "report.md").read_text()
    assert tmp_path / "summary.json" in written


async def test_choose_picks_a_page_and_buy_buys_the_choice(store: Catalogue) -> None:
    goal = _goal(store)
    query = " ".join([*goal.attributes, goal.product_type])
    results = store.search(query)
    pick = results[1]
    options = {n: v for n, v in goal.options if v in pick.offered()[n]}
    plan = (
        f"1. search({json.dumps(query)})\n"
        '2. open_item("$1", rank=1)\n3. open_item("$1", rank=2)\n'
        '4. choose(["$2", "$3"])\n5. buy("$4")\n6. join()\n<END_OF_PLAN>'
    )
    choice = "The second fits.\n" + json.dumps({"item_id": pick.item_id, "options": options})
    model = ScriptedModel([plan, choice, "Thought: bought.\nAction: Finish(bought)"])
    episode = await webshop_episode("dagcall", store, goal, model=model)
    run = run_of(episode)
    assert [t.tool for t in run.tasks] == ["search", "open_item", "open_item", "choose", "buy"]
    prompt = model.calls[1].messages[-1].content
    assert goal.text in prompt
    assert f"[{results[0].item_id}]" in prompt
    assert "say so" in prompt
    assert episode.session.purchase is not None
    assert episode.session.purchase.item_id == pick.item_id
    assert "choose(pages" in model.calls[0].messages[0].content
    # nothing fits: the buy buys nothing, and says why
    model = ScriptedModel(
        [
            plan,
            '{"item_id": null, "reason": "none is waterproof"}',
            "Thought: none.\nAction: Finish(no purchase)",
        ]
    )
    episode = await webshop_episode("dagcall", store, goal, model=model)
    buy = run_of(episode).tasks[-1]
    assert "nothing was bought (none is waterproof)" in str(buy.observation)
    assert episode.session.purchase is None
    # a choice of a page that was not shown is an error observation
    model = ScriptedModel(
        [plan, '{"item_id": "B0NOTSHOWN0"}', "Thought: none.\nAction: Finish(no purchase)"]
    )
    episode = await webshop_episode("dagcall", store, goal, model=model)
    assert "not one of the pages" in str(run_of(episode).tasks[3].observation)
