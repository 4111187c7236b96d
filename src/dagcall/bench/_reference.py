"""Reference answers: the answer rules, the grounding checks and the oracle run.

The oracle executes a question's reference plan through the real compiler (knowledge-base
search, the real math tool whose model writes the reference expression) with no latency, and
derives the answer from the task outputs with the question's rule.  Its accuracy under the
paper's scorer says whether the shipped data reproduces the dataset's answers.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dagcall import Compiler, RunResult, TaskStatus, Tool, observation_text

from ..models import Message, ScriptedModel
from ..tools import math_tool
from ._data import BenchDataError, BenchQuestion, KnowledgeBase
from ._scoring import as_number, score

__all__ = [
    "OracleResult",
    "apply_rule",
    "format_number",
    "math_responder",
    "oracle",
    "search_tool",
    "ungrounded_numbers",
]

_FREE_CONSTANTS = {1.0, 2.0, 100.0, 1000.0, 1e6, 1e9}
_NUM_IN_TEXT = re.compile(r"\d[\d,]*(?:\.\d+)?")
_PROBLEM = re.compile(r"^Problem:\s*(.*)$", re.M)
_REF = re.compile(r"^\$\{?(\d+)\}?$")

SEARCH_DOC = (
    "Search an encyclopedia for an entity (a person, place, film, thing...) by its exact "
    "name and return the first paragraph of its article."
)


def search_tool(kb: KnowledgeBase, *, name: str = "search") -> Tool:
    """The benchmark's ``search(query)``: the knowledge base's paragraph for an entity."""

    async def search(query: str) -> str:
        return kb.lookup(query)

    search.__doc__ = SEARCH_DOC
    return Tool(search, name=name)


def format_number(value: float) -> str:
    """A number as an answer: up to 4 decimals, no trailing zeros, no exponent."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 1 or value == 0:
        text = f"{value:.4f}"
    else:
        text = f"{value:.4g}" if abs(value) >= 1e-4 else f"{value:.8f}"
    return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text


def _ref_id(ref: Any, where: str) -> int:
    match = _REF.match(str(ref).strip()) if isinstance(ref, str) else None
    if match is None:
        raise BenchDataError(f"{where}: {ref!r} is not a $N reference")
    return int(match.group(1))


def _output(outputs: Mapping[int, Any], ref: Any, where: str) -> Any:
    task = _ref_id(ref, where)
    if task not in outputs:
        raise BenchDataError(f"{where}: task {task} has no output")
    return outputs[task]


def _text_has_number(text: str, literal: str) -> bool:
    wanted = float(literal.replace(",", ""))
    return any(float(n.replace(",", "")) == wanted for n in _NUM_IN_TEXT.findall(text))


def _value(outputs: Mapping[int, Any], spec: Any, where: str) -> float:
    if isinstance(spec, list) and len(spec) == 2:
        text = observation_text(_output(outputs, spec[0], where))
        if not _text_has_number(text, str(spec[1])):
            raise BenchDataError(f"{where}: {spec[1]!r} does not occur in the output of {spec[0]}")
        return float(str(spec[1]).replace(",", ""))
    value = _output(outputs, spec, where)
    number = value if isinstance(value, int | float) else as_number(str(value))
    if number is None:
        raise BenchDataError(f"{where}: the output of {spec} is not a number: {value!r}")
    return float(number)


def _has_fact(outputs: Mapping[int, Any], pair: Any, where: str) -> str:
    if not (isinstance(pair, list) and len(pair) == 2):
        raise BenchDataError(f'{where}: a fact must be ["$N", "text"], not {pair!r}')
    text = observation_text(_output(outputs, pair[0], where)).casefold()
    if str(pair[1]).casefold() not in text:
        raise BenchDataError(f"{where}: {pair[1]!r} does not occur in the output of {pair[0]}")
    return str(pair[1])


def apply_rule(rule: Mapping[str, Any], outputs: Mapping[int, Any], where: str = "") -> str:
    """The answer ``rule`` gives for these task outputs (``{task id: output}``)."""
    op = rule.get("op")
    if op == "value":
        return format_number(_value(outputs, rule["ref"], where))
    if op in ("argmin", "argmax"):
        options = rule["options"]
        values = {label: _value(outputs, spec, where) for label, spec in options.items()}
        if len(values) < 2:
            raise BenchDataError(f"{where}: {op} needs two or more options")
        pick = min if op == "argmin" else max
        return str(pick(values, key=lambda label: values[label]))
    if op == "same":
        facts = [_has_fact(outputs, pair, where).casefold() for pair in rule["facts"]]
        return "yes" if len(set(facts)) == 1 else "no"
    if op == "choose":
        for pair in rule.get("evidence", []):
            _has_fact(outputs, pair, where)
        return str(rule["answer"])
    raise BenchDataError(f"{where}: unknown answer rule {op!r}")


def _numbers_in(expression: str) -> list[float]:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise BenchDataError(f"math expression {expression!r} does not parse") from exc
    return [
        float(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float)
    ]


