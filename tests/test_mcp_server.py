"""dagcall as an MCP server (dagcall.mcp.serve / build_server), called with the SDK's client.

The server is tests/mcp_servers/dagcall_server.py: ``serve`` over stdio with a scripted model,
the tools of tests/mcp_servers/serve_tools.py, and the reference ``mcp-server-time`` as an
MCP toolset of its own (so an MCP server's tools reach an MCP client through dagcall).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp import Client, StdioServerParameters

from dagcall import Compiler, ScriptedModel, tool
from dagcall.mcp import build_server

SERVERS = Path(__file__).parent / "mcp_servers"
LOOP = pytest.mark.asyncio(loop_scope="module")
QUESTION = "How many people live in Paris and Tokyo together?"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client() -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            str(SERVERS / "dagcall_server.py"),
            str(SERVERS / "serve_tools.py"),
            "--mcp",
            f"{sys.executable} -m mcp_server_time --local-timezone=UTC",
            "--timeout",
            "1.5",
        ],
    )
    # The SDK's client must be entered and left by one task; pytest-asyncio sets a fixture up
    # and tears it down in different ones, so a task of its own holds it.
    ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        async with Client(params, cache=None) as connected:
            ready.set_result(connected)
            await stop.wait()

    holder = asyncio.create_task(hold())
    waiting: list[asyncio.Future[Any]] = [holder, ready]
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if holder in done:
        holder.result()  # the connection failed: raise why
    yield ready.result()
    stop.set()
    await holder


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


@LOOP
async def test_the_server_offers_one_ask_tool(client: Client) -> None:
    (ask,) = (await client.list_tools()).tools
    assert ask.name == "ask"
    assert ask.input_schema["properties"] == {"question": {"title": "Question", "type": "string"}}
    assert ask.input_schema["required"] == ["question"]
    assert ask.output_schema is not None
    assert {"answer", "tasks", "llm_calls", "wall_time"} <= set(ask.output_schema["properties"])
    assert "population" in (ask.description or "")
    assert ask.annotations is not None
    assert ask.annotations.read_only_hint is True


@LOOP
async def test_ask_answers_with_the_run_summary(client: Client) -> None:
    result = await client.call_tool("ask", {"question": QUESTION})
    summary = structured(result)
    assert result.content[0].text == "together 16100000 people"  # type: ignore[union-attr]
    assert summary["answer"] == "together 16100000 people"
    assert summary["stop_reason"] == "finish"
    assert summary["rounds"] == 1
    paris, tokyo = summary["tasks"]
    assert (paris["tool"], paris["call"], paris["status"]) == (
        "population",
        'population("Paris")',
        "done",
    )
    assert tokyo["call"] == 'population("Tokyo")'
    # The two look-ups ran in parallel.
    assert max(paris["started_at"], tokyo["started_at"]) < min(paris["ended_at"], tokyo["ended_at"])
    assert [c["role"] for c in summary["llm_calls"]] == ["planner", "joiner"]
    assert 0.3 <= summary["wall_time"] < 0.6 + 0.3


@LOOP
async def test_concurrent_asks_run_concurrently(client: Client) -> None:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(client.call_tool("ask", {"question": QUESTION}) for _ in range(3))
    )
    assert time.perf_counter() - started < 0.9 * 2
    assert [structured(r)["answer"] for r in results] == ["together 16100000 people"] * 3


@LOOP
async def test_an_mcp_toolset_of_the_server_is_used_too(client: Client) -> None:
    summary = structured(await client.call_tool("ask", {"question": "What time is it?"}))
    assert summary["answer"] == "it is Asia/Tokyo time"
    (task,) = summary["tasks"]
    assert (task["tool"], task["status"]) == ("get_current_time", "done")


@LOOP
async def test_a_failed_run_is_an_error_result(client: Client) -> None:
    result = await client.call_tool("ask", {"question": "Something slow, please."})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("RunTimeoutError: ")
    # The server is still serving.
    assert structured(await client.call_tool("ask", {"question": QUESTION}))["answer"]


@LOOP
async def test_build_server_in_process_opens_and_closes_the_compilers_toolsets() -> None:
    events: list[str] = []

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    class Recorder:
        async def open(self) -> list[Any]:
            events.append("open")
            return []

        async def aclose(self) -> None:
            events.append("close")

    model = ScriptedModel(
        ['1. echo("hi")\n2. join()\n<END_OF_PLAN>', "Thought: ok.\nAction: Finish(hi)"]
    )
    server = build_server(Compiler(model=model, tools=[echo, Recorder()]), name="inproc")
    async with Client(server, cache=None) as inproc:
        assert events == ["open"]
        result = await inproc.call_tool("ask", {"question": "echo hi"})
        assert structured(result)["answer"] == "hi"
        assert structured(result)["tasks"][0]["call"] == 'echo("hi")'
    assert events == ["open", "close"]
