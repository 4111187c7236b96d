"""What a person sees while a run goes: the plan as it streams, each task's state, the answer."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from dagcall import RunEvent, RunResult, TaskRecord, TaskStatus, json_safe, observation_text
from dagcall.pricing import run_cost

__all__ = ["LiveView", "PlainReporter", "render_result", "summary_line"]

_STATE_STYLE = {
    TaskStatus.WAITING: "dim",
    TaskStatus.RUNNING: "yellow",
    TaskStatus.DONE: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.SKIPPED: "magenta",
    TaskStatus.CANCELLED: "red",
}


# Characters that move the cursor, recolour or retitle a terminal, or reorder text (C0 and C1
# controls other than tab and newline, DEL, and the bidirectional overrides and isolates).
_UNSHOWABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _shown(value: object, limit: int | None = 10_000) -> str:
    """Foreign text (model or tool output) made safe to print: never raises, bounded, no lone
    surrogates, and control characters written as escapes (``\\x1b``) so they do nothing."""
    return _UNSHOWABLE.sub(lambda m: ascii(m.group())[1:-1], observation_text(value, limit))


def _short(text: object, width: int) -> str:
    text = " ".join(_shown(text, max(width * 8, 1000)).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _call_args(task: TaskRecord) -> str:
    call = _shown(task.call)
    _, _, rest = call.partition("(")
    return rest[:-1] if rest.endswith(")") else rest or call


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
                Text(_shown(task.id, 20)),
                Text(_shown(task.tool, 100) or "?"),
                Text(_short(_call_args(task), 60)),
                Text(_shown(getattr(state, "value", state), 40), style=_STATE_STYLE.get(state, "")),
                Text(self._elapsed(task)),
            )
        elapsed = time.perf_counter() - self.started
        header = Text.assemble(
            ("Q: ", "bold"),
            _shown(self.question, None),
            "\n",
            (f"{self.phase}", "cyan"),
            f"  {elapsed:.1f}s",
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
                f"task {_shown(task.id, 20)} {_shown(task.call, 1000)} "
                f"{_shown(getattr(task.status, 'value', task.status), 40)} "
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
    console.print(
        Text.assemble(("A: ", "bold green"), _shown(result.answer, None) or "(no answer)")
    )
    if result.stop_reason not in ("finish", "running"):
        why = str(result.stop_reason)
        if result.error is not None:
            why += f": {type(result.error).__name__}"
        console.print(
            f"(stopped: {_shown(why, 200)})",
            style="yellow",
            markup=False,
            highlight=False,
        )
    console.print(summary_line(result), style="dim", highlight=False)
    if run_id:
        console.print(f"saved as run {run_id}", style="dim", highlight=False)


def as_json_ready(result: RunResult, **extra: Any) -> str:
    """The result's JSON with extra top-level fields (e.g. the run id): strict JSON that
    encodes as UTF-8, whatever the run's tools returned (see ``dagcall._result.json_safe``)."""
    data = result.to_dict()
    data.update({name: json_safe(value) for name, value in extra.items()})
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
