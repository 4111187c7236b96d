"""Small offline tools over a dict-backed knowledge base, for end-to-end runs."""

from __future__ import annotations

import asyncio

from dagcall import tool

HEIGHTS = {"eiffel tower": 330.0, "statue of liberty": 93.0, "big ben": 96.0, "burj khalifa": 828.0}
POPULATIONS = {"france": 68_400_000, "germany": 83_200_000, "japan": 124_500_000}
LOOKUP_DELAY = 1.0  # seconds, like a web API


def _key(name: str) -> str:
    return name.lower().strip().removeprefix("the ").strip()


@tool
async def height(landmark: str) -> float:
    """Height of a landmark in metres."""
    await asyncio.sleep(LOOKUP_DELAY)
    return HEIGHTS[_key(landmark)]


@tool
async def population(country: str) -> int:
    """Number of people living in a country."""
    await asyncio.sleep(LOOKUP_DELAY)
    return POPULATIONS[_key(country)]


EXAMPLES = """
Example:
Question: How much taller is the Burj Khalifa than the Eiffel Tower?
1. height("Burj Khalifa")
2. height("Eiffel Tower")
3. calculator("$1 - $2")
4. join()
<END_OF_PLAN>
"""

# (question, check of the answer)
QUESTIONS = [
    ("What is the combined height in metres of the Eiffel Tower and the Statue of Liberty?", 423.0),
    ("How many more people live in Germany than in France?", 14_800_000.0),
    ("Which is taller, the Eiffel Tower or Big Ben?", "eiffel tower"),
]
