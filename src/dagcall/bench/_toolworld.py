"""Toolworld: questions over small fictional worlds, with tools no model has seen.

The dataset workloads ask about real entities with ``search`` and ``math``, which a model
may half-know already (and whose prompts it may have met in its training).  Toolworld
measures the other case: can a (small, local) model answer right when both the tools and the
facts are new to it?  Every entity is invented, so an answer is right only when it comes
from the tools, and the systems run with their default prompts (no workload examples).

Three worlds, each a few data tables with strict look-up tools over them:

* **atlas** (the dev set) - six cities of two invented countries:
  ``city_population(city)``, ``city_elevation(city)`` (metres), ``city_founded(city)`` (the
  year), ``encyclopedia(query)`` (a paragraph about a city, country, river or founder: which
  city is a country's capital, which river flows through a city, who founded it) and the
  safe ``calculator(expression)`` of :mod:`dagcall.tools`.
* **orbit** (held out: other tool and argument names) - six planets of three stars:
  ``planet_mass(planet)`` (Earth masses), ``orbital_period(planet)`` (days),
  ``moon_count(planet)``, ``host_star(planet)`` (the star's name), ``star_temperature(star)``
  (kelvin), and the same ``calculator``.
* **depot** (look-ups of two arguments, and a record; its misses shaped the example bank's
  casts of such tools, so it is a dev set too) - a trading house's five
  products, three warehouses, four suppliers and their towns: ``unit_price(product,
  currency)`` (crowns or florins), ``stock_count(product, warehouse)``,
  ``product_details(product)`` (a TypedDict record: supplier, ``weight_kg``, category),
  ``supplier_town(supplier)``, ``delivery_days(warehouse, town)``, and the ``calculator``.
  Its chains go through a field of the record (``supplier_town("$1.supplier")``).

A look-up takes the bare entity name (any case; surrounding spaces and quotes ignored) and
otherwise raises :class:`~dagcall.ToolError` naming one example of a valid argument, so a
model that passes ``"length of the Vell river"`` learns what to pass instead.

Each question has a gold answer of one kind (``number``, ``name`` or ``yesno``) and a
reference plan in dagcall's plan language, one or more rounds: a question whose second hop
depends on reading an encyclopedia paragraph is planned in two rounds (the joiner replans
once the paragraph is in), one whose hop returns a bare name (``host_star``) in one.  The
golds are what the reference plans compute (the tests check it against the tables).

:func:`run_toolworld` runs every question with every system.  With a real model the systems
are built with their default prompts; with the simulated model each speaks the reference:
dagcall's planner the reference plan and its joiner ``Finish(gold)``, ReAct the reference
calls one by one (their ``$N`` replaced by the values a latency-free run of the reference
plan gave), parallel function calling the calls level by level.  Look-ups wait a seeded web
latency; the calculator does not.  :func:`score_toolworld` scores the answers: numbers within
1% (not an unevaluated expression), names as a word of a short answer naming no other
entity, yes/no by the leading word.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from dagcall import (
    BaseTool,
    Compiler,
    DagcallError,
    ExampleBank,
    RunResult,
    TaskSpec,
    Tool,
    ToolError,
    answer_text,
    parse_plan,
)

from ..baselines import ParallelFunctionCallingAgent, ReActAgent
from ..models import Message, ScriptedModel
from ..tools import calculator, math_tool
from ._runner import BenchConfig, BenchRecord, record_of
from ._simulate import WebLatency, with_latency
from ._systems import _nth

__all__ = [
    "TOOLWORLD_WORLDS",
    "ToolworldQuestion",
    "reference_answer",
    "reference_run",
    "run_toolworld",
    "score_toolworld",
    "toolworld_questions",
    "toolworld_tools",
]

TOOLWORLD_WORLDS = ("atlas", "orbit", "depot")
REACT_MAX_STEPS = 12
AnswerKind = Literal["number", "name", "yesno"]

# -- atlas: cities, countries, rivers, founders -------------------------------------------
#: city -> (population, elevation in metres, year founded)
CITIES: dict[str, tuple[int, int, int]] = {
    "Varnholt": (48200, 312, 1412),
    "Quillmere": (31000, 1185, 1630),
    "Brindlecove": (12050, 8, 1587),
    "Marrowick": (96400, 540, 1209),
    "Esselin": (22500, 2040, 1755),
    "Korvessa": (64800, 93, 1340),
}
ARTICLES: dict[str, str] = {
    "Druvania": (
        "Druvania is a mountainous country of the northern Halvard plateau. Its capital and "
        "largest city is Marrowick, and its currency is the druvan mark."
    ),
    "Sel Ardra": (
        "Sel Ardra is a small lake country east of Druvania. Its capital is Quillmere, a city "
        "of glassmakers on the shore of Lake Ardra."
    ),
    "Vell": (
        "The Vell is a slow river that rises in the Ardran hills and flows through the city "
        "of Varnholt before it joins the Ormund."
    ),
    "Ormund": (
        "The Ormund is the longest river of the plateau. It reaches the sea at the harbour "
        "city of Brindlecove."
    ),
    "Aldric Penhallow": (
        "Aldric Penhallow was a surveyor and mapmaker who founded the high mountain town of "
        "Esselin, which he named after his mother."
    ),
    "Varnholt": "Varnholt is a market city of Druvania, on the Vell river.",
    "Quillmere": "Quillmere is the capital of Sel Ardra, on the shore of Lake Ardra.",
    "Brindlecove": "Brindlecove is a fishing and harbour city at the mouth of the Ormund.",
    "Marrowick": "Marrowick is the capital of Druvania and the seat of its old university.",
    "Esselin": "Esselin is a mountain town of Druvania, founded by Aldric Penhallow.",
    "Korvessa": "Korvessa is a river port of Sel Ardra, known for its salt works.",
}
_ALIASES = {
    "vell river": "Vell",
    "river vell": "Vell",
    "the vell": "Vell",
    "ormund river": "Ormund",
    "river ormund": "Ormund",
    "the ormund": "Ormund",
    "penhallow": "Aldric Penhallow",
}

# -- orbit: planets and their stars -------------------------------------------------------
#: planet -> (mass in Earth masses, orbital period in days, moons, host star)
PLANETS: dict[str, tuple[float, float, int, str]] = {
    "Quen": (2.4, 212.0, 3, "Teyvar"),
    "Ostrel": (0.8, 95.0, 0, "Teyvar"),
    "Ibrith": (14.6, 1460.0, 11, "Ossuin"),
    "Morvane": (5.2, 365.0, 2, "Ossuin"),
    "Zephrel": (0.3, 41.0, 1, "Brannoch"),
    "Talluk": (7.9, 730.0, 6, "Brannoch"),
}
#: star -> surface temperature in kelvin
STARS: dict[str, int] = {"Teyvar": 5400, "Ossuin": 3900, "Brannoch": 7200}

# -- depot: a trading house's products, warehouses, suppliers and deliveries --------------
#: product -> (price of one unit in crowns, supplier, weight in kg, category)
PRODUCTS: dict[str, tuple[float, str, float, str]] = {
    "Halloway lamp": (14.0, "Ingle Works", 2.4, "lighting"),
    "Tesk kettle": (9.5, "Carrow Brothers", 1.6, "kitchen"),
    "Morrow rope": (6.0, "Pym Cordage", 3.5, "rigging"),
    "Fenwick stove": (120.0, "Carrow Brothers", 38.0, "kitchen"),
    "Ulna blanket": (22.5, "Dallow Mills", 1.9, "bedding"),
}
#: currency -> how many of it one crown buys
CURRENCIES: dict[str, float] = {"crown": 1.0, "florin": 2.5}
WAREHOUSES: tuple[str, ...] = ("Northgate", "Southmoor", "Eastbridge")
#: product -> units in stock at each warehouse, in the order of WAREHOUSES
STOCK: dict[str, tuple[int, int, int]] = {
    "Halloway lamp": (140, 65, 210),
    "Tesk kettle": (80, 120, 35),
    "Morrow rope": (300, 45, 410),
    "Fenwick stove": (12, 28, 7),
    "Ulna blanket": (90, 150, 60),
}
#: supplier -> the town it is based in
SUPPLIERS: dict[str, str] = {
    "Ingle Works": "Telsby",
    "Carrow Brothers": "Dunmarrow",
    "Pym Cordage": "Cardell",
    "Dallow Mills": "Wexmoor",
}
#: town -> delivery days from each warehouse, in the order of WAREHOUSES
DELIVERY: dict[str, tuple[int, int, int]] = {
    "Telsby": (2, 4, 7),
    "Dunmarrow": (5, 2, 4),
    "Cardell": (3, 6, 1),
    "Wexmoor": (6, 3, 5),
}


def _product(product: str) -> str:
    return _find(PRODUCTS, product, "product", "Tesk kettle")


def _warehouse(warehouse: str) -> int:
    return WAREHOUSES.index(_find(dict.fromkeys(WAREHOUSES), warehouse, "warehouse", "Northgate"))


async def unit_price(product: str, currency: str) -> float:
    """The price of one unit of a product in a currency ("crown" or "florin"), given the bare
    product name (e.g. "Tesk kettle")."""
    key = _bare(currency).removesuffix("s")
    if key not in CURRENCIES:
        raise ToolError(f"unknown currency {currency!r}; pass 'crown' or 'florin'")
    return round(PRODUCTS[_product(product)][0] * CURRENCIES[key], 2)


async def stock_count(product: str, warehouse: str) -> int:
    """How many units of a product one warehouse holds, given the bare product and warehouse
    names (warehouses: Northgate, Southmoor, Eastbridge)."""
    return STOCK[_product(product)][_warehouse(warehouse)]


class ProductRecord(TypedDict):
    """What :func:`product_details` returns (the planner sees its fields)."""

    product: str
    supplier: str
    weight_kg: float
    category: str


async def product_details(product: str) -> ProductRecord:
    """A product's record: its supplier, its weight in kg and its category, given the bare
    product name."""
    name = _product(product)
    _, supplier, weight, category = PRODUCTS[name]
    return {"product": name, "supplier": supplier, "weight_kg": weight, "category": category}


async def supplier_town(supplier: str) -> str:
    """The town a supplier is based in, given the supplier's name (e.g. "Ingle Works")."""
    return SUPPLIERS[_find(SUPPLIERS, supplier, "supplier", "Ingle Works")]


