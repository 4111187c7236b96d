"""What a tool call costs on Ray: ``python -m dagcall.bench.ray_overhead [--calls N]``.

Runs the same trivial tool (``echo(x) -> x``, sync) ``--calls`` times through real Compiler
runs, one call at a time (``max_concurrency=1``, so each is timed alone, not queued), with
the local :class:`~dagcall.AsyncioExecutor` (a worker thread per call), with
:class:`~dagcall.ray.RayExecutor` as a Ray task per call, and on the tool's Ray actor; then
prints p50, p99 and mean of the tasks' durations (``ended_at - started_at``: from the executor
taking the call to its result, arguments validated, shipped, run and sent back) side by side,
and each one's ratio to the local executor; and, for Ray's own floor, a plain Ray task
(``await f.remote(x)``, no dagcall) as often.  A warm-up run per executor is left out (Ray's
first call starts a worker and exports the function).  It starts its own local Ray instance
(``--cpus``, 2 by default) unless ``RAY_ADDRESS`` names a cluster.  Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from dagcall import AsyncioExecutor, Compiler, Executor, ScriptedModel, Tool

FINISH = "Thought: done.\nAction: Finish(ok)"


def _echo(x: int) -> int:
    return x


def _tools() -> dict[str, Tool]:
    return {
        "local": Tool(_echo, name="echo", placement="local"),
        "ray task": Tool(_echo, name="echo", placement="remote"),
        "ray actor": Tool(_echo, name="echo", placement="actor"),
    }


def _durations(executor: Executor, echo: Tool, calls: int, batch: int = 50) -> list[float]:
    """Seconds each of ``calls`` calls took, in runs of ``batch`` independent calls."""
    seen: list[float] = []
    while len(seen) < calls:
        n = min(batch, calls - len(seen))
        plan = "\n".join(f"{i + 1}. echo({i})" for i in range(n))
        compiler = Compiler(
            model=ScriptedModel([plan, FINISH]),
            tools=[echo],
            executor=executor,
            max_tasks=n + 1,
        )
        result = compiler.run("overhead")
        for task in result.tasks:
            if task.output != task.id - 1 or task.duration is None:
                raise RuntimeError(f"task {task.id} did not run: {task.status} {task.error}")
            seen.append(task.duration)
    return seen


def _bare_ray(calls: int) -> list[float]:
    """Seconds each ``await f.remote(x)`` of a plain Ray task took: Ray's own floor."""
    import asyncio

    import ray

    remote = ray.remote(_echo)

    async def go() -> list[float]:
        took = []
        for i in range(calls):
            started = time.perf_counter()
            if await remote.remote(i) != i:
                raise RuntimeError("a plain Ray task returned the wrong value")
            took.append(time.perf_counter() - started)
        return took

    return asyncio.run(go())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def measure(calls: int = 200, cpus: float = 2) -> dict[str, dict[str, float]]:
    """p50, p99 and mean (seconds) per call for each way of running it."""
    from dagcall.ray import RayExecutor

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if not os.environ.get("RAY_ADDRESS"):
        init["num_cpus"] = cpus
    tools = _tools()
    stats: dict[str, dict[str, float]] = {}
    local = AsyncioExecutor(max_concurrency=1)
    with RayExecutor(max_concurrency=1, init_kwargs=init) as ray_executor:
        executors: dict[str, Executor] = {
            "local": local,
            "ray task": ray_executor,
            "ray actor": ray_executor,
        }
        for name, executor in executors.items():
            _durations(executor, tools[name], 20)  # warm-up
            took = _durations(executor, tools[name], calls)
            stats[name] = _summary(took)
        _bare_ray(20)
        stats["plain ray task"] = _summary(_bare_ray(calls))
    return stats


def _summary(took: list[float]) -> dict[str, float]:
    return {
        "p50": _percentile(took, 50),
        "p99": _percentile(took, 99),
        "mean": statistics.fmean(took),
    }


def report(stats: dict[str, dict[str, float]], calls: int) -> str:
    base = stats["local"]
    lines = [
        f"per-call overhead, {calls} trivial calls each, one at a time "
        f"({os.cpu_count()} cores, Python {sys.version.split()[0]})",
        f"{'executor':<16}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'p50 x':>9}{'p99 x':>9}",
    ]
    for name, s in stats.items():
        lines.append(
            f"{name:<16}{s['p50'] * 1e3:>10.3f}{s['p99'] * 1e3:>10.3f}{s['mean'] * 1e3:>10.3f}"
            f"{s['p50'] / base['p50']:>9.1f}{s['p99'] / base['p99']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dagcall.bench.ray_overhead")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per executor")
    parser.add_argument("--cpus", type=float, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stats = measure(args.calls, args.cpus)
    print(report(stats, args.calls))
    print(f"(took {time.perf_counter() - started:.1f} s with Ray's start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
