"""ReAct (Yao et al., 2023): Thought / Action / Observation, one tool call per LLM call.

The baseline of the LLMCompiler paper.  Every step resends the whole history, and tools run
strictly one after another, which is exactly what dagcall's compiler avoids.  It runs on the
same :class:`~dagcall.models.Model` and tools and returns the same
:class:`~dagcall.RunResult`, so the two can be compared call for call and plotted on one
time axis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .._errors import PlanError, UsageError
from .._executor import Executor
from .._joiner import parse_joiner
from .._plan import PlanParser, TaskSpec
from .._prompts import render, template
from .._result import Round, StopReason
from .._run import Agent, EventHandler, RunLimits, RunScope
from .._tools import Approver, BaseTool
from .._toolsets import as_tool
from ..models import Message, Model, resolve_model

__all__ = ["ReActAgent"]

_ACTION = re.compile(r"^\s*Action\s*:\s*(.*)$", re.I | re.M)
_THOUGHT = re.compile(r"^\s*Thought\s*:\s*(.*)$", re.I | re.M)
_STOP = ["\nObservation:", "Observation:"]


class ReActAgent(Agent):
    """Answers a question by alternating model steps and single tool calls.

    ``max_steps`` bounds the model calls; when it is spent the last thought is the answer
    (``stop_reason="max_steps"``).  Tools, approvals and the run's limits (``timeout``,
    ``tool_timeout``, ``max_tokens``, ``executor``) behave as in :class:`~dagcall.Compiler`,
    and ``arun(on_event=...)`` reports the same events (the model's text as ``plan_text``).
    """

    def __init__(
        self,
        model: Model | str | None = None,
        tools: Iterable[BaseTool | Callable[..., Any]] = (),
        *,
        max_steps: int = 10,
        timeout: float | None = None,
        tool_timeout: float | None = 60.0,
        max_tokens: int | None = None,
        approve: Approver | None = None,
        executor: Executor | None = None,
        examples: str = "",
    ) -> None:
        if max_steps < 1:
            raise UsageError("max_steps must be at least 1")
        self.model = resolve_model(model)
        self.tools = {t.name: t for t in map(as_tool, tools)}
        self.max_steps = max_steps
        self.limits = RunLimits(
            timeout=timeout,
            tool_timeout=tool_timeout,
            max_tokens=max_tokens,
            approve=approve,
            executor=executor,
        )
        listing = "\n\n".join(t.render() for t in self.tools.values())
        extra = "\n" + examples.strip() + "\n" if examples.strip() else ""
        self.system = render(template("react_system.md"), tools=listing, examples=extra)

    def scope(self, question: str, on_event: EventHandler | None) -> RunScope:
        return _ReActRun(self, question, on_event)


class _ReActRun(RunScope):
    def __init__(self, agent: ReActAgent, question: str, on_event: EventHandler | None) -> None:
        super().__init__(question, agent.tools, agent.limits, on_event)
        self.agent = agent
        self.rnd = Round(index=0)
        self.result.rounds.append(self.rnd)
        self.transcript = ""

    async def body(self) -> None:
        agent, result, rnd = self.agent, self.result, self.rnd
        self.emit("round_start")
        try:
            for step in range(1, agent.max_steps + 1):
                messages = [
                    Message("system", agent.system),
                    Message("user", f"Question: {result.question}\n{self.transcript}".rstrip()),
                ]
                completion = await self.call_model("react", agent.model, messages, stop=_STOP)
                text = completion.text.strip()
                self.transcript += text + "\n"
                action = _ACTION.search(text)
                call = action.group(1).strip() if action else ""
                if not call or re.match(r"finish\s*\(", call, re.I) or not action:
                    decision = parse_joiner(text)
                    result.answer = decision.text
                    result.stop_reason = StopReason.FINISH
                    rnd.decision, rnd.answer = "finish", decision.text
                    self.emit("round_end")
                    return
                observation = await self._act(step, call)
                self.budget.check()
                self.transcript += f"Observation: {observation}\n"
            thoughts = _THOUGHT.findall(self.transcript)
            result.answer = thoughts[-1].strip() if thoughts else ""
            result.stop_reason = StopReason.MAX_STEPS
            self.emit("round_end")
        finally:
            rnd.plan = self.transcript

    async def _act(self, step: int, call: str) -> str:
        """Run one action as task ``step`` and return its observation."""
        scheduler, rnd = self.scheduler, self.rnd
        parser = PlanParser(self.agent.tools, prior_ids=scheduler.records)
        items = parser.feed(f"{step}. {call}\n") + parser.close()
        for item in items:
            self.budget.count_line(f"task {item.id}" if isinstance(item, TaskSpec) else "a line")
            if isinstance(item, TaskSpec):
                rnd.task_ids.append(item.id)
                self.result.tasks.append(scheduler.submit(item, 0))
            elif isinstance(item, PlanError):
                rnd.errors.append(item)
                record = scheduler.reject(item, 0)
                if record is not None:
                    rnd.task_ids.append(record.id)
                    self.result.tasks.append(record)
        await self.wait_for_tasks()
        record = scheduler.records.get(step)
        if record is None:
            return 'the action was not a tool call like tool("text"); write one call'
        return record.observation