async def delivery_days(warehouse: str, town: str) -> int:
    """How many days a delivery from a warehouse to a town takes, given the bare warehouse
    and town names."""
    days = DELIVERY[_find(DELIVERY, town, "town", "Telsby")]
    return days[_warehouse(warehouse)]


#: Every entity name of the worlds (a name answer must name only the gold among them).
ENTITIES: tuple[str, ...] = tuple(
    dict.fromkeys(
        [*CITIES, *ARTICLES, *PLANETS, *STARS, *PRODUCTS, *WAREHOUSES, *SUPPLIERS, *DELIVERY]
    ).keys()
)


def _bare(text: str) -> str:
    return " ".join(str(text).strip().strip("\"'`“”‘’ ").split()).casefold()


def _find(table: Mapping[str, Any], value: str, what: str, example: str) -> str:
    key = _bare(value)
    for name in table:
        if name.casefold() == key:
            return name
    raise ToolError(f"unknown {what} {value!r}; pass a bare {what} name such as {example!r}")


def _city(city: str) -> tuple[int, int, int]:
    return CITIES[_find(CITIES, city, "city", "Varnholt")]


async def city_population(city: str) -> int:
    """The number of people living in a city, given the bare city name (e.g. "Varnholt")."""
    return _city(city)[0]


