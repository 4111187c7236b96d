"""The systems compared, and the reference texts a simulated model speaks for each of them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagcall import BaseTool, Compiler, Optimizations, PlanCache, RunResult, TaskSpec, parse_plan

from ..baselines import ParallelFunctionCallingAgent, ReActAgent
from ..models import Message, Model
from ..tools import math_tool
from ._data import BenchQuestion
from ._reference import math_responder, search_tool
from ._simulate import PrefixCache, Profile, SimulatedModel, WebLatency, with_latency

__all__ = ["SYSTEMS", "Setup", "build_runner", "reference_tasks"]

#: The systems every workload is run with, in report order.
SYSTEMS = ("react", "parallel-fc", "dagcall")
#: ParallelQA's five-branch questions take 11 tool calls and a Finish one by one.
REACT_MAX_STEPS = 16

Runner = Callable[[], Awaitable[RunResult]]


@dataclass(frozen=True)
class Setup:
    """How to run: a real model, or a simulated profile with a time scale."""

    model: Model | None = None  # a real model; None means simulated
    profile: Profile | None = None
    time_scale: float = 1.0
    latency: WebLatency = field(default_factory=WebLatency)
    tool_latency: bool = True
    examples: dict[str, str] | None = None  # system -> few-shot examples (real models)
    optimize: Optimizations = field(default_factory=Optimizations)  # dagcall's switches
    cache: PrefixCache | None = None  # the simulated endpoint's prompt cache, if it has one
    plan_cache: PlanCache | None = None  # dagcall's plan reuse, shared by a workload's runs
    check_answers: bool = True  # dagcall's answer checks (Compiler(check_answers=...))


def reference_tasks(question: BenchQuestion) -> list[TaskSpec]:
    """The reference plan's tasks, parsed by dagcall's own parser."""
    items, _ = parse_plan(question.plan_text(), {"search", "math"})
    return [item for item in items if isinstance(item, TaskSpec)]


def _tools(question: BenchQuestion, setup: Setup, math_model: Model) -> list[BaseTool]:
    search: BaseTool = search_tool(question.kb)
    if setup.tool_latency:
        search = with_latency(search, setup.latency, key=question.key, time_scale=setup.time_scale)
    return [search, math_tool(math_model)]


def _literal_call(task: TaskSpec, question: BenchQuestion) -> tuple[str, dict[str, Any]]:
    """A task as a model that saw its inputs would call it directly (math with the numbers)."""
    if task.tool == "math":
        return "math", {"problem": question.math[task.id]}
    query = task.kwargs.get("query", task.args[0] if task.args else "")
    return "search", {"query": query}


def react_steps(question: BenchQuestion, answer: str) -> list[str]:
    """ReAct's reference steps: the plan's tasks one by one, then Finish."""
    steps = []
    for task in reference_tasks(question):
        name, args = _literal_call(task, question)
        value = next(iter(args.values()))
        if name == "math":
            steps.append(f"Thought: Now I compute this.\nAction: math({json.dumps(value)})")
        else:
            steps.append(
                f"Thought: I need to look up {value}.\nAction: search({json.dumps(value)})"
            )
    steps.append(f"Thought: I now know the final answer.\nAction: Finish({answer})")
    return steps


def parallel_turns(question: BenchQuestion, answer: str) -> list[str]:
    """Parallel function calling's reference turns: the plan's tasks level by level."""
    level: dict[int, int] = {}
    tasks = reference_tasks(question)
    for task in tasks:
        level[task.id] = 1 + max((level[d] for d in task.deps), default=-1)
    turns = []
    for depth in range(max(level.values(), default=-1) + 1):
        calls = []
        for task in tasks:
            if level[task.id] == depth:
                name, args = _literal_call(task, question)
                calls.append({"name": name, "arguments": args})
        turns.append(json.dumps({"tool_calls": calls}, ensure_ascii=False))
    turns.append(json.dumps({"answer": answer}, ensure_ascii=False))
    return turns


def _nth(texts: Sequence[str], index: int) -> str:
    return texts[min(index, len(texts) - 1)]


def build_runner(
    system: str,
    question: BenchQuestion,
    setup: Setup,
    answer: str,
    *,
    named_answer: bool = False,
) -> Runner:
    """A coroutine factory that runs ``question`` with ``system``; ``answer`` is the reference
    answer the simulated model gives (unused with a real model); with ``named_answer`` the
    simulated planner names its plan's last task as the answer (when elision is on)."""

    def simulated(reply: Callable[[list[Message]], str]) -> Model:
        if setup.profile is None:
            raise ValueError("a simulated run needs a profile")
        return SimulatedModel(
            reply, setup.profile, time_scale=setup.time_scale, prefix_cache=setup.cache or False
        )

    examples = (setup.examples or {}).get(system, "")
    if system == "dagcall":
        if setup.model is not None:
            compiler = Compiler(
                setup.model,
                _tools(question, setup, setup.model),
                examples=examples or None,
                max_replans=1,
                optimize=setup.optimize,
                plan_cache=setup.plan_cache,
                check_answers=setup.check_answers,
            )
        else:
            plan = question.plan_text()
            if named_answer and setup.optimize.elide_joiner:
                plan = plan.replace(
                    "join()<END_OF_PLAN>", f'join("${len(question.plan)}")<END_OF_PLAN>'
                )
            finish = f"Thought: The results answer the question.\nAction: Finish({answer})"
            compiler = Compiler(
                planner_model=simulated(lambda _: plan),
                joiner_model=simulated(lambda _: finish),
                tools=_tools(question, setup, simulated(math_responder(question))),
                max_replans=0,
                examples=examples or None,
                optimize=setup.optimize,
                plan_cache=setup.plan_cache,
            )
        return lambda: compiler.arun(question.question)
    if system == "react":
        if setup.model is not None:
            model = setup.model
        else:
            steps = react_steps(question, answer)
            model = simulated(lambda m: _nth(steps, m[-1].content.count("\nObservation:")))
        react = ReActAgent(
            model, _tools(question, setup, model), examples=examples, max_steps=REACT_MAX_STEPS
        )
        return lambda: react.arun(question.question)
    if system == "parallel-fc":
        if setup.model is not None:
            model = setup.model
        else:
            turns = parallel_turns(question, answer)
            model = simulated(lambda m: _nth(turns, sum(x.role == "assistant" for x in m)))
        agent = ParallelFunctionCallingAgent(
            model, _tools(question, setup, model), examples=examples
        )
        return lambda: agent.arun(question.question)
    raise ValueError(f"unknown system {system!r}")
