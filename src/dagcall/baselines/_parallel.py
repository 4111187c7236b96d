"""Parallel function calling: the OpenAI ``parallel_tool_calls`` style of agent loop.

Each model turn may ask for several tool calls; they run concurrently, and the model is called
again with all their results, until it answers.  This is the strongest common alternative to
dagcall's compiler: parallel within a turn, but every dependency costs a full model call that
resends the conversation.  Models without native tool calls get them through a JSON format in
text (``{"tool_calls": [...]}`` / ``{"answer": ...}``), which works with any
:class:`~dagcall.models.Model`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from .._errors import UnknownToolError, UsageError
from .._executor import Executor
from .._plan import TaskSpec
from .._prompts import observation_element, render, template
from .._result import Round, StopReason
from .._run import Agent, EventHandler, RunLimits, RunScope
from .._tools import Approver, BaseTool
from .._toolsets import as_tool
from ..models import Message, Model, resolve_model

__all__ = ["ParallelFunctionCallingAgent", "parse_tool_reply"]

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```\s*$", re.M)


def parse_tool_reply(text: str) -> dict[str, Any] | None:
    """The first JSON object in a model's reply (code fences allowed), or ``None``."""
    cleaned = _FENCE.sub("", text.strip())
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(cleaned) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(cleaned, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


class ParallelFunctionCallingAgent(Agent):
    """Answers a question in turns of concurrent tool calls (native parallel function calling).

    With a model that has native tool calls (``supports_tools``: OpenAI-compatible and Anthropic
    models) the calls go through the provider's tools API (parallel calls in one turn) and the
    results back as tool results; other models write the calls as JSON in text (``native=False``
    forces that).  ``max_turns`` bounds the model calls; a turn that asks for no valid call and
    gives no answer is told so once per turn.  Tools, timeouts and approvals behave as in
    :class:`~dagcall.Compiler`, and the result is the same :class:`~dagcall.RunResult`.
    """

    def __init__(
        self,
        model: Model | str | None = None,
        tools: Iterable[BaseTool | Callable[..., Any]] = (),
        *,
        max_turns: int = 8,
        timeout: float | None = None,
        tool_timeout: float | None = 60.0,
        max_concurrency: int | None = None,
        max_tokens: int | None = None,
        approve: Approver | None = None,
        executor: Executor | None = None,
        examples: str = "",
        native: bool | None = None,
    ) -> None:
        if max_turns < 1:
            raise UsageError("max_turns must be at least 1")
        self.model = resolve_model(model)
        self.tools = {t.name: t for t in map(as_tool, tools)}
        self.max_turns = max_turns
        self.limits = RunLimits(
            timeout=timeout,
            tool_timeout=tool_timeout,
            max_concurrency=max_concurrency,
            max_tokens=max_tokens,
            approve=approve,
            executor=executor,
        )
        self.native = self.model.supports_tools if native is None else native
        if self.native and not self.model.supports_tools:
            raise UsageError(f"{self.model.name} has no native tool calls; leave native unset")
        self.specs = [
            {"name": t.name, "description": t.description, "parameters": t.json_schema}
            for t in self.tools.values()
        ]
        extra = "\n" + examples.strip() + "\n" if examples.strip() else ""
        if self.native:
            self.system = render(template("parallel_native_system.md"), examples=extra)
        else:
            listing = "\n\n".join(
                f"{t.name}: {t.description}\n"
                f"arguments: {json.dumps(t.json_schema.get('properties', {}))}"
                for t in self.tools.values()
            )
            self.system = render(template("parallel_system.md"), tools=listing, examples=extra)

    def scope(self, question: str, on_event: EventHandler | None) -> RunScope:
        return _ParallelRun(self, question, on_event)


class _ParallelRun(RunScope):
    def __init__(
        self, agent: ParallelFunctionCallingAgent, question: str, on_event: EventHandler | None
    ) -> None:
        super().__init__(question, agent.tools, agent.limits, on_event)
        self.agent = agent

    async def body(self) -> None:
        agent, result = self.agent, self.result
        messages = [
            Message("system", agent.system),
            Message("user", f"Question: {result.question}"),
        ]
        next_id = 1
        for turn in range(agent.max_turns):
            rnd = Round(index=turn)
            self.round = turn
            result.rounds.append(rnd)
            self.emit("round_start")
            completion = await self.call_model(
                "planner",
                agent.model,
                messages,
                round_index=turn,
                tools=agent.specs if agent.native else None,
            )
            text = completion.text.strip()
            rnd.plan = text
            if agent.native:
                messages.append(Message("assistant", text, tool_calls=completion.tool_calls))
                calls: Any = [
                    {"name": c.name, "arguments": c.arguments, "id": c.id}
                    for c in completion.tool_calls
                ]
                if not calls:
                    return self._finish(rnd, text)
            else:
                messages.append(Message("assistant", text))
                reply = parse_tool_reply(text)
                if reply is None and "{" not in text and text:
                    reply = {"answer": text}  # a plain-text answer
                if reply is not None and "answer" in reply and not reply.get("tool_calls"):
                    return self._finish(rnd, str(reply["answer"]))
                calls = reply.get("tool_calls") if reply is not None else None
                if not isinstance(calls, list) or not calls:
                    messages.append(
                        Message(
                            "user",
                            'Reply with JSON only: {"tool_calls": [...]} or {"answer": "..."}.',
                        )
                    )
                    self.emit("round_end")
                    continue
            first = next_id
            for call in calls:
                self._submit(rnd, next_id, turn, call)
                next_id += 1
            await self.wait_for_tasks()
            self.budget.check()
            rnd.decision = "replan"
            self.emit("round_end")
            done = [self.scheduler.records.get(first + k) for k in range(len(calls))]
            if agent.native:  # every call gets its answer, also one that could not run
                messages += [
                    Message(
                        "tool",
                        record.observation if record else "(not run)",
                        tool_call_id=str(call.get("id")),
                    )
                    for record, call in zip(done, calls, strict=True)
                ]
            else:
                results = "\n".join(observation_element(r) for r in done if r is not None)
                messages.append(Message("user", f"Tool results:\n{results}"))
        result.stop_reason = StopReason.MAX_TURNS

    def _finish(self, rnd: Round, answer: str) -> None:
        self.result.answer = answer.strip()
        self.result.stop_reason = StopReason.FINISH
        rnd.decision, rnd.answer = "finish", self.result.answer
        self.emit("round_end")

    def _submit(self, rnd: Round, task_id: int, turn: int, call: Any) -> None:
        scheduler, tools = self.scheduler, self.agent.tools
        name = call.get("name") if isinstance(call, dict) else None
        arguments = call.get("arguments", {}) if isinstance(call, dict) else {}
        if isinstance(arguments, str):  # OpenAI sends arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                arguments = {"_": arguments}
        if not isinstance(arguments, dict):
            arguments = {"_": arguments}
        text = f"{name}({json.dumps(arguments, ensure_ascii=False)})"
        rnd.task_ids.append(task_id)
        if not isinstance(name, str) or name not in tools:
            error = UnknownToolError(
                f"unknown tool {name!r}; the tools are {', '.join(tools)}",
                line=text,
                task_id=task_id,
            )
            rnd.errors.append(error)
            record = scheduler.reject(error, turn)
            if record is not None:
                self.result.tasks.append(record)
            return
        spec = TaskSpec(
            id=task_id,
            tool=name,
            args=(),
            kwargs=dict(arguments),
            deps=frozenset(),
            call=text,
            raw_kwargs=dict(arguments),
        )
        self.result.tasks.append(scheduler.submit(spec, turn))