async def city_elevation(city: str) -> int:
    """A city's elevation above sea level in metres, given the bare city name."""
    return _city(city)[1]


async def city_founded(city: str) -> int:
    """The year a city was founded, given the bare city name."""
    return _city(city)[2]


async def encyclopedia(query: str) -> str:
    """The encyclopedia's paragraph about an entity (a city, country, river or person), given
    its bare name, e.g. "Druvania" or "Vell". Tells which city is a country's capital, which
    river flows through a city, who founded a city."""
    key = _bare(query)
    name = _ALIASES.get(key) or next((n for n in ARTICLES if n.casefold() == key), None)
    if name is None:
        raise ToolError(
            f"no article for {query!r}; search for a bare entity name such as 'Druvania'"
        )
    return ARTICLES[name]


def _planet(planet: str) -> tuple[float, float, int, str]:
    return PLANETS[_find(PLANETS, planet, "planet", "Quen")]


async def planet_mass(planet: str) -> float:
    """A planet's mass in Earth masses, given the bare planet name (e.g. "Quen")."""
    return _planet(planet)[0]


async def orbital_period(planet: str) -> float:
    """The length of a planet's year (one orbit of its star) in days, given the bare planet
    name."""
    return _planet(planet)[1]


async def moon_count(planet: str) -> int:
    """How many moons a planet has, given the bare planet name."""
    return _planet(planet)[2]


async def host_star(planet: str) -> str:
    """The name of the star a planet orbits, given the bare planet name."""
    return _planet(planet)[3]


async def star_temperature(star: str) -> int:
    """A star's surface temperature in kelvin, given the bare star name (e.g. "Teyvar")."""
    return STARS[_find(STARS, star, "star", "Teyvar")]


_LOOKUPS: dict[str, tuple[Callable[..., Awaitable[Any]], ...]] = {
    "atlas": (city_population, city_elevation, city_founded, encyclopedia),
    "orbit": (planet_mass, orbital_period, moon_count, host_star, star_temperature),
    "depot": (unit_price, stock_count, product_details, supplier_town, delivery_days),
}


def _check_world(world: str) -> None:
    if world not in TOOLWORLD_WORLDS:
        raise ValueError(f"unknown toolworld world {world!r}; choose from {TOOLWORLD_WORLDS}")


def toolworld_tools(world: str) -> list[Tool]:
    """The world's tools: its strict look-ups, then the calculator (new objects each call)."""
    _check_world(world)
    return [*(Tool(f) for f in _LOOKUPS[world]), calculator]


