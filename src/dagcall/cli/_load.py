"""A load test: many concurrent questions through one compiler in one process.

The models are scripted (a planner whose plan depends on the question, a joiner that adds up
the observations it is shown) and the tools sleep like web APIs, so what is measured is
dagcall itself: that every question gets its right answer under load, the throughput, how
long a ready task waits before its tool starts (the scheduler's own overhead), and how much
memory the process needs.
"""

from __future__ import annotations

import asyncio
import gc
import re
import resource
import statistics
import time
from dataclasses import dataclass

from dagcall import Compiler, Message, ScriptedModel, tool
from dagcall.tokens import estimate_tokens

__all__ = ["LoadReport", "run_load_test"]


@dataclass(frozen=True)
class LoadReport:
    questions: int
    tasks: int
    correct: int
    wall_time: float
    throughput: float  # questions per second
    overhead_p50_ms: float  # ready → tool started
    overhead_p99_ms: float
    overhead_max_ms: float
    rss_before_mb: float
    rss_after_mb: float

    def lines(self) -> list[str]:
        return [
            f"questions        {self.questions:,} ({self.tasks:,} tasks), "
            f"{self.correct:,} answered right",
            f"wall time        {self.wall_time:.2f} s",
            f"throughput       {self.throughput:,.0f} questions/s",
            f"task overhead    p50 {self.overhead_p50_ms:.2f} ms, p99 "
            f"{self.overhead_p99_ms:.2f} ms, max {self.overhead_max_ms:.2f} ms "
            "(task ready → its tool starting)",
            f"memory (max RSS) {self.rss_before_mb:.0f} MB before, "
            f"{self.rss_after_mb:.0f} MB after",
        ]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _plan(messages: list[Message], fan_out: int) -> str:
    question = messages[-1].content
    number = int(re.findall(r"\d+", question)[-1])
    lines = [f'{j}. lookup("q{number}-{j}")' for j in range(1, fan_out + 1)]
    refs = ", ".join(f"${j}" for j in range(1, fan_out + 1))
    lines.append(f"{fan_out + 1}. total([{refs}])")
    lines.append(f"{fan_out + 2}. join()")
    return "\n".join(lines)


def _join(messages: list[Message]) -> str:
    # The last observation is the total; the joiner reports it.
    values = re.findall(r'status="done">([^<]*)</observation>', messages[-1].content)
    return f"Thought: the total is known.\nAction: Finish({values[-1] if values else 'none'})"


async def run_load_test(
    questions: int = 1000,
    *,
    fan_out: int = 3,
    tool_latency: float = 0.05,
    time_to_first_token: float = 0.02,
    tokens_per_second: float | None = None,
) -> LoadReport:
    """Run ``questions`` concurrent questions, each a plan of ``fan_out`` parallel look-ups
    and a sum, and report correctness, throughput, scheduler overhead and memory."""

    @tool
    async def lookup(key: str) -> int:
        """Look a key up."""
        await asyncio.sleep(tool_latency)
        return len(key)

    @tool
    def total(values: list[int]) -> int:
        """Add numbers."""
        return sum(values)

    def reply(messages: list[Message]) -> str:
        if "Question:" in messages[-1].content and "<observation" not in messages[-1].content:
            return _plan(messages, fan_out)
        return _join(messages)

    model = ScriptedModel(
        reply, time_to_first_token=time_to_first_token, tokens_per_second=tokens_per_second
    )
    compiler = Compiler(model=model, tools=[lookup, total], max_replans=0)

    def expected(i: int) -> str:
        return str(sum(len(f"q{i}-{j}") for j in range(1, fan_out + 1)))

    estimate_tokens("warm up")  # load the tokenizer now, not in the middle of the run
    gc.collect()
    rss_before = _rss_mb()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(compiler.arun(f"Question number {i}") for i in range(questions))
    )
    wall = time.perf_counter() - started
    overheads = sorted(
        (t.started_at - t.ready_at) * 1000
        for r in results
        for t in r.tasks
        if t.started_at is not None and t.ready_at is not None
    )
    correct = sum(r.answer == expected(i) for i, r in enumerate(results))
    model.calls.clear()  # the scripted model's own record is not dagcall's memory
    p99 = overheads[min(len(overheads) - 1, int(len(overheads) * 0.99))] if overheads else 0.0
    return LoadReport(
        questions=questions,
        tasks=sum(len(r.tasks) for r in results),
        correct=correct,
        wall_time=wall,
        throughput=questions / wall if wall > 0 else 0.0,
        overhead_p50_ms=statistics.median(overheads) if overheads else 0.0,
        overhead_p99_ms=p99,
        overhead_max_ms=overheads[-1] if overheads else 0.0,
        rss_before_mb=rss_before,
        rss_after_mb=_rss_mb(),
    )
