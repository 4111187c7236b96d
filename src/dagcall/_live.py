"""What a person sees while a run goes: the plan as it streams, each task's state, the answer."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._pricing import run_cost
from ._result import RunEvent, RunResult, TaskRecord, TaskStatus

__all__ = ["LiveView", "PlainReporter", "render_result", "summary_line"]

_STATE_STYLE = {
    TaskStatus.WAITING: "dim",
    TaskStatus.RUNNING: "yellow",
    TaskStatus.DONE: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.SKIPPED: "magenta",
    TaskStatus.CANCELLED: "red",
}


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _call_args(task: TaskRecord) -> str:
    _, _, rest = task.call.partition("(")
    return rest[:-1] if rest.endswith(")") else rest or task.call


def summary_line(result: RunResult) -> str:
    """Wall time, LLM calls, tokens, cost where known, and the one-after-another time."""
    parts = [
        f"wall {result.wall_time:.2f}s",
        f"{result.llm_calls} LLM call{'s' if result.llm_calls != 1 else ''}",
        f"{result.input_tokens:,} tokens in / {result.output_tokens:,} out",
    ]
    cost = run_cost(result)
    if cost is not None:
        parts.append(f"${cost:.4f}")
    sequential = result.sequential_time
    if result.wall_time > 0 and sequential > 0:
        parts.append(
            f"one after another {sequential:.2f}s ({sequential / result.wall_time:.2f}x longer)"
        )
    return " · ".join(parts)


class LiveView:
    """A rich renderable fed with run events: a table of tasks with their state and time."""

    def __init__(self, question: str) -> None:
        self.question = question
        self.result: RunResult | None = None
        self.phase = "planning"
        self.round = 0
        self.started = time.perf_counter()
        self.plan_chars = 0
        self.finished = False

    def handle(self, event: RunEvent) -> None:
        self.result = event.result
        self.round = event.round
        if event.kind == "round_start":
            self.phase = "planning" if event.round == 0 else f"replanning (round {event.round + 1})"
        elif event.kind == "plan_text":
            self.plan_chars += len(event.text)
        elif event.kind == "joiner_start":
            self.phase = "joining"
        elif event.kind == "finished":
            self.finished = True
            self.phase = "done"

    def _elapsed(self, task: TaskRecord) -> str:
        if task.started_at is None:
            return ""
        end = task.ended_at
        if end is None:
            end = time.perf_counter() - self.started
        return f"{end - task.started_at:.2f}s"

    def __rich__(self) -> RenderableType:
        table = Table(expand=False, show_edge=False, pad_edge=False, box=None)
        table.add_column("#", justify="right", style="bold")
        table.add_column("tool")
        table.add_column("arguments", overflow="ellipsis", no_wrap=True, max_width=60)
        table.add_column("state")
        table.add_column("time", justify="right")
        tasks = self.result.tasks if self.result else []
        for task in tasks:
            state = task.status
            table.add_row(
                str(task.id),
                task.tool or "?",
                _short(_call_args(task), 60),
                Text(state.value, style=_STATE_STYLE[state]),
                self._elapsed(task),
            )
        elapsed = time.perf_counter() - self.started
        header = Text.assemble(
            ("Q: ", "bold"), self.question, "\n", (f"{self.phase}", "cyan"), f"  {elapsed:.1f}s"
        )
        return Group(header, table)


class PlainReporter:
    """Line-by-line progress for output that is not a terminal (logs, pipes)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def handle(self, event: RunEvent) -> None:
        task = event.task
        if event.kind == "task" and task is not None and task.status.terminal:
            self.console.print(
                f"task {task.id} {task.call} {task.status.value} "
                f"{self._time(task)} → {_short(task.observation, 100)}",
                markup=False,
                highlight=False,
            )
        elif event.kind == "round_start" and event.round > 0:
            self.console.print(f"replanning (round {event.round + 1})", highlight=False)

    @staticmethod
    def _time(task: TaskRecord) -> str:
        if task.started_at is None or task.ended_at is None:
            return ""
        return f"{task.started_at:.2f}s→{task.ended_at:.2f}s"


def render_result(result: RunResult, console: Console, *, run_id: str | None = None) -> None:
    """The answer and summary after a run (both live and plain output end with this)."""
    console.print(Text.assemble(("A: ", "bold green"), result.answer or "(no answer)"))
    if result.stop_reason not in ("finish", ""):
        console.print(f"(stopped: {result.stop_reason})", style="yellow", highlight=False)
    console.print(summary_line(result), style="dim", highlight=False)
    if run_id:
        console.print(f"saved as run {run_id}", style="dim", highlight=False)


def as_json_ready(result: RunResult, **extra: Any) -> str:
    """The result's JSON with extra top-level fields (e.g. the run id)."""
    import json

    data = result.to_dict()
    data.update(extra)
    return json.dumps(data, indent=2, default=repr, ensure_ascii=False)