# -- the questions ------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolworldQuestion:
    """One question: its gold answer and kind, and its reference plan (calls per round, the
    task ids numbered on across rounds).  ``rule`` says how the answer follows from the
    reference run's outputs: ``value`` (the last task's output), ``max``/``min`` (the entity
    of ``among`` - one per first-round task, in order - with the largest/smallest output),
    ``more``/``less`` (whether the output of the last task but one is larger/smaller than the
    last's)."""

    world: str
    id: str
    shape: str
    question: str
    gold: str
    kind: AnswerKind
    rounds: tuple[tuple[str, ...], ...]
    rule: Literal["value", "max", "min", "more", "less"] = "value"
    among: tuple[str, ...] = ()
    #: With ``rule="value"``: the answer is this key of the last task's (dict) output.
    field: str = ""

    @property
    def key(self) -> str:
        return f"{self.world}/{self.id}"

    @property
    def calls(self) -> list[str]:
        return [call for r in self.rounds for call in r]

    def plan_text(self, round_index: int = 0) -> str:
        """Round ``round_index`` of the reference plan as the planner writes it."""
        first = 1 + sum(len(r) for r in self.rounds[:round_index])
        lines = [f"{first + i}. {call}" for i, call in enumerate(self.rounds[round_index])]
        return "\n".join([*lines, "join()<END_OF_PLAN>"])


def _q(
    world: str,
    qid: str,
    shape: str,
    question: str,
    gold: str,
    kind: AnswerKind,
    *rounds: tuple[str, ...],
    rule: Literal["value", "max", "min", "more", "less"] = "value",
    among: tuple[str, ...] = (),
    field: str = "",
) -> ToolworldQuestion:
    return ToolworldQuestion(world, qid, shape, question, gold, kind, rounds, rule, among, field)


def _pop(c: str) -> str:
    return f'city_population("{c}")'


def _elev(c: str) -> str:
    return f'city_elevation("{c}")'


def _year(c: str) -> str:
    return f'city_founded("{c}")'


def _calc(expression: str) -> str:
    return f'calculator("{expression}")'


def _price(product: str, currency: str = "crown") -> str:
    return f'unit_price("{product}", "{currency}")'


def _stock(product: str, warehouse: str) -> str:
    return f'stock_count("{product}", "{warehouse}")'


def _days(warehouse: str, town: str) -> str:
    return f'delivery_days("{warehouse}", "{town}")'


