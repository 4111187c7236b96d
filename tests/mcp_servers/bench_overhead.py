"""What an MCP call costs over a direct call, and that parallel calls to one server overlap.

Not part of the test suite.  Run: ``python tests/mcp_servers/bench_overhead.py [--calls N]``.

- The overhead: ``calls`` sequential calls of a no-op tool, each through dagcall's tool
  layer (``tool.invoke``): a direct async function (a SchemaTool), then the fixture server's
  ``noop`` over stdio and over streamable HTTP on 127.0.0.1; p50 and p99 of each call.
- Parallelism: N=8 calls of ``sleep(0.2)`` at once against one server, against one call.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dagcall import SchemaTool
from dagcall._tools import BaseTool
from dagcall.mcp import MCPToolset

FIXTURE = str(Path(__file__).with_name("fixture_server.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def timed_calls(tool: BaseTool, arguments: dict[str, Any], calls: int) -> list[float]:
    for _ in range(20):  # warm up
        await tool.invoke(arguments)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await tool.invoke(arguments)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def parallel(tool: BaseTool, n: int) -> tuple[float, float]:
    started = time.perf_counter()
    await tool.invoke({"seconds": 0.2})
    one = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(*(tool.invoke({"seconds": 0.2}) for _ in range(n)))
    return one, time.perf_counter() - started


def line(label: str, times: list[float]) -> str:
    p50, p99, mean = statistics.median(times), percentile(times, 0.99), statistics.fmean(times)
    return f"{label:<34} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   mean {mean:7.3f} ms"


async def main(port: int, calls: int, n: int) -> None:
    async def noop(arguments: dict[str, Any]) -> str:
        return "ok"

    direct = SchemaTool("noop", "", {"type": "object", "properties": {}}, noop)
    print(f"{calls} sequential calls of a no-op tool (tool.invoke)")
    print(line("direct async function", await timed_calls(direct, {}, calls)))
    stdio = MCPToolset(command=sys.executable, args=[FIXTURE], name="stdio")
    http = MCPToolset(url=f"http://127.0.0.1:{port}/mcp", name="http")
    results = {}
    for ts in (stdio, http):
        async with ts:
            tools = {t.name: t for t in ts.tools}
            label = f"MCP over {ts.transport}"
            print(line(f"{label}, sync noop()", await timed_calls(tools["noop"], {}, calls)))
            zero = {"seconds": 0}
            print(line(f"{label}, async sleep(0)", await timed_calls(tools["sleep"], zero, calls)))
            results[ts.transport] = await parallel(tools["sleep"], n)
    print(f"\n{n} parallel calls of sleep(0.2) to one server, against one call")
    for transport, (one, many) in results.items():
        print(f"MCP over {transport:<5}  one call {one:.3f} s   {n} at once {many:.3f} s")


def run(calls: int, n: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, FIXTURE, "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(main(port, calls, n))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("-n", type=int, default=8)
    options = parser.parse_args()
    run(options.calls, options.n)
