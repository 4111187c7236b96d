"""What a run produces: its answer, rounds, tasks and LLM calls."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from ._errors import DagcallError

__all__ = [
    "LLMCall",
    "Round",
    "RunEvent",
    "RunResult",
    "TaskRecord",
    "TaskStatus",
    "observation_text",
]

MAX_OBSERVATION_CHARS = 4000


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    WAITING = "waiting"  # parsed, waiting for the tasks it depends on
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # a task it depends on did not finish
    CANCELLED = "cancelled"  # the run was cancelled or ran out of time, and the call stopped
    # The run was cancelled or ran out of time while the call's worker thread was still
    # running: Python cannot kill a thread, so it may yet complete its side effects.
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.WAITING, TaskStatus.RUNNING)


@dataclass
class TaskRecord:
    """One task of a run.  Times are seconds since the run started."""

    id: int
    tool: str
    call: str
    round: int
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    deps: tuple[int, ...] = ()
    thought: str | None = None
    status: TaskStatus = TaskStatus.WAITING
    resolved_args: dict[str, Any] | None = None
    output: Any = None
    error: DagcallError | None = None
    parsed_at: float = 0.0
    ready_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def observation(self) -> str:
        """What the joiner and replanner are shown for this task."""
        if self.status is TaskStatus.DONE:
            return observation_text(self.output)
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error.message}"
        return f"({self.status.value})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "call": self.call,
            "round": self.round,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "deps": list(self.deps),
            "thought": self.thought,
            "status": self.status.value,
            "resolved_args": self.resolved_args,
            "output": self.output,
            "error": None
            if self.error is None
            else {
                "type": type(self.error).__name__,
                "message": self.error.message,
            },
            "parsed_at": self.parsed_at,
            "ready_at": self.ready_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


#: Who made a model call: the planner, the joiner, a tool, or a ReAct step.
CallRole = Literal["planner", "joiner", "tool", "react"]


@dataclass(frozen=True)
class LLMCall:
    """One model call of a run.  Times are seconds since the run started."""

    role: CallRole
    model: str
    round: int
    input_tokens: int
    output_tokens: int
    started_at: float
    ended_at: float
    time_to_first_token: float | None
    estimated: bool = False  # token counts estimated because the model reported none
    task_id: int | None = None  # for role "tool": the task whose tool made the call

    @property
    def latency(self) -> float:
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "model": self.model,
            "round": self.round,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "latency": self.latency,
            "time_to_first_token": self.time_to_first_token,
            "estimated": self.estimated,
            "task_id": self.task_id,
        }


@dataclass
class Round:
    """One plan → execute → join round."""

    index: int
    plan: str = ""
    task_ids: list[int] = field(default_factory=list)
    errors: list[DagcallError] = field(default_factory=list)
    thought: str | None = None  # a planner thought after the last task
    joiner_output: str = ""
    decision: Literal["finish", "replan", ""] = ""
    joiner_thought: str = ""
    answer: str | None = None
    replan_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "plan": self.plan,
            "task_ids": self.task_ids,
            "errors": [{"type": type(e).__name__, "message": e.message} for e in self.errors],
            "thought": self.thought,
            "joiner_output": self.joiner_output,
            "decision": self.decision,
            "joiner_thought": self.joiner_thought,
            "answer": self.answer,
            "replan_reason": self.replan_reason,
        }


@dataclass
class RunResult:
    """The outcome of one question.

    ``answer`` is the final answer; ``rounds`` one entry per round; ``tasks`` every task of
    every round in id order; ``usage`` every LLM call.  ``stop_reason`` is ``"finish"`` when
    the joiner answered, ``"max_replans"`` when it still wanted to replan after the last
    allowed round (its thought is then the answer), or the error kind of a partial result.
    """

    question: str
    answer: str = ""
    rounds: list[Round] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    usage: list[LLMCall] = field(default_factory=list)
    wall_time: float = 0.0
    stop_reason: str = ""

    @property
    def input_tokens(self) -> int:
        return sum(c.input_tokens for c in self.usage)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.usage)

    @property
    def llm_calls(self) -> int:
        return len(self.usage)

    @property
    def sequential_time(self) -> float:
        """How long the same LLM calls and tool calls take run one after another."""
        return sum(c.latency for c in self.usage) + sum(t.duration or 0.0 for t in self.tasks)

    def task(self, task_id: int) -> TaskRecord:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "wall_time": self.wall_time,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "rounds": [r.to_dict() for r in self.rounds],
            "tasks": [t.to_dict() for t in self.tasks],
            "usage": [c.to_dict() for c in self.usage],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The whole result as JSON; values JSON cannot hold are written as their repr."""
        return json.dumps(self.to_dict(), indent=indent, default=repr, ensure_ascii=False)


EventKind = Literal[
    "round_start", "plan_text", "task", "joiner_start", "joiner_text", "round_end", "finished"
]


@dataclass(frozen=True)
class RunEvent:
    """Something that happened in a run, for live views (``Compiler.arun(on_event=...)``).

    ``round_start`` / ``round_end`` bracket a round; ``plan_text`` and ``joiner_text`` carry
    each streamed delta in ``text``; ``task`` fires when a task is parsed, starts and ends
    (``task.status`` says which); ``finished`` comes once, last.  ``result`` is the run as it
    stands (its ``tasks`` grow as they are parsed).
    """

    kind: EventKind
    result: RunResult
    round: int
    task: TaskRecord | None = None
    text: str = ""


def observation_text(value: Any, limit: int | None = MAX_OBSERVATION_CHARS) -> str:
    """A tool result as text: strings as they are, other values as JSON where possible."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float) or value is None:
        text = repr(value) if isinstance(value, float) else str(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    return text