_AT, _OR, _DE = "atlas", "orbit", "depot"
QUESTIONS: tuple[ToolworldQuestion, ...] = (
    # -- atlas ----------------------------------------------------------------------------
    _q(_AT, "a01", "sum", "What is the combined population of Varnholt and Quillmere?",
       "79200", "number", (_pop("Varnholt"), _pop("Quillmere"), _calc("$1 + $2"))),
    _q(_AT, "a02", "difference", "How much larger is the population of Varnholt than that of "
       "Quillmere?", "17200", "number",
       (_pop("Varnholt"), _pop("Quillmere"), _calc("$1 - $2"))),
    _q(_AT, "a03", "difference (smaller)", "How much smaller is the population of Esselin than "
       "that of Korvessa?", "42300", "number",
       (_pop("Esselin"), _pop("Korvessa"), _calc("$2 - $1"))),
    _q(_AT, "a04", "signed difference", "What is the elevation of Varnholt minus the elevation "
       "of Marrowick, in metres?", "-228", "number",
       (_elev("Varnholt"), _elev("Marrowick"), _calc("$1 - $2"))),
    _q(_AT, "a05", "ratio", "How many times more people live in Marrowick than in Brindlecove?",
       "8", "number", (_pop("Marrowick"), _pop("Brindlecove"), _calc("$1 / $2"))),
    _q(_AT, "a06", "average", "What is the average elevation of Varnholt, Quillmere and "
       "Korvessa, in metres?", "530", "number",
       (_elev("Varnholt"), _elev("Quillmere"), _elev("Korvessa"), _calc("($1 + $2 + $3) / 3"))),
    _q(_AT, "a07", "extreme (max)", "Which of Varnholt, Esselin and Korvessa has the largest "
       "population?", "Korvessa", "name",
       (_pop("Varnholt"), _pop("Esselin"), _pop("Korvessa")),
       rule="max", among=("Varnholt", "Esselin", "Korvessa")),
    _q(_AT, "a08", "comparison (name)", "Which city is older, Quillmere or Brindlecove?",
       "Brindlecove", "name", (_year("Quillmere"), _year("Brindlecove")),
       rule="min", among=("Quillmere", "Brindlecove")),
    _q(_AT, "a09", "yes/no", "Is Esselin more populous than Quillmere?", "no", "yesno",
       (_pop("Esselin"), _pop("Quillmere")), rule="more"),
    _q(_AT, "a10", "two-hop", "What is the population of the capital of Druvania?", "96400",
       "number", ('encyclopedia("Druvania")',), (_pop("Marrowick"),)),
    _q(_AT, "a11", "two-hop", "What is the elevation, in metres, of the city the Vell river "
       "flows through?", "312", "number", ('encyclopedia("Vell")',), (_elev("Varnholt"),)),
    _q(_AT, "a12", "percent change", "If the population of Korvessa grew by 10%, what would "
       "it be?", "71280", "number", (_pop("Korvessa"), _calc("$1 * 1.1"))),
    _q(_AT, "a13", "combined", "How many more people live in the capital of Sel Ardra than in "
       "Esselin?", "8500", "number", ('encyclopedia("Sel Ardra")',),
       (_pop("Quillmere"), _pop("Esselin"), _calc("$2 - $3"))),
    _q(_AT, "a14", "extreme (min)", "Which of Brindlecove, Korvessa and Marrowick lies at the "
       "lowest elevation?", "Brindlecove", "name",
       (_elev("Brindlecove"), _elev("Korvessa"), _elev("Marrowick")),
       rule="min", among=("Brindlecove", "Korvessa", "Marrowick")),
    _q(_AT, "a15", "yes/no", "Is Marrowick higher above sea level than Varnholt?", "yes",
       "yesno", (_elev("Marrowick"), _elev("Varnholt")), rule="more"),
    _q(_AT, "a16", "two-hop", "In what year was the town founded by Aldric Penhallow founded?",
       "1755", "number", ('encyclopedia("Aldric Penhallow")',), (_year("Esselin"),)),
    _q(_AT, "a17", "sum", "What is the total population of Brindlecove, Esselin and Korvessa?",
       "99350", "number",
       (_pop("Brindlecove"), _pop("Esselin"), _pop("Korvessa"), _calc("$1 + $2 + $3"))),
    # -- orbit ----------------------------------------------------------------------------
    _q(_OR, "o01", "sum", "How many moons do Quen, Ibrith and Talluk have in total?", "20",
       "number", ('moon_count("Quen")', 'moon_count("Ibrith")', 'moon_count("Talluk")',
                  _calc("$1 + $2 + $3"))),
    _q(_OR, "o02", "difference", "How much more massive is Ibrith than Morvane, in Earth "
       "masses?", "9.4", "number",
       ('planet_mass("Ibrith")', 'planet_mass("Morvane")', _calc("$1 - $2"))),
    _q(_OR, "o03", "difference (smaller)", "How many days shorter is the orbital period of "
       "Ostrel than that of Quen?", "117", "number",
       ('orbital_period("Ostrel")', 'orbital_period("Quen")', _calc("$2 - $1"))),
    _q(_OR, "o04", "ratio", "How many times longer is the orbital period of Talluk than that "
       "of Morvane?", "2", "number",
       ('orbital_period("Talluk")', 'orbital_period("Morvane")', _calc("$1 / $2"))),
    _q(_OR, "o05", "average", "What is the average mass of Quen, Ostrel and Zephrel, in Earth "
       "masses?", "1.1667", "number",
       ('planet_mass("Quen")', 'planet_mass("Ostrel")', 'planet_mass("Zephrel")',
        _calc("($1 + $2 + $3) / 3"))),
    _q(_OR, "o06", "extreme (max)", "Which of Quen, Morvane and Zephrel has the most moons?",
       "Quen", "name",
       ('moon_count("Quen")', 'moon_count("Morvane")', 'moon_count("Zephrel")'),
       rule="max", among=("Quen", "Morvane", "Zephrel")),
    _q(_OR, "o07", "comparison (name)", "Which planet has the longer orbital period, Talluk or "
       "Ibrith?", "Ibrith", "name",
       ('orbital_period("Talluk")', 'orbital_period("Ibrith")'),
       rule="max", among=("Talluk", "Ibrith")),
    _q(_OR, "o08", "yes/no", "Is Zephrel more massive than Ostrel?", "no", "yesno",
       ('planet_mass("Zephrel")', 'planet_mass("Ostrel")'), rule="more"),
    _q(_OR, "o09", "two-hop", "What is the surface temperature, in kelvin, of the star that "
       "Quen orbits?", "5400", "number",
       ('host_star("Quen")', 'star_temperature("$1")')),
    _q(_OR, "o10", "two-hop yes/no", "Does Talluk orbit a hotter star than Ibrith does?",
       "yes", "yesno",
       ('host_star("Talluk")', 'host_star("Ibrith")', 'star_temperature("$1")',
        'star_temperature("$2")'), rule="more"),
    _q(_OR, "o11", "percent change", "If the mass of Morvane were 25% greater, what would it "
       "be in Earth masses?", "6.5", "number",
       ('planet_mass("Morvane")', _calc("$1 * 1.25"))),
    _q(_OR, "o12", "combined", "How many kelvin hotter is the star that Zephrel orbits than "
       "the star Ossuin?", "3300", "number",
       ('host_star("Zephrel")', 'star_temperature("$1")', 'star_temperature("Ossuin")',
        _calc("$2 - $3"))),
    _q(_OR, "o13", "extreme (min)", "Which of Ostrel, Morvane and Talluk has the shortest "
       "orbital period?", "Ostrel", "name",
       ('orbital_period("Ostrel")', 'orbital_period("Morvane")', 'orbital_period("Talluk")'),
       rule="min", among=("Ostrel", "Morvane", "Talluk")),
    _q(_OR, "o14", "difference (smaller)", "How many fewer moons does Morvane have than "
       "Talluk?", "4", "number",
       ('moon_count("Morvane")', 'moon_count("Talluk")', _calc("$2 - $1"))),
    # -- depot: two-argument look-ups and a structured record -----------------------------
    _q(_DE, "d01", "sum", "How many Halloway lamps are in stock at Northgate and Southmoor "
       "together?", "205", "number",
       (_stock("Halloway lamp", "Northgate"), _stock("Halloway lamp", "Southmoor"),
        _calc("$1 + $2"))),
    _q(_DE, "d02", "product", "What do 4 Tesk kettles cost in florins?", "95", "number",
       (_price("Tesk kettle", "florin"), _calc("$1 * 4"))),
    _q(_DE, "d03", "comparison (name)", "Which warehouse holds more Morrow rope, Northgate or "
       "Eastbridge?", "Eastbridge", "name",
       (_stock("Morrow rope", "Northgate"), _stock("Morrow rope", "Eastbridge")),
       rule="max", among=("Northgate", "Eastbridge")),
    _q(_DE, "d04", "difference", "How many crowns more does a Fenwick stove cost than a "
       "Halloway lamp?", "106", "number",
       (_price("Fenwick stove"), _price("Halloway lamp"), _calc("$1 - $2"))),
    _q(_DE, "d05", "field", "How much does a Tesk kettle weigh, in kilograms?", "1.6",
       "number", ('product_details("Tesk kettle")',), field="weight_kg"),
    _q(_DE, "d06", "field arithmetic", "What is the total weight, in kilograms, of 3 Fenwick "
       "stoves?", "114", "number",
       ('product_details("Fenwick stove")', _calc("$1.weight_kg * 3"))),
    _q(_DE, "d07", "two-hop (field)", "In which town is the supplier of the Ulna blanket "
       "based?", "Wexmoor", "name",
       ('product_details("Ulna blanket")', 'supplier_town("$1.supplier")')),
    _q(_DE, "d08", "yes/no", "Is a Morrow rope cheaper than a Tesk kettle, in crowns?", "yes",
       "yesno", (_price("Morrow rope"), _price("Tesk kettle")), rule="less"),
    _q(_DE, "d09", "extreme (min)", "Which costs least in florins: the Halloway lamp, the Tesk "
       "kettle or the Ulna blanket?", "Tesk kettle", "name",
       (_price("Halloway lamp", "florin"), _price("Tesk kettle", "florin"),
        _price("Ulna blanket", "florin")),
       rule="min", among=("Halloway lamp", "Tesk kettle", "Ulna blanket")),
    _q(_DE, "d10", "look-up", "How many days does a delivery from Southmoor to Telsby take?",
       "4", "number", (_days("Southmoor", "Telsby"),)),
    _q(_DE, "d11", "extreme (min)", "Which warehouse delivers to Cardell fastest: Northgate, "
       "Southmoor or Eastbridge?", "Eastbridge", "name",
       (_days("Northgate", "Cardell"), _days("Southmoor", "Cardell"),
        _days("Eastbridge", "Cardell")),
       rule="min", among=("Northgate", "Southmoor", "Eastbridge")),
    _q(_DE, "d12", "difference", "How many days longer does a delivery to Wexmoor take from "
       "Northgate than from Southmoor?", "3", "number",
       (_days("Northgate", "Wexmoor"), _days("Southmoor", "Wexmoor"), _calc("$1 - $2"))),
    _q(_DE, "d13", "product", "What is the value in crowns of all the Fenwick stoves in stock "
       "at Southmoor?", "3360", "number",
       (_stock("Fenwick stove", "Southmoor"), _price("Fenwick stove"), _calc("$1 * $2"))),
    _q(_DE, "d14", "two-hop chain", "How many days does a delivery from Northgate to the town "
       "of the Tesk kettle's supplier take?", "5", "number",
       ('product_details("Tesk kettle")', 'supplier_town("$1.supplier")',
        'delivery_days("Northgate", "$2")')),
)  # fmt: skip


