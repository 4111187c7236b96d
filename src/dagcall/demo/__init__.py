"""The bundled offline scenario of ``dagcall demo``: a small knowledge base and its tools.

The look-ups wait like a web API would (``LOOKUP_LATENCY`` seconds) so that the demo shows
what dagcall is for: independent calls overlapping each other and the planner's stream.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from importlib import resources
from typing import Any

from .._errors import ToolError
from .._tools import Tool, tool
from ..tools import calculator

__all__ = ["EXAMPLES", "LOOKUP_LATENCY", "QUESTIONS", "REACT_EXAMPLES", "demo_tools"]

LOOKUP_LATENCY = 1.0

QUESTIONS: list[tuple[str, str]] = [
    ("What is the combined height in metres of the Eiffel Tower and the Statue of Liberty?", "423"),
    ("How many more people live in Germany than in France?", "14,800,000"),
    ("What is the total area of Spain and Portugal in square kilometres?", "598,202"),
]

EXAMPLES = """
Example:
Question: How much taller is the Burj Khalifa than the Eiffel Tower?
1. height("Burj Khalifa")
2. height("Eiffel Tower")
3. calculator("$1 - $2")
4. join("$3")
<END_OF_PLAN>
"""

# The same example in ReAct's format, so both systems get the same help.
REACT_EXAMPLES = """
Example:
Question: How much taller is the Burj Khalifa than the Eiffel Tower?
Thought: I need the height of the Burj Khalifa.
Action: height("Burj Khalifa")
Observation: 828.0
Thought: I need the height of the Eiffel Tower.
Action: height("Eiffel Tower")
Observation: 330.0
Thought: Subtract the two heights.
Action: calculator("828.0 - 330.0")
Observation: 498.0
Thought: The Burj Khalifa is 498 metres taller.
Action: Finish(498)
"""


@cache
def _knowledge() -> dict[str, dict[str, Any]]:
    text = resources.files(__package__).joinpath("knowledge.json").read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = json.loads(text)
    return data


async def _lookup(table: str, name: str, what: str) -> Any:
    await asyncio.sleep(LOOKUP_LATENCY)
    key = name.lower().strip().removeprefix("the ").strip()
    facts = _knowledge()[table]
    if key not in facts:
        known = ", ".join(sorted(facts))
        raise ToolError(f"no {what} known for {name!r}; known: {known}", tool=table)
    return facts[key]


@tool
async def height(landmark: str) -> float:
    """Height of a landmark in metres."""
    value: float = await _lookup("heights_m", landmark, "height")
    return value


@tool
async def population(country: str) -> int:
    """Number of people living in a country."""
    value: int = await _lookup("populations", country, "population")
    return value


@tool
async def area(country: str) -> int:
    """Area of a country in square kilometres."""
    value: int = await _lookup("areas_km2", country, "area")
    return value


def demo_tools() -> list[Tool]:
    """The demo's tools: three look-ups over the knowledge base, and the calculator."""
    return [height, population, area, calculator]