def _same_4sf(a: float, b: float) -> bool:
    return a == b or (a != 0 and abs(a - b) <= 5e-4 * abs(a))


def ungrounded_numbers(expression: str, texts: list[str], numbers: list[float]) -> list[float]:
    """The number literals of ``expression`` found neither in ``texts`` (commas ignored) nor,
    to 4 significant figures, among ``numbers``; the constants 1, 2, 100, 1000, 10**6 and
    10**9 are free."""
    seen = {float(n.replace(",", "")) for t in texts for n in _NUM_IN_TEXT.findall(t)}
    return [
        n
        for n in _numbers_in(expression)
        if n not in _FREE_CONSTANTS and n not in seen and not any(_same_4sf(n, m) for m in numbers)
    ]


def math_responder(question: BenchQuestion) -> Any:
    """A model function that writes the reference expression for each of the question's math
    problems (found by the problem text in the prompt)."""
    by_problem: dict[str, str] = {}
    for task_id, expression in question.math.items():
        problem = _problem_of(question, task_id)
        by_problem[" ".join(problem.split())] = expression

    def reply(messages: list[Message]) -> str:
        found = _PROBLEM.findall(messages[-1].content)
        problem = " ".join(found[-1].split()) if found else ""
        expression = by_problem.get(problem)
        if expression is None:
            return "Expression: (no reference expression for this problem)"
        return f"Expression: {expression}"

    return reply


def _call_of(question: BenchQuestion, task_id: int) -> ast.Call:
    try:
        line = question.plan[task_id - 1]
        node = ast.parse(line.strip(), mode="eval").body
    except (IndexError, SyntaxError) as exc:
        raise BenchDataError(f"{question.key}: task {task_id} is not a call") from exc
    if not isinstance(node, ast.Call):
        raise BenchDataError(f"{question.key}: task {task_id} is not a call")
    return node


def _problem_of(question: BenchQuestion, task_id: int) -> str:
    call = _call_of(question, task_id)
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    problem = kwargs.get("problem", args[0] if args else None)
    if not isinstance(problem, str):
        raise BenchDataError(f"{question.key}: math task {task_id} has no problem text")
    return problem


@dataclass
class OracleResult:
    """What the reference plan of one question gives."""

    question: BenchQuestion
    answer: str = ""
    correct: bool = False
    problems: list[str] = field(default_factory=list)
    run: RunResult | None = None


def tools_for(question: BenchQuestion, math_model: Any) -> list[Tool]:
    """The workload's tools for one question: search, and math where the plan needs it."""
    return [search_tool(question.kb), math_tool(math_model)]


async def oracle(question: BenchQuestion) -> OracleResult:
    """Run the question's reference plan with no latency and check what it gives."""
    out = OracleResult(question)
    planner = ScriptedModel([question.plan_text()], name="reference-planner")
    joiner = ScriptedModel(["Thought: done.\nAction: Finish(reference)"], name="reference-joiner")
    math_model = ScriptedModel(math_responder(question), name="reference-math")
    compiler = Compiler(
        planner_model=planner,
        joiner_model=joiner,
        tools=tools_for(question, math_model),
        max_replans=0,
        tool_timeout=10,
        check_answers=False,  # the reference's scripted joiner, not a model to check
    )
    try:
        run = await compiler.arun(question.question)
    except Exception as exc:
        out.problems.append(f"the reference plan did not run: {exc}")
        return out
    out.run = run
    outputs: dict[int, Any] = {}
    for task in run.tasks:
        if task.status is TaskStatus.DONE:
            outputs[task.id] = task.output
        else:
            out.problems.append(f"task {task.id} {task.call}: {task.observation}")
    if len(run.tasks) != len(question.plan):
        out.problems.append(f"{len(run.tasks)} tasks ran, the plan has {len(question.plan)}")
    by_id = {t.id: t for t in run.tasks}
    for task in run.tasks:
        if task.tool == "search" and str(task.output).startswith("Could not find"):
            out.problems.append(f"task {task.id}: no article for {task.call}")
        if task.tool != "math" or task.id not in outputs:
            continue
        expression = question.math.get(task.id)
        if expression is None:
            out.problems.append(f"math task {task.id} has no reference expression")
            continue
        texts = [question.question, _problem_of(question, task.id)]
        numbers: list[float] = []
        for dep in sorted(task.deps):
            value = by_id[dep].output if dep in by_id else None
            if isinstance(value, int | float):
                numbers.append(float(value))
            else:
                texts.append(observation_text(value))
        missing = ungrounded_numbers(expression, texts, numbers)
        if missing:
            out.problems.append(
                f"math task {task.id}: {missing} in {expression!r} come from neither the "
                "problem, the question nor the context"
            )
    try:
        out.answer = apply_rule(question.rule, outputs, question.key)
    except BenchDataError as exc:
        out.problems.append(exc.message)
        return out
    out.correct = score(out.answer, question.gold)
    if not out.correct and not question.exception:
        out.problems.append(f"gives {out.answer!r}, the dataset says {question.gold!r}")
    return out
