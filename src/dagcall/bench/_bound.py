"""The critical-path bound: the least latency a run's own plan allows.

A task cannot start before its plan line has streamed (when the line's last character arrived,
from the round's ``line_times``, not when dagcall parsed it, so a parsing lag counts against
dagcall) nor before the tasks it needs are done, and takes as long as it took; a round's
joiner starts when the plan has streamed and its last task is done, and takes as long as it
took; the next round's planner follows the joiner.  The run's wall time over this bound is
dagcall's own scheduling overhead (1.00 is ideal).
"""

from __future__ import annotations

import re

from dagcall import Round, RunResult, TaskRecord

__all__ = ["critical_path_bound", "line_arrival"]

_TASK_LINE = re.compile(r"\s*(\d+)\s*\.")


def line_arrival(rnd: Round, task: TaskRecord) -> float:
    """When the line of ``task``'s call had streamed in full; its ``parsed_at`` when the
    round's text and times do not tell (a run from before ``line_times``, an edited plan)."""
    lines = rnd.plan.split("\n")
    if not rnd.line_times or len(rnd.line_times) not in (len(lines), len(lines) - 1):
        return task.parsed_at
    for number, line in enumerate(lines):
        match = _TASK_LINE.match(line)
        if match and int(match.group(1)) == task.id and number < len(rnd.line_times):
            return min(rnd.line_times[number], task.parsed_at)
    return task.parsed_at


def critical_path_bound(run: RunResult) -> float | None:
    """The bound for a compiler run; ``None`` if it has no planner calls (not a compiler
    run)."""
    rounds = sorted({c.round for c in run.usage if c.role == "planner"})
    if not rounds:
        return None
    clock = 0.0  # the bound's time when the current round's planner starts
    by_index = {r.index: r for r in run.rounds}
    for index in rounds:
        planner = next(c for c in run.usage if c.role == "planner" and c.round == index)
        shift = clock - planner.started_at
        plan_end = planner.ended_at + shift
        finish: dict[int, float] = {}
        last = plan_end
        for task in sorted((t for t in run.tasks if t.round == index), key=lambda t: t.id):
            if task.started_at is None or task.ended_at is None:
                continue
            rnd = by_index.get(index)
            start = (task.parsed_at if rnd is None else line_arrival(rnd, task)) + shift
            for dep in task.deps:
                start = max(start, finish.get(dep, 0.0))
            finish[task.id] = start + (task.ended_at - task.started_at)
            last = max(last, finish[task.id])
        joiners = [c for c in run.usage if c.role == "joiner" and c.round == index]
        clock = last + sum(c.ended_at - c.started_at for c in joiners)
    return clock
