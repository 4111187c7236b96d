"""The embedded local model planning over an MCP server nobody here wrote: the reference
``mcp-server-time`` from PyPI (offline), started by the test over stdio."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dagcall import Compiler, TaskStatus
from dagcall.models import LocalModel

pytest.importorskip("mcp_server_time")
from dagcall.mcp import MCPToolset


def hours_between(a: str, b: str) -> float:
    now = datetime.now(ZoneInfo("UTC"))
    first, second = now.astimezone(ZoneInfo(a)).utcoffset(), now.astimezone(ZoneInfo(b)).utcoffset()
    assert first is not None
    assert second is not None
    return (second - first).total_seconds() / 3600


async def test_the_local_model_answers_over_mcp_server_time(gguf_path: Path) -> None:
    time_server = MCPToolset(
        command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone=UTC"]
    )
    compiler = Compiler(model=LocalModel(gguf_path), tools=[time_server], max_replans=1)
    async with compiler:
        result = await compiler.arun(
            "What time is it now in Europe/Paris and in Asia/Tokyo, and how many hours "
            "apart are they?"
        )
    done = [t for t in result.tasks if t.status is TaskStatus.DONE]
    assert done, [(t.call, t.error) for t in result.tasks]
    assert all(isinstance(t.output, dict) for t in done)  # structured content, typed
    zones = " ".join(str(t.resolved_args) for t in done)
    assert "Paris" in zones
    assert "Tokyo" in zones
    difference = abs(hours_between("Europe/Paris", "Asia/Tokyo"))
    numbers = [abs(float(n)) for n in re.findall(r"[-+]?\d+(?:\.\d+)?", result.answer)]
    assert difference in numbers, (result.answer, result.rounds)
    print(f"\n{result.answer}  ({result.wall_time:.1f} s, {len(result.tasks)} tasks)")
