"""Tools for the dagcall MCP server of the tests (loaded like ``--tools FILE.py``)."""

from __future__ import annotations

import asyncio

from dagcall import tool

POPULATIONS = {"Paris": 2_100_000, "Tokyo": 14_000_000}


@tool
async def population(city: str) -> int:
    """The population of a city."""
    await asyncio.sleep(0.3)
    return POPULATIONS[city]


@tool
async def slow(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return "done"