def toolworld_questions(world: str | None = None) -> list[ToolworldQuestion]:
    """The questions of ``world`` (``"atlas"`` or ``"orbit"``), or of both."""
    if world is not None:
        _check_world(world)
    return [q for q in QUESTIONS if world is None or q.world == world]


def reference_answer(question: ToolworldQuestion, outputs: Mapping[int, Any]) -> str:
    """The answer ``question.rule`` gives for these task outputs (``{task id: output}``)."""
    if question.rule == "value":
        last = outputs[max(outputs)]
        return answer_text(last[question.field] if question.field else last)
    if question.rule in ("max", "min"):
        values = {name: float(outputs[i]) for i, name in enumerate(question.among, 1)}
        pick = max if question.rule == "max" else min
        return pick(values, key=lambda name: values[name])
    last = max(outputs)
    before, after = float(outputs[last - 1]), float(outputs[last])
    holds = before > after if question.rule == "more" else before < after
    return "yes" if holds else "no"


# -- scoring ------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_EXPRESSION = re.compile(r"\d\s*[-+*/×÷^=]\s*[-+(]?\s*\d|\d\s*\)?\s*[*/×÷^]\s*\(")
_MAX_NAME_WORDS = 20


def _numbers_of(answer: str) -> list[float] | None:
    """The answer's numbers, or None when it holds an unevaluated expression."""
    text = answer.replace("−", "-").replace("\u2009", "")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    if _EXPRESSION.search(text):
        return None
    return [float(n) for n in _NUMBER.findall(text)]


