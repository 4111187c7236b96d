"""ReAct (Yao et al., 2023): Thought / Action / Observation, one tool call per LLM call.

The baseline of the LLMCompiler paper.  Every step resends the whole history, and tools run
strictly one after another, which is exactly what dagcall's compiler avoids.  It runs on the
same :class:`~dagcall.models.Model` and tools and returns the same
:class:`~dagcall.RunResult`, so the two can be compared call for call and plotted on one
time axis.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from .._context import measured_call
from .._errors import DagcallError, PlanError, UsageError
from .._joiner import parse_joiner
from .._plan import PlanParser, TaskSpec
from .._prompts import render, template
from .._result import Round, RunResult
from .._scheduler import Scheduler
from .._tools import Approver, BaseTool
from .._toolsets import as_tool
from ..models import Message, Model, complete, resolve_model

__all__ = ["ReActAgent"]

_ACTION = re.compile(r"^\s*Action\s*:\s*(.*)$", re.I | re.M)
_THOUGHT = re.compile(r"^\s*Thought\s*:\s*(.*)$", re.I | re.M)
_STOP = ["\nObservation:", "Observation:"]


class ReActAgent:
    """Answers a question by alternating model steps and single tool calls.

    ``max_steps`` bounds the model calls; when it is spent the last thought is the answer
    (``stop_reason="max_steps"``).  Tools, timeouts and approvals behave as in
    :class:`~dagcall.Compiler`.
    """

    def __init__(
        self,
        model: Model | str | None = None,
        tools: Iterable[BaseTool | Callable[..., Any]] = (),
        *,
        max_steps: int = 10,
        tool_timeout: float | None = 60.0,
        approve: Approver | None = None,
        examples: str = "",
    ) -> None:
        if max_steps < 1:
            raise UsageError("max_steps must be at least 1")
        self.model = resolve_model(model)
        self.tools = {t.name: t for t in map(as_tool, tools)}
        self.max_steps = max_steps
        self.tool_timeout = tool_timeout
        self.approve = approve
        listing = "\n\n".join(t.render() for t in self.tools.values())
        extra = "\n" + examples.strip() + "\n" if examples.strip() else ""
        self.system = render(template("react_system.md"), tools=listing, examples=extra)

    def run(self, question: str) -> RunResult:
        """Synchronous :meth:`arun`."""
        return asyncio.run(self.arun(question))

    async def arun(self, question: str) -> RunResult:
        """Answer ``question``; errors carry the partial result as ``.result``."""
        t0 = time.perf_counter()
        result = RunResult(question=question)
        rnd = Round(index=0)
        result.rounds.append(rnd)
        scheduler = Scheduler(
            self.tools,
            t0=t0,
            tool_timeout=self.tool_timeout,
            record_llm_call=result.usage.append,
            approve=self.approve,
        )
        transcript = ""
        try:
            for step in range(1, self.max_steps + 1):
                messages = [
                    Message("system", self.system),
                    Message("user", f"Question: {question}\n{transcript}".rstrip()),
                ]
                started = time.perf_counter() - t0
                completion = await complete(self.model, messages, stop=_STOP)
                ended = time.perf_counter() - t0
                result.usage.append(
                    measured_call("react", self.model, 0, messages, completion, started, ended)
                )
                text = completion.text.strip()
                transcript += text + "\n"
                action = _ACTION.search(text)
                call = action.group(1).strip() if action else ""
                if not call or re.match(r"finish\s*\(", call, re.I) or not action:
                    decision = parse_joiner(text)
                    result.answer = decision.text
                    result.stop_reason = "finish"
                    rnd.answer = decision.text
                    return result
                observation = await self._act(scheduler, result, rnd, step, call)
                transcript += f"Observation: {observation}\n"
            thoughts = _THOUGHT.findall(transcript)
            result.answer = thoughts[-1].strip() if thoughts else ""
            result.stop_reason = "max_steps"
            return result
        except DagcallError as exc:
            exc.result = result
            raise
        finally:
            await scheduler.cancel_all()
            rnd.plan = transcript
            result.tasks = [scheduler.records[i] for i in sorted(scheduler.records)]
            result.wall_time = time.perf_counter() - t0

    async def _act(
        self, scheduler: Scheduler, result: RunResult, rnd: Round, step: int, call: str
    ) -> str:
        """Run one action as task ``step`` and return its observation."""
        parser = PlanParser(self.tools, prior_ids=scheduler.records)
        items = parser.feed(f"{step}. {call}\n") + parser.close()
        for item in items:
            if isinstance(item, TaskSpec):
                rnd.task_ids.append(item.id)
                scheduler.submit(item, 0)
            elif isinstance(item, PlanError):
                rnd.errors.append(item)
                record = scheduler.reject(item, 0)
                if record is not None:
                    rnd.task_ids.append(record.id)
        await scheduler.wait_idle()
        record = scheduler.records.get(step)
        if record is None:
            return 'the action was not a tool call like tool("text"); write one call'
        return record.observation
