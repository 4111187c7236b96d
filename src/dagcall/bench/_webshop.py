"""WebShop: ReAct, a LATS-style tree search and dagcall shopping in the offline store.

The store, the instructions and the reward are in :mod:`._webshop_store`.  Three systems
shop for each instruction, each episode in its own store session:

* **ReAct** - one action per model call (search, open an item, buy), the whole page history
  resent each time, at most ``REACT_STEPS`` model calls.
* **LATS** (Zhou et al., 2024), in its spirit: at a search-results state it samples
  ``LATS_CHILDREN`` candidate actions (one model call each), runs them, and has the model
  score every child page (one value call each); it keeps the best-scored item, and when no
  child fits it backtracks to the results (or to a new search) and expands the next
  candidates, for up to ``LATS_ITERATIONS`` expansions; then it buys the best item.  Every
  call is made one after another, as in its paper.
* **dagcall** - one plan searches, opens the top ``DAGCALL_OPEN`` results in parallel, has
  ``choose`` (a model call over the pages, dagcall's tool for the choice) pick the item that
  fits with its options, and buys the choice; when nothing fits the buy buys nothing, and the
  joiner replans: the next results by id, then a second search, and in the last round the
  planner buys the best item seen.

With a simulated model every system's model follows one reference policy - the same reader
of pages for all three - and only the structure differs.  The reader knows the instruction
and scores a page by the constraints it satisfies (the reward it would give), except that on
one near-miss page in ``MISREAD`` (seeded by episode and item, the same in every system) it
overlooks one unmet constraint and takes a near miss for a fit.  ReAct buys the first item
it judges a fit, opening the price-fitting results in rank order; LATS and dagcall's
``choose`` take the best-judged item they have seen (ties by rank), and all three settle for
the best seen when their budget is spent.  dagcall's first round opens the top results before
it has seen their prices (it plans before the search returns); the others skip results over
the budget.  So success rates differ only by how many items each system looks at within its
budget, and by what the misreads cost it.  With a real model (``--model``) the same tools,
prompts and examples are used and the model decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dagcall import (
    Compiler,
    DagcallError,
    Optimizations,
    Round,
    RunResult,
    StopReason,
    TaskSpec,
    TaskStatus,
    Tool,
    ToolError,
    call_model,
    parse_plan,
)
from dagcall.models import Message, Model
from dagcall.scaffold import RunLimits, RunScope, drive

from ..baselines import ReActAgent
from ._runner import BenchConfig, BenchRecord, record_of
from ._simulate import WebLatency, count_tokens
from ._webshop_store import (
    Catalogue,
    Instruction,
    Product,
    WebShopSession,
    catalogue,
    generate_instructions,
    reward,
)

__all__ = [
    "WEBSHOP_SYSTEMS",
    "Episode",
    "Shopper",
    "build_episode",
    "run_webshop",
    "webshop_episode",
]

WEBSHOP_SYSTEMS = ("react", "lats", "dagcall")
REACT_STEPS = 8  # a search, up to five pages, a buy and its Finish (or a second search)
LATS_CHILDREN = 3
LATS_ITERATIONS = 3
DAGCALL_OPEN = 5
DAGCALL_REPLANS = 3  # up to three rounds of looking, then the purchase
MISREAD = 10  # one page in ten is misread (a near miss taken for a fit)
#: Episodes run at once.  Their prompts carry whole pages, and the tokenizer's time at more
#: at once (2 cores) would count against the simulated clock, scaled up by the time scale.
WEBSHOP_CONCURRENCY = 4
_FIT = 1.0 - 1e-9


def approve_purchases(record: Any) -> bool:
    """The benchmark approves its own purchases (``buy`` is side-effecting)."""
    return True


# -- the reference policy ----------------------------------------------------------------
@dataclass
class Shopper:
    """The simulated model's reading of one episode: the instruction it understood, and its
    judgement of the pages the tools have shown (taken from the episode's session)."""

    session: WebShopSession
    seed: int = 0
    rounds: int = 0  # dagcall: planner calls so far
    next_id: int = 1  # dagcall: the next plan's first task id

    @property
    def goal(self) -> Instruction:
        return self.session.goal

    def queries(self) -> list[str]:
        """The first query (the attributes and the product type), then a broader one."""
        g = self.goal
        first = " ".join([*g.attributes, g.product_type])
        second = " ".join([g.product_type, *(v for _, v in g.options), g.attributes[-1]])
        return [first, second]

    def next_query(self) -> str | None:
        done = [q for q, _ in self.session.searches]
        return next((q for q in self.queries() if q not in done), None)

    def options_for(self, product: Product) -> dict[str, str]:
        """The instruction's options the product offers (the others cannot be chosen)."""
        offered = product.offered()
        return {n: v for n, v in self.goal.options if v in offered.get(n, ())}

    def judge(self, product: Product) -> float:
        """The reward the reader thinks buying ``product`` would give."""
        true = reward(self.goal, product, self.options_for(product))
        digest = hashlib.sha256(f"{self.seed}:{self.goal.id}:{product.item_id}".encode())
        rng = random.Random(digest.digest())  # noqa: S311 - seeded noise, not a secret
        near_miss = true >= 1 - 1 / self.goal.constraints - 1e-9
        if true < _FIT and near_miss and rng.randrange(MISREAD) == 0:
            return 1.0
        return true

    def candidates(self) -> list[Product]:
        """Results not yet opened, in rank order, whose listed price fits the budget."""
        seen = {p.item_id for p in self.session.opened}
        out: list[Product] = []
        for _, results in self.session.searches:
            for p in results:
                if p.item_id not in seen and p.price <= self.goal.price_ceiling:
                    seen.add(p.item_id)
                    out.append(p)
        return out

    def best(self) -> Product | None:
        """The best-judged item opened (the earliest of equals)."""
        opened = self.session.opened
        if not opened:
            return None
        return max(opened, key=lambda p: (self.judge(p), -opened.index(p)))

    def fallback(self) -> Product | None:
        """What to buy when nothing opened: the first result."""
        for _, results in self.session.searches:
            if results:
                return results[0]
        return None

    def buy_call(self, product: Product) -> str:
        return f"buy({json.dumps(product.item_id)}, {json.dumps(self.options_for(product))})"

    def finish(self) -> str:
        p = self.session.purchase
        if p is None:
            return "Thought: Nothing was bought.\nAction: Finish(no purchase)"
        shown = ", ".join(f"{k} {v}" for k, v in p.options.items())
        return f"Thought: The purchase is done.\nAction: Finish(bought {p.item_id} ({shown}))"

    # -- ReAct -----------------------------------------------------------------------------
    def react_step(self, step: int) -> str:
        """ReAct's step ``step`` (1-based): first fit wins, one page per step."""
        if self.session.purchase is not None or self.session.buy_attempts:
            return self.finish()
        last = self.session.opened[-1] if self.session.opened else None
        chosen: Product | None = None
        if last is not None and self.judge(last) >= _FIT:
            chosen = last
        elif step >= REACT_STEPS - 1:  # room for the buy and the Finish only
            chosen = self.best() or self.fallback()
            if chosen is None:
                return self.finish()
        if chosen is not None:
            return f"Thought: {chosen.item_id} is the best I found; I buy it.\nAction: " + (
                self.buy_call(chosen)
            )
        if self.session.searches:
            candidates = self.candidates()
            if candidates:
                item = candidates[0].item_id
                return f"Thought: I check the next result.\nAction: open_item({json.dumps(item)})"
        query = self.next_query()
        if query is None:
            chosen = self.best() or self.fallback()
            if chosen is None:
                return self.finish()
            return "Thought: Nothing better is left; I buy the best.\nAction: " + (
                self.buy_call(chosen)
            )
        return f"Thought: I search the store.\nAction: search({json.dumps(query)})"

    # -- LATS ------------------------------------------------------------------------------
    def lats_action(self, state: str) -> str:
        """A sampled action at a search-results state: the best unexplored result, else a new
        search, else the purchase."""
        if state == "root":
            query = self.next_query()
            if query is not None:
                return f"Action: search({json.dumps(query)})"
        if state == "buy":
            chosen = self.best() or self.fallback()
            return "Action: " + (self.buy_call(chosen) if chosen else "Finish(no purchase)")
        candidates = self.candidates()
        if candidates:
            return f"Action: open_item({json.dumps(candidates[0].item_id)})"
        query = self.next_query()
        if query is not None:
            return f"Action: search({json.dumps(query)})"
        chosen = self.best() or self.fallback()
        return "Action: " + (self.buy_call(chosen) if chosen else "Finish(no purchase)")

    def lats_value(self, item_id: str) -> str:
        product = self.session.store.by_id.get(item_id)
        score = round(1 + 9 * self.judge(product)) if product else 1
        return f"Thought: I compare the page with the instruction.\nScore: {score}"

    # -- dagcall ---------------------------------------------------------------------------
    def plan(self) -> str:
        """The planner's plan for the next round (task ids continue across rounds): open
        items in parallel, choose among them, buy the choice; in the last round, or with
        nothing left to look at, buy the best item seen."""
        self.rounds += 1
        exhausted = not self.candidates() and self.next_query() is None
        first = self.next_id
        calls: list[str] = []
        if self.session.opened and (self.rounds > DAGCALL_REPLANS or exhausted):
            best = self.best()
            calls = [self.buy_call(best)] if best is not None else []
        elif self.candidates():
            ids = [p.item_id for p in self.candidates()[:DAGCALL_OPEN]]
            calls = [f"open_item({json.dumps(i)})" for i in ids]
        elif (query := self.next_query()) is not None:
            calls = [f"search({json.dumps(query)})"]
            calls += [f'open_item("${first}", rank={r})' for r in range(1, DAGCALL_OPEN + 1)]
        elif (fallback := self.fallback()) is not None:
            calls = [self.buy_call(fallback)]
        if calls and not calls[0].startswith("buy("):
            pages = [first + i for i, c in enumerate(calls) if c.startswith("open_item(")]
            choose = first + len(calls)
            calls.append("choose([" + ", ".join(f'"${p}"' for p in pages) + "])")
            calls.append(f'buy("${choose}")')
        lines = [f"{first + i}. {call}" for i, call in enumerate(calls)]
        self.next_id += len(calls)
        return "\n".join([*lines, "join()<END_OF_PLAN>"])

    def join(self) -> str:
        if self.session.purchase is not None:
            return self.finish()
        return "Thought: None of these fits.\nAction: Replan(look at more products)"

    def choose_reply(self, messages: list[Message]) -> str:
        """The ``choose`` tool's model: the best-judged page shown (the earliest of equals),
        if it fits (or the prompt says to settle)."""
        prompt = messages[-1].content
        ids = list(dict.fromkeys(_PAGE_ID.findall(prompt)))
        products = [self.session.store.by_id[i] for i in ids if i in self.session.store.by_id]
        if not products:
            return '{"item_id": null, "reason": "no product pages were given"}'
        best = max(products, key=lambda p: (self.judge(p), -products.index(p)))
        if self.judge(best) < _FIT and SETTLE_LINE not in prompt:
            return json.dumps(
                {"item_id": None, "reason": f"none of the {len(products)} products fits"}
            )
        return json.dumps({"item_id": best.item_id, "options": self.options_for(best)})


# -- prompts for real models -------------------------------------------------------------
_EXAMPLE_INSTRUCTION = (
    "i need a machine wash slim fit men's shirt in navy and size large, and price lower "
    "than 30.00 dollars"
)
_EXAMPLE_RESULTS = (
    "1. [B0EXAMPLE1] Dunmore Men's Shirt - Slim Fit, Machine Wash | $24.99\n"
    "2. [B0EXAMPLE2] Lumen Men's Shirt - Machine Wash | $21.49\n"
    "3. [B0EXAMPLE3] Kestrel Men's Shirt - Slim Fit | $34.95"
)
_EXAMPLE_PAGE = (
    "[B0EXAMPLE1] Dunmore Men's Shirt - Slim Fit, Machine Wash\nPrice: $24.99\n"
    "Category: fashion > men's shirt\nAttributes: slim fit, machine wash, cotton\n"
    "Options:\n  size: medium, large, x-large\n  color: black, navy\nDescription: ..."
)
_EXAMPLE_BUY = 'buy("B0EXAMPLE1", {"size": "large", "color": "navy"})'

DAGCALL_EXAMPLES = f"""Here is an example of shopping. Search, open several of the results at
once (the search's result list and a rank), choose among their pages and buy the choice; if
nothing fits, the buy fails and you plan again with more products.

Question: {_EXAMPLE_INSTRUCTION}
1. search("machine wash slim fit men's shirt")
2. open_item("$1", rank=1)
3. open_item("$1", rank=2)
4. open_item("$1", rank=3)
5. open_item("$1", rank=4)
6. open_item("$1", rank=5)
7. choose(["$2", "$3", "$4", "$5", "$6"])
8. buy("$7")
9. join()
<END_OF_PLAN>

If the joiner replies "Replan(none of them fits)", open the next results by their ids, or
search again, the same way; in the last round choose with settle=True."""

REACT_EXAMPLES = f"""Here is an example:

Question: {_EXAMPLE_INSTRUCTION}
Thought: I search for the product type and its attributes.
Action: search("machine wash slim fit men's shirt")
Observation: {_EXAMPLE_RESULTS}
Thought: The first result is under 30 dollars; I check its options.
Action: open_item("B0EXAMPLE1")
Observation: {_EXAMPLE_PAGE}
Thought: It is slim fit, machine wash, comes in navy and large, and costs $24.99.
Action: {_EXAMPLE_BUY}
Observation: Bought B0EXAMPLE1 (Dunmore Men's Shirt, size large, color navy) for $24.99.
Thought: The purchase is done.
Action: Finish(bought B0EXAMPLE1)"""

CHOOSE_DOC = (
    'Choose, among product pages (the results of open_item, e.g. ["$2", "$3", "$4"]), the '
    "one that satisfies every requirement of the instruction, with the options to buy it in. "
    'Returns the choice, for buy("$N"), or says that none fits (buy then buys nothing). '
    "settle=True: the closest product even if none fits."
)
SETTLE_LINE = "If none satisfies all of them, choose the closest one."
CHOOSE_PROMPT = """Instruction: {instruction}

Product pages:
{pages}

Which product satisfies every requirement of the instruction (its type, attributes, options
and price)? {rule}
Reply with one line of JSON: {{"item_id": "B0...", "options": {{"size": "...", ...}}}} with the
instruction's options, or {{"item_id": null, "reason": "..."}}."""


def _read_choice(text: str, pages: list[str]) -> str:
    """A choice reply as the JSON ``buy`` reads, checked against the pages shown."""
    found = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(found.group(0)) if found else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ToolError(f"choose: the model's reply is not a choice: {text[:120]!r}", tool="choose")
    item = data.get("item_id")
    if not item:
        return json.dumps({"item_id": None, "reason": str(data.get("reason", "none fits"))})
    shown = set(_ITEM_ID.findall("\n".join(pages)))
    if str(item) not in shown:
        raise ToolError(f"choose: {item!r} is not one of the pages given", tool="choose")
    options = data.get("options")
    options = {str(k): str(v) for k, v in options.items()} if isinstance(options, dict) else {}
    return json.dumps({"item_id": str(item), "options": options})


def choose_tool(goal: Instruction, model: Model) -> Tool:
    """``choose(pages, settle=False)``: a model call that picks the fitting page."""

    async def choose(pages: list[str], settle: bool = False) -> str:
        prompt = CHOOSE_PROMPT.format(
            instruction=goal.text,
            pages="\n\n".join(pages),
            rule=SETTLE_LINE if settle else "If none satisfies all of them, say so.",
        )
        reply = await call_model(model, [Message("user", prompt)], max_tokens=200)
        return _read_choice(reply.text, pages)

    return Tool(choose, description=CHOOSE_DOC)


LATS_ACTION_PROMPT = """You shop in a web store for this instruction:
{instruction}

Tools:
{tools}

What you have seen so far:
{state}

Actions already tried here (choose another): {tried}
Reply with one line, "Action: <one tool call>", e.g. Action: open_item("B0AB12CD34")."""

LATS_VALUE_PROMPT = """Instruction: {instruction}

A product page:
{page}

How well does this product satisfy the instruction (its type, attributes, options and
price)?  Think in one or two sentences, then end with "Score: N" from 1 (not at all) to 10
(every requirement met)."""

_ITEM_ID = re.compile(r"\bB0[0-9A-Z]{8}\b")
_PAGE_ID = re.compile(r"^\[(B0[0-9A-Z]{8})\]", re.M)
_SCORE = re.compile(r"score\s*:\s*(\d+(?:\.\d+)?)", re.I)
_ACTION = re.compile(r"Action\s*:\s*(.+)", re.I)


# -- LATS --------------------------------------------------------------------------------
class _LatsRun(RunScope):
    """The tree search, one call at a time: expand, evaluate, backtrack, then buy."""

    def __init__(self, session: WebShopSession, tools: list[Any], model: Model) -> None:
        self.by_name = {t.name: t for t in tools}
        limits = RunLimits(approve=approve_purchases)
        super().__init__(session.goal.text, self.by_name, limits, None)
        self.session = session
        self.model = model
        self.listing = "\n\n".join(t.render() for t in tools)
        self.rnd = Round(index=0)
        self.results = ""  # the latest search's results
        self.scores: dict[str, float] = {}  # item id -> the model's score of its page
        self.best_page = ""

    def state_text(self, state: str) -> str:
        """What the model is shown: the latest search results, the scores it gave the items
        it opened, and the page it is at (the best one when it is to buy)."""
        if not self.session.searches:
            return "(nothing yet)"
        parts = [f"Search results:\n{self.results}"]
        if self.scores:
            scored = ", ".join(f"{i}: {v:g}/10" for i, v in self.scores.items())
            parts.append(f"Items opened, with the scores you gave them: {scored}")
        if state == "buy" and self.best_page:
            parts.append(f"The best item's page:\n{self.best_page}\n\nNow buy the best product.")
        elif state == "buy":
            parts.append("Now buy the best product.")
        return "\n\n".join(parts)

    async def act(self, state: str, tried: list[str]) -> TaskSpec | None:
        prompt = LATS_ACTION_PROMPT.format(
            instruction=self.session.goal.text,
            tools=self.listing,
            state=self.state_text(state),
            tried=", ".join(tried) or "none",
        )
        reply = await self.call_model("react", self.model, [Message("user", prompt)])
        match = _ACTION.search(reply.text)
        if match is None:
            return None
        items, _ = parse_plan(f"1. {match.group(1).strip()}\n", set(self.by_name))
        return next((i for i in items if isinstance(i, TaskSpec)), None)

    async def value(self, page: str) -> float:
        prompt = LATS_VALUE_PROMPT.format(instruction=self.session.goal.text, page=page)
        reply = await self.call_model("react", self.model, [Message("user", prompt)])
        found = _SCORE.findall(reply.text)
        return float(found[-1]) if found else 0.0

    async def run_task(self, spec: TaskSpec) -> str | None:
        task_id = len(self.scheduler.records) + 1
        kwargs = dict(spec.kwargs)
        spec = TaskSpec(
            task_id, spec.tool, spec.args, kwargs, frozenset(), spec.call, raw_kwargs=kwargs
        )
        record = self.scheduler.submit(spec, 0)
        self.rnd.task_ids.append(task_id)
        self.result.tasks.append(record)
        await self.wait_for_tasks()
        done = self.scheduler.records[task_id]
        text = done.observation
        if done.status is not TaskStatus.DONE:
            return None
        if spec.tool == "search":
            self.results = text
        return text

    async def body(self) -> None:
        self.result.rounds.append(self.rnd)
        best: tuple[float, str] | None = None
        # the root's expansion: n sampled actions (searches); equal samples are merged
        samples = [await self.act("root", []) for _ in range(LATS_CHILDREN)]
        searched: list[str] = []
        for spec in samples:
            if spec is not None and spec.tool == "search" and spec.call not in searched:
                searched.append(spec.call)
                await self.run_task(spec)
        expanded = set(searched)
        for _ in range(LATS_ITERATIONS):
            children: list[str] = []
            tried: list[str] = []
            for _ in range(LATS_CHILDREN):
                spec = await self.act("results", tried)
                if spec is None or spec.tool == "buy":
                    break
                if spec.call in expanded:  # a sample equal to a node the tree has: merged
                    continue
                expanded.add(spec.call)
                tried.append(spec.call)
                page = await self.run_task(spec)
                if page is not None and spec.tool == "open_item":
                    children.append(page)
                if spec.tool == "search":  # backtracked to a new search: expand it next
                    break
            for page in children:
                score = await self.value(page)
                found = _ITEM_ID.search(page)
                if found:
                    self.scores[found.group(0)] = score
                if best is None or score > best[0]:
                    best = (score, page)
                    self.best_page = page
            if best is not None and best[0] >= 10:
                break
        spec = await self.act("buy", [])
        if spec is not None and spec.tool == "buy":
            await self.run_task(spec)
        purchase = self.session.purchase
        self.result.answer = f"bought {purchase.item_id}" if purchase else "no purchase"
        self.result.stop_reason = StopReason.FINISH


# -- running episodes --------------------------------------------------------------------
@dataclass
class Episode:
    """One instruction run by one system: its session, its run and its reward."""

    system: str
    session: WebShopSession
    run: RunResult | None
    error: str | None = None

    @property
    def reward(self) -> float:
        return self.session.reward


def build_episode(
    system: str,
    store: Catalogue,
    goal: Instruction,
    *,
    model: Model | None = None,
    simulated: Callable[[Callable[[list[Message]], str]], Model] | None = None,
    latency: WebLatency | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
    optimize: Optimizations | bool = True,
) -> tuple[WebShopSession, Callable[[], Awaitable[RunResult]]]:
    """One episode's session and the coroutine factory that runs it.  With ``model`` the
    model decides; otherwise ``simulated(reply)`` makes the simulated model that speaks the
    reference policy's ``reply``.  Everything is built here, before any episode's clock
    starts (building tools is not free, and concurrent episodes would pay for it)."""
    session = WebShopSession(store, goal)
    if latency is not None:  # keyed by what a call fetches: the same page costs the same
        web = latency
        session.delay = lambda tool, key: web.of(goal.id, tool, key) * time_scale
    shopper = Shopper(session, seed=seed)
    tools = session.tools()

    def speaking(reply: Callable[[list[Message]], str]) -> Model:
        if model is not None:
            return model
        if simulated is None:
            raise ValueError("a simulated episode needs a simulated model factory")
        return simulated(reply)

    if system == "react":
        react = ReActAgent(
            speaking(lambda m: shopper.react_step(1 + m[-1].content.count("\nObservation:"))),
            tools,
            max_steps=REACT_STEPS,
            approve=approve_purchases,
            examples=REACT_EXAMPLES,
        )
        return session, lambda: react.arun(goal.text)
    if system == "lats":
        lats_model = speaking(_lats_reply(shopper))
        return session, lambda: drive(_LatsRun(session, tools, lats_model), None)
    if system == "dagcall":
        chooser = choose_tool(goal, speaking(shopper.choose_reply))
        compiler = Compiler(
            planner_model=speaking(lambda _: shopper.plan()),
            joiner_model=speaking(lambda _: shopper.join()),
            tools=[*tools, chooser],
            max_replans=DAGCALL_REPLANS,
            approve=approve_purchases,
            examples=DAGCALL_EXAMPLES,
            optimize=optimize,
        )
        return session, lambda: compiler.arun(goal.text)
    raise ValueError(f"unknown WebShop system {system!r}")


async def run_episode(
    system: str, session: WebShopSession, runner: Callable[[], Awaitable[RunResult]]
) -> Episode:
    try:
        run = await runner()
    except DagcallError as exc:
        return Episode(system, session, exc.result, repr(exc))
    return Episode(system, session, run)


async def webshop_episode(system: str, store: Catalogue, goal: Instruction, **how: Any) -> Episode:
    """Build and run one episode (see :func:`build_episode` for ``how``)."""
    session, runner = build_episode(system, store, goal, **how)
    return await run_episode(system, session, runner)


def _lats_reply(shopper: Shopper) -> Callable[[list[Message]], str]:
    def reply(messages: list[Message]) -> str:
        prompt = messages[-1].content
        if prompt.startswith("Instruction:"):  # a value prompt: the page's id
            found = re.search(r"\[(B0[0-9A-Z]{8})\]", prompt)
            return shopper.lats_value(found.group(1) if found else "")
        if "Now buy the best product." in prompt:
            return shopper.lats_action("buy")
        if "(nothing yet)" in prompt:
            return shopper.lats_action("root")
        return shopper.lats_action("results")

    return reply


async def run_webshop(config: BenchConfig) -> list[BenchRecord]:
    """Every instruction with every WebShop system, ``config.concurrency`` at a time."""
    store = catalogue(config.webshop_products, config.seed)
    count = min(config.webshop_episodes, config.limit or config.webshop_episodes)
    goals = generate_instructions(store, count, config.seed)
    latency = WebLatency(median=config.tool_latency_median, seed=config.seed)
    # one-off start-up costs (the tokenizer's tables, the index's first query) would count
    # against the first episodes, magnified by the time scale: paid here instead
    count_tokens(goals[0].text if goals else "warm up")
    store.search(goals[0].text if goals else "warm up")
    sem = asyncio.Semaphore(min(config.concurrency, WEBSHOP_CONCURRENCY))

    simulated = config.speaker

    built = [
        (
            goal,
            system,
            build_episode(
                system,
                store,
                goal,
                model=config.model,
                simulated=simulated,
                latency=latency,
                time_scale=config.scale,
                seed=config.seed,
                optimize=config.optimize,
            ),
        )
        for goal in goals
        for system in WEBSHOP_SYSTEMS
    ]

    async def one(
        goal: Instruction,
        system: str,
        episode: tuple[WebShopSession, Callable[[], Awaitable[RunResult]]],
    ) -> BenchRecord:
        async with sem:
            done = await run_episode(system, *episode)
        record = record_of(
            "webshop",
            goal.id,
            system,
            goal.target_id,
            done.run,
            config,
            error=done.error,
            correct=done.reward >= _FIT,
        )
        record.reward = done.reward
        return record

    return list(await asyncio.gather(*(one(*job) for job in built)))