def score_toolworld(answer: str, gold: str, kind: AnswerKind) -> bool:
    """Whether ``answer`` is right for ``gold``: a number's first number within 1% relative
    ("1,234", "1234.0" and "about 1234 people" count; "9800 - 3150" does not); a name as a
    whole word of a short answer that names no other entity of the worlds; yes/no by the
    answer's first word."""
    answer = answer.strip()
    if kind == "number":
        numbers = _numbers_of(answer)
        if not numbers:
            return False
        wanted = float(gold)
        if wanted == 0:
            return abs(numbers[0]) < 1e-9
        return abs(numbers[0] - wanted) <= 0.01 * abs(wanted)
    if kind == "name":
        if len(answer.split()) > _MAX_NAME_WORDS:
            return False
        named = {e.casefold() for e in ENTITIES if re.search(rf"\b{re.escape(e)}\b", answer, re.I)}
        return named == {gold.casefold()}
    if kind == "yesno":
        found = re.match(r"\W*(yes|no)\b", answer, re.I)
        return found is not None and found.group(1).lower() == gold.lower()
    raise ValueError(f"unknown answer kind {kind!r}")


# -- the reference run --------------------------------------------------------------------
def _finish(answer: str) -> str:
    return f"Thought: The results answer the question.\nAction: Finish({answer})"


_REPLAN = "Thought: I have learned which entity it is; I look it up next.\nAction: Replan(next hop)"


def _rounds_reply(texts: Sequence[str]) -> Callable[[list[Message]], str]:
    """A reply function speaking ``texts`` in turn (the last one again when they run out)."""
    calls = [0]

    def reply(_: list[Message]) -> str:
        index = min(calls[0], len(texts) - 1)
        calls[0] += 1
        return texts[index]

    return reply


def _joins(question: ToolworldQuestion) -> list[str]:
    return [_REPLAN] * (len(question.rounds) - 1) + [_finish(question.gold)]


async def reference_run(question: ToolworldQuestion) -> RunResult:
    """The reference plan run once through dagcall with scripted models and no latency."""
    plans = [question.plan_text(i) for i in range(len(question.rounds))]
    compiler = Compiler(
        planner_model=ScriptedModel(plans, name="toolworld-planner"),
        joiner_model=ScriptedModel(_joins(question), name="toolworld-joiner"),
        tools=toolworld_tools(question.world),
        max_replans=len(question.rounds) - 1,
        tool_timeout=10,
        check_answers=False,  # the reference's scripted joiner, not a model to check
    )
    return await compiler.arun(question.question)


def _resolved_calls(
    question: ToolworldQuestion, run: RunResult
) -> list[tuple[int, dict[str, Any]]]:
    """The reference calls in plan order with their ``$N`` replaced by values, each with its
    level (a round's levels come after the previous round's)."""
    by_id = {t.id: t for t in run.tasks}
    names = {t.name for t in toolworld_tools(question.world)}
    calls: list[tuple[int, dict[str, Any]]] = []
    for index in range(len(question.rounds)):
        items, _ = parse_plan(question.plan_text(index), names)
        base = 1 + max((level for level, _ in calls), default=-1)
        depth: dict[int, int] = {}
        for spec in (i for i in items if isinstance(i, TaskSpec)):
            inner = [depth[d] for d in spec.deps if d in depth]
            depth[spec.id] = 1 + max(inner, default=-1)
            args = dict(by_id[spec.id].resolved_args or {})
            calls.append((base + depth[spec.id], {"name": spec.tool, "arguments": args}))
    return calls


def _level_calls(question: ToolworldQuestion, run: RunResult) -> list[list[dict[str, Any]]]:
    calls = _resolved_calls(question, run)
    levels = 1 + max((level for level, _ in calls), default=-1)
    return [[call for level, call in calls if level == depth] for depth in range(levels)]


def react_steps(question: ToolworldQuestion, run: RunResult) -> list[str]:
    """ReAct's reference steps: the calls one by one with the values filled in, then Finish."""
    steps = []
    for _, call in _resolved_calls(question, run):
        shown = ", ".join(json.dumps(v, ensure_ascii=False) for v in call["arguments"].values())
        steps.append(f"Thought: I call {call['name']} next.\nAction: {call['name']}({shown})")
    return [*steps, _finish(question.gold)]


