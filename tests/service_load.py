"""Measure the HTTP service against in-process runs (not part of the test suite).

    python tests/service_load.py [--runs 1000] [--concurrency 32] [--live 300] [--no-store]

With the same scripted model and tool (``add A B``: a one-task plan, then the joiner's
answer) it measures:

* in-process: ``await compiler.arun(q)`` one at a time (latency p50/p99) and ``--concurrency``
  at a time (runs per second);
* the service (``dagcall.service.serve`` in a subprocess, so client and server each have a
  process, as in a deployment): ``POST /v1/chat/completions`` one at a time (latency, and the
  overhead over in-process at p50/p99), ``--concurrency`` at a time (requests per second), and
  ``POST /v1/runs`` plus following its events to ``finished`` one at a time;
* memory per concurrent run: the server's resident set size with ``--live`` runs in flight
  (each a plan whose one task sleeps), minus its size before, divided by ``--live``; then again
  with one event-stream follower per run.

The store is a SQLite file in a temporary folder (each run is saved as it ends, as
``dagcall serve`` does); ``--no-store`` leaves it out.  Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx2

from dagcall import Compiler, Message, ScriptedModel, tool

TOKEN = "load-test-token"  # noqa: S105 - the measurement's own
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def nap(seconds: float) -> str:
    """Sleep."""
    await asyncio.sleep(seconds)
    return "slept"


def reply(messages: Sequence[Message]) -> str:
    prompt = messages[-1].content
    if "Round 1:" in prompt:
        found = re.findall(r"<observation [^>]*>(.*?)</observation>", prompt, re.S)
        return f"Thought: done.\nAction: Finish({found[-1] if found else '?'})"
    question = re.search(r"Question: (.*)", prompt)
    words = question[1].split() if question else ["add", "0", "0"]
    if words[0] == "nap":
        return f"1. nap({float(words[1])})\n2. join()\n<END_OF_PLAN>"
    return f"1. add({int(words[1])}, {int(words[2])})\n2. join()\n<END_OF_PLAN>"


def compiler() -> Compiler:
    return Compiler(model=ScriptedModel(reply), tools=[add, nap])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def timed(work: Callable[[int], Awaitable[None]], runs: int) -> list[float]:
    latencies = []
    for i in range(runs):
        started = time.perf_counter()
        await work(i)
        latencies.append(time.perf_counter() - started)
    return latencies


async def rate(work: Callable[[int], Awaitable[None]], runs: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await work(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    return runs / (time.perf_counter() - started)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- the server side -------------------------------------------------------------------------------


def run_server(port: int, store_path: str) -> None:
    from dagcall.service import serve
    from dagcall.store import RunStore

    store = RunStore(store_path) if store_path else None
    serve(
        compiler(),
        port=port,
        token=TOKEN,
        store=store,
        max_concurrent_runs=10_000,
        log_level="warning",
    )


# -- the client side -------------------------------------------------------------------------------


class Served:
    """``dagcall.service.serve`` in a subprocess, and a client for it."""

    def __init__(self, store_path: str, connections: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port), store_path]
        )
        limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx2.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers=AUTH, timeout=120, limits=limits
        )

    async def __aenter__(self) -> Served:
        for _ in range(300):
            try:
                if (await self.client.get("/readyz")).status_code == 200:
                    return self
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("the server did not start")

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        self.process.terminate()
        await asyncio.to_thread(self.process.wait, 30)

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": args.runs, "concurrency": args.concurrency}
    c = compiler()

    async def in_process(i: int) -> None:
        result = await c.arun(f"add {i} {i}")
        assert result.answer == str(2 * i), result.answer

    await timed(in_process, 50)  # warm up
    local = await timed(in_process, args.runs)
    results["in_process_p50_ms"] = percentile(local, 50) * 1000
    results["in_process_p99_ms"] = percentile(local, 99) * 1000
    results["in_process_runs_per_s"] = await rate(in_process, args.runs, args.concurrency)

    folder = tempfile.mkdtemp(prefix="dagcall-load-")
    store = "" if args.no_store else os.path.join(folder, "runs.sqlite3")
    results["store"] = "none" if args.no_store else "sqlite"
    async with Served(store, args.concurrency + 8) as served:
        client = served.client

        async def chat(i: int) -> None:
            response = await client.post(
                "/v1/chat/completions",
                json={"model": "dagcall", "messages": [{"role": "user", "content": f"add {i} 1"}]},
            )
            answer = response.json()["choices"][0]["message"]["content"]
            assert answer == str(i + 1), response.text

        async def run_and_follow(i: int) -> None:
            started = await client.post("/v1/runs", json={"question": f"add {i} 2"})
            run_id = started.json()["id"]
            last = None
            async with client.sse(f"/v1/runs/{run_id}/events") as source:
                async for event in source:
                    last = event
            assert last is not None
            assert json.loads(last.data)["result"]["answer"] == str(i + 2)

        await timed(chat, 50)  # warm up
        remote = await timed(chat, args.runs)
        results["service_p50_ms"] = percentile(remote, 50) * 1000
        results["service_p99_ms"] = percentile(remote, 99) * 1000
        results["overhead_p50_ms"] = results["service_p50_ms"] - results["in_process_p50_ms"]
        results["overhead_p99_ms"] = results["service_p99_ms"] - results["in_process_p99_ms"]
        results["service_requests_per_s"] = await rate(chat, args.runs, args.concurrency)
        followed = await timed(run_and_follow, args.runs)
        results["runs_api_p50_ms"] = percentile(followed, 50) * 1000
        results["runs_api_p99_ms"] = percentile(followed, 99) * 1000

    results["traced_per_live_run_kib"] = await traced_per_run(args.live)

    # memory per concurrent run, in a fresh server (warmed up by a few runs)
    store = "" if args.no_store else os.path.join(folder, "memory.sqlite3")
    async with Served(store, args.live + 16) as served:
        client = served.client
        for i in range(20):
            await chat_once(client, i)
        await asyncio.sleep(1.0)
        before = served.rss_kib()
        live_ids = []
        for _ in range(args.live):
            response = await client.post("/v1/runs", json={"question": "nap 120"})
            live_ids.append(response.json()["id"])
        while (await client.get("/readyz")).json()["live_runs"] < args.live:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # every plan streamed, every task asleep
        with_runs = served.rss_kib()
        results["live_runs"] = args.live
        results["rss_before_mib"] = before / 1024
        results["rss_per_live_run_kib"] = (with_runs - before) / args.live

        async def follow(run_id: str, ready: asyncio.Event) -> None:
            async with client.sse(f"/v1/runs/{run_id}/events") as source:
                async for _ in source:
                    ready.set()

        readies = [asyncio.Event() for _ in live_ids]
        followers = [
            asyncio.create_task(follow(r, e)) for r, e in zip(live_ids, readies, strict=True)
        ]
        await asyncio.gather(*(e.wait() for e in readies))
        await asyncio.sleep(1.0)
        results["rss_per_follower_kib"] = (served.rss_kib() - with_runs) / args.live
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return results


async def traced_per_run(count: int) -> float:
    """Python's allocations (tracemalloc) per live run of a RunManager, in this process: the
    run's task, its result so far and its buffered events, without HTTP."""
    from dagcall.service import RunManager

    manager = RunManager(compiler(), max_concurrent_runs=count + 1)
    manager.open()
    warm = manager.start("add 1 1")
    await warm.wait()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    runs = [manager.start("nap 120") for _ in range(count)]
    while any(r.seq < 10 or r.current.tasks == [] for r in runs):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    await manager.shutdown()
    return used / count / 1024


