"""Critical-path scheduling's gain: the makespan of wide plans under a concurrency limit,
with the optimisation off (tasks start in the order they were parsed) and on (the ready task
with the longest remaining path starts first).

The plan: ``width`` independent tasks, then the head of a chain of ``chain`` tasks, each
task a call that sleeps ``step`` seconds.  Started in plan order, the chain waits for the wide
tasks ahead of it; started by remaining path, it begins at the first free slot and the wide
tasks fill the other slots around it.  ``python -m dagcall.bench._critical`` prints a table.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from typing import Any

from dagcall import Compiler, Optimizations, ScriptedModel, tool

__all__ = ["CriticalPathMeasurement", "critical_path_gain", "critical_path_plan"]

_FINISH = "Thought: done.\nAction: Finish(done)"


@dataclass(frozen=True)
class CriticalPathMeasurement:
    """One plan shape at one limit: the tasks' makespan (first start to last end, seconds)
    with critical-path scheduling off and on, and their ratio (off / on: above 1 is a gain)."""

    limit: int
    width: int
    chain: int
    step: float
    makespan_off: float
    makespan_on: float

    @property
    def ratio(self) -> float:
        return self.makespan_off / self.makespan_on if self.makespan_on > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "width": self.width,
            "chain": self.chain,
            "step": self.step,
            "makespan_off": round(self.makespan_off, 4),
            "makespan_on": round(self.makespan_on, 4),
            "ratio": round(self.ratio, 3),
        }


def critical_path_plan(width: int, chain: int) -> str:
    """``width`` independent tasks, then a chain of ``chain`` tasks (its head parsed last of
    the tasks that are ready at once)."""
    lines = [f'{i}. work("wide {i}")' for i in range(1, width + 1)]
    head = width + 1
    lines.append(f'{head}. work("chain {head}")')
    for i in range(head + 1, head + chain):
        lines.append(f'{i}. work("chain {i} after ${i - 1}")')
    lines.append(f"{head + chain}. join()")
    return "\n".join(lines) + "\n<END_OF_PLAN>"


async def _makespan(plan: str, limit: int, step: float, *, critical_path: bool) -> float:
    @tool
    async def work(label: str) -> str:
        """Work for a while."""
        await asyncio.sleep(step)
        return label

    compiler = Compiler(
        model=ScriptedModel([plan, _FINISH]),
        tools=[work],
        max_concurrency=limit,
        max_replans=0,
        optimize=Optimizations(critical_path=critical_path),
    )
    result = await compiler.arun("run the plan")
    starts = [t.started_at for t in result.tasks if t.started_at is not None]
    ends = [t.ended_at for t in result.tasks if t.ended_at is not None]
    if len(ends) != len(result.tasks) or not starts:
        raise RuntimeError("a task of the critical-path benchmark did not run")
    return max(ends) - min(starts)


async def critical_path_gain(
    limits: tuple[int, ...] = (2, 4),
    *,
    width: int | None = None,
    chain: int = 4,
    step: float = 0.1,
    repeats: int = 3,
) -> list[CriticalPathMeasurement]:
    """Measure the makespan off and on at each concurrency limit in ``limits``, for a plan of
    ``width`` wide tasks (default: three per slot) and a chain of ``chain`` tasks of ``step``
    seconds each; the median of ``repeats`` runs of each."""
    out: list[CriticalPathMeasurement] = []
    # A first run pays for one-off imports and set-up: it is not measured.
    await _makespan(critical_path_plan(1, 1), 1, step / 10, critical_path=False)
    for limit in limits:
        wide = width if width is not None else 3 * limit
        plan = critical_path_plan(wide, chain)
        offs, ons = [], []
        for _ in range(repeats):
            offs.append(await _makespan(plan, limit, step, critical_path=False))
            ons.append(await _makespan(plan, limit, step, critical_path=True))
        off, on = statistics.median(offs), statistics.median(ons)
        out.append(CriticalPathMeasurement(limit, wide, chain, step, off, on))
    return out


def main() -> None:  # pragma: no cover - a command-line report
    for m in asyncio.run(critical_path_gain()):
        d = m.to_dict()
        print(
            f"limit {d['limit']}: {d['width']} wide + chain of {d['chain']} x {d['step']}s: "
            f"off {d['makespan_off']:.3f}s, on {d['makespan_on']:.3f}s, ratio {d['ratio']:.2f}"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
