"""Tools: declaration, schema, validation, sync and async invocation."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Annotated, Any

import pytest
from pydantic import Field

from dagcall import Tool, ToolArgumentError, ToolDefinitionError, tool


def test_name_description_and_schema_come_from_the_function() -> None:
    @tool
    def math(expression: str, context: list[str] | None = None) -> float:
        """Evaluate an arithmetic expression.

        Context holds earlier results it may refer to."""
        return 0.0

    assert isinstance(math, Tool)
    assert math.name == "math"
    assert math.description.startswith("Evaluate an arithmetic expression.")
    assert "earlier results" in math.description
    schema = math.json_schema
    assert schema["required"] == ["expression"]
    assert schema["properties"]["expression"]["type"] == "string"
    assert schema["properties"]["context"]["anyOf"][0] == {
        "items": {"type": "string"},
        "type": "array",
    }
    assert math.render().splitlines()[0] == (
        "math(expression: str, context: list[str] | None = None) -> float"
    )
    assert math("1+1") == 0.0  # still callable as a function


def test_options() -> None:
    @tool(name="web", description="Search the web.", timeout=3, max_concurrency=2)
    async def search(q: Annotated[str, Field(description="the query")]) -> str:
        return q

    assert (search.name, search.description, search.timeout, search.max_concurrency) == (
        "web",
        "Search the web.",
        3,
        2,
    )
    assert search.is_async
    assert search.json_schema["properties"]["q"]["description"] == "the query"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "join"}, "reserved"),
        ({"name": "two words"}, "identifier"),
        ({"timeout": 0}, "timeout"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_declarations(kwargs: dict[str, Any], match: str) -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match=match):
        tool(**kwargs)(f)


def test_star_args_cannot_be_tools() -> None:
    def f(*args: int) -> int:
        return 0

    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        tool(f)


def test_validation_coerces_numbers_to_strings_and_reports_problems() -> None:
    @tool
    def f(text: str, n: int, items: list[str] | None = None) -> str:
        return text

    assert f.validate((2.5,), {"n": "3", "items": [1, 2.0]}) == {
        "text": "2.5",
        "n": 3,
        "items": ["1", "2.0"],
    }
    with pytest.raises(ToolArgumentError, match="n: Input should be a valid integer"):
        f.validate(("a",), {"n": "three"}, task_id=4)
    with pytest.raises(ToolArgumentError, match="missing a required argument") as info:
        f.validate((), {})
    assert info.value.tool == "f"
    with pytest.raises(ToolArgumentError, match="unexpected keyword"):
        f.validate(("a", 1), {"bogus": 1})


async def test_sync_tools_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    @tool
    def where() -> int:
        return threading.get_ident()

    @tool
    async def where_async() -> int:
        await asyncio.sleep(0)
        return threading.get_ident()

    assert await where.invoke({}) != loop_thread
    assert await where_async.invoke({}) == loop_thread


async def test_sync_tool_exceptions_propagate() -> None:
    @tool
    def boom() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await boom.invoke({})


# -- placement, resources, retries and caching policy ------------------------------------------


def test_remote_and_cache_policy_is_kept_and_checked() -> None:
    @tool(resources={"num_cpus": 1, "num_gpus": 0.5, "tpu": 2}, retries=2, placement="remote")
    def heavy(x: int) -> int:
        return x

    assert heavy.resources == {"num_cpus": 1.0, "num_gpus": 0.5, "tpu": 2.0}
    assert (heavy.retries, heavy.placement, heavy.cacheable, heavy.cache_ttl) == (
        2,
        "remote",
        None,
        None,
    )

    @tool(cacheable=True, cache_ttl=60)
    def lookup(x: str) -> str:
        return x

    assert (lookup.cacheable, lookup.cache_ttl, lookup.resources, lookup.placement) == (
        True,
        60.0,
        None,
        "auto",
    )


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"resources": {"num_cpus": -1}}, "resource 'num_cpus'"),
        ({"resources": {"num_gpus": float("nan")}}, "resource 'num_gpus'"),
        ({"resources": {"": 1}}, "resource's name"),
        ({"resources": [("num_cpus", 1)]}, "resources must be a dict"),
        ({"retries": -1}, "retries must be"),
        ({"retries": True}, "retries must be"),
        ({"placement": "gpu"}, "placement must be one of"),
        ({"cacheable": "yes"}, "cacheable must be"),
        ({"cacheable": True, "side_effects": True}, "cannot be cacheable"),
        ({"cache_ttl": 0}, "cache_ttl must be"),
        ({"cache_ttl": float("inf")}, "cache_ttl must be"),
    ],
)
def test_bad_remote_or_cache_policy_is_refused(options: dict[str, Any], says: str) -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match=re.escape(says)):
        tool(**options)(f)