async def chat_once(client: httpx2.AsyncClient, i: int) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "dagcall", "messages": [{"role": "user", "content": f"add {i} 1"}]},
    )
    assert response.json()["choices"][0]["message"]["content"] == str(i + 1)


def report(r: dict[str, Any]) -> None:
    def pair(name: str) -> str:
        return f"p50 {r[name + '_p50_ms']:7.2f} ms  p99 {r[name + '_p99_ms']:7.2f} ms"

    at = f"at {r['concurrency']} at once"
    print(
        f"{r['runs']} runs each way; scripted model; one add() task per plan; store: {r['store']}"
    )
    print(f"in-process  {pair('in_process')}  {r['in_process_runs_per_s']:6.0f} runs/s {at}")
    print(f"chat API    {pair('service')}  {r['service_requests_per_s']:6.0f} requests/s {at}")
    print(f"overhead    {pair('overhead')}")
    print(f"runs API    {pair('runs_api')}  (POST, then follow the events to finished)")
    print(
        f"memory      {r['rss_per_live_run_kib']:.0f} KiB per live run, "
        f"{r['rss_per_follower_kib']:.0f} KiB more per event-stream follower "
        f"({r['live_runs']} at once; server RSS before: {r['rss_before_mib']:.0f} MiB)"
    )
    print(f"traced      {r['traced_per_live_run_kib']:.0f} KiB of Python objects per live run")
    print(json.dumps(r))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        run_server(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--live", type=int, default=300)
    parser.add_argument("--no-store", action="store_true")
    report(asyncio.run(measure(parser.parse_args())))


if __name__ == "__main__":
    main()