def parallel_turns(question: ToolworldQuestion, run: RunResult) -> list[str]:
    """Parallel function calling's reference turns: the calls level by level, then the answer."""
    turns = [
        json.dumps({"tool_calls": level}, ensure_ascii=False)
        for level in _level_calls(question, run)
    ]
    return [*turns, json.dumps({"answer": question.gold}, ensure_ascii=False)]


# -- running ------------------------------------------------------------------------------
Runner = Callable[[], Awaitable[RunResult]]


def _tools_for(question: ToolworldQuestion, config: BenchConfig) -> list[BaseTool]:
    latency = WebLatency(median=config.tool_latency_median, seed=config.seed)
    tools: list[BaseTool] = []
    for t in toolworld_tools(question.world):
        if t is calculator and config.toolworld_math == "llm" and config.model is not None:
            tools.append(math_tool(config.model))
        elif t is calculator:
            tools.append(t)
        else:
            tools.append(with_latency(t, latency, key=question.key, time_scale=config.scale))
    return tools


def build_toolworld_runner(
    system: str,
    question: ToolworldQuestion,
    config: BenchConfig,
    reference: RunResult | None = None,
) -> Runner:
    """A coroutine factory running ``question`` with ``system``: with ``config.model`` the
    model decides (default prompts); otherwise a simulated model speaks the reference, whose
    values come from ``reference`` (a :func:`reference_run`)."""
    tools = _tools_for(question, config)

    simulated = config.speaker

    real = config.model

    def values() -> RunResult:
        if reference is None:
            raise ValueError("a simulated ReAct or parallel-fc run needs the reference run")
        return reference

    if system == "dagcall":
        if real is not None:
            compiler = Compiler(
                real,
                tools,
                max_replans=1,
                optimize=config.optimize,
                examples=ExampleBank() if config.example_bank else "builtin",
                check_answers=config.check_answers,
            )
        else:
            plans = [question.plan_text(i) for i in range(len(question.rounds))]
            compiler = Compiler(
                planner_model=simulated(_rounds_reply(plans)),
                joiner_model=simulated(_rounds_reply(_joins(question))),
                tools=tools,
                max_replans=len(question.rounds) - 1,
                optimize=config.optimize,
            )
        return lambda: compiler.arun(question.question)
    if system == "react":
        if real is not None:
            model = real
        else:
            steps = react_steps(question, values())
            model = simulated(lambda m: _nth(steps, m[-1].content.count("\nObservation:")))
        react = ReActAgent(model, tools, max_steps=REACT_MAX_STEPS)
        return lambda: react.arun(question.question)
    if system == "parallel-fc":
        if real is not None:
            model = real
        else:
            turns = parallel_turns(question, values())
            model = simulated(lambda m: _nth(turns, sum(x.role == "assistant" for x in m)))
        agent = ParallelFunctionCallingAgent(model, tools)
        return lambda: agent.arun(question.question)
    raise ValueError(f"unknown system {system!r}")


async def run_toolworld(
    config: BenchConfig, *, worlds: Sequence[str] | None = None
) -> list[BenchRecord]:
    """Every question of ``worlds`` (default ``config.worlds``, or every world when that is
    empty; the first ``config.limit`` of each) with every system of ``config.systems``,
    ``config.concurrency`` runs at a time, the systems interleaved per question; records in
    question order, then system order."""
    worlds = worlds or config.worlds or TOOLWORLD_WORLDS
    for world in worlds:
        _check_world(world)
    questions = [
        q
        for world in worlds
        for q in toolworld_questions(world)[: config.limit if config.limit is not None else None]
    ]
    references: dict[str, RunResult | None] = {q.key: None for q in questions}
    if config.simulated:
        runs = await asyncio.gather(*(reference_run(q) for q in questions))
        references = {q.key: run for q, run in zip(questions, runs, strict=True)}
    sem = asyncio.Semaphore(config.concurrency)

    async def one(question: ToolworldQuestion, system: str, make: Runner) -> BenchRecord:
        qid, gold = question.key, question.gold
        async with sem:
            try:
                run = await make()
            except DagcallError as exc:
                answer = exc.result.answer if exc.result is not None else ""
                right = score_toolworld(answer, gold, question.kind) if answer else False
                return record_of(
                    "toolworld", qid, system, gold, exc.result, config, repr(exc), right
                )
        right = score_toolworld(run.answer, gold, question.kind)
        return record_of("toolworld", qid, system, gold, run, config, correct=right)

    jobs = [  # built before any clock starts; interleaved so no system gets a quieter machine
        one(q, system, build_toolworld_runner(system, q, config, references[q.key]))
        for q in questions
        for system in config.systems
    ]
    records = list(await asyncio.gather(*jobs))
    order = {q.key: i for i, q in enumerate(questions)}
    records.sort(key=lambda r: (order[r.question_id], list(config.systems).index(r.system)))
    return records
