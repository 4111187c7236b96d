"""Game of 24 with a Tree-of-Thoughts search, run call by call or compiled by dagcall.

Tree-of-Thoughts (Yao et al., 2023) solves Game of 24 by breadth-first search: at each of three
depths an LLM *proposes* next steps for every kept state and *evaluates* every proposal
(sure / likely / impossible); the best ``breadth`` states are kept.  The original runs those
calls one after another.  dagcall's planner writes each depth as one plan (all proposals in
parallel, then the evaluations of each proposal as soon as it is in) and replans for the next
depth.  Puzzles are generated and checked here; with a simulated model the proposer and the
evaluator are exact (a solver), so only the orchestration differs.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import operator
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from dagcall import (
    Compiler,
    Optimizations,
    Round,
    RunResult,
    StopReason,
    TaskSpec,
    Tool,
    ToolArgumentError,
    call_model,
)
from dagcall.models import Message, Model
from dagcall.scaffold import RunLimits, RunScope, drive
from dagcall.tools import evaluate as evaluate_expression

__all__ = [
    "Game24Session",
    "generate_puzzles",
    "is_solution",
    "solve",
]

BREADTH = 5
DEPTH = 3
_VALUES = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}
_STEP = re.compile(
    r"^\s*(-?[\d.]+)\s*([-+*/])\s*(-?[\d.]+)\s*=\s*(-?[\d.]+)\s*(?:\(left:\s*([^)]*)\))?", re.M
)

PROPOSE_PROMPT = """Use the numbers to take one step toward 24: combine two of them with + - * /.
List every useful next step, one per line, as "a op b = c (left: remaining numbers)".

Input: 2 8 8 14
Possible next steps:
2 + 8 = 10 (left: 8 10 14)
8 / 2 = 4 (left: 4 8 14)
14 + 2 = 16 (left: 8 8 16)
2 * 8 = 16 (left: 8 14 16)
8 - 2 = 6 (left: 6 8 14)
14 - 8 = 6 (left: 2 6 8)
14 / 2 = 7 (left: 7 8 8)
14 - 2 = 12 (left: 8 8 12)

Input: {numbers}
Possible next steps:
"""

VALUE_PROMPT = """Evaluate if the given numbers can reach 24 with + - * /
(sure / likely / impossible).

10 14
10 + 14 = 24
sure

11 12
11 + 12 = 23, 12 - 11 = 1, 11 * 12 = 132, 11 / 12 = 0.91
impossible

4 4 10
4 * 10 - 4 * 4 = 24
sure

5 7 8
5 + 7 + 8 = 20, (8 - 5) * 7 = 21
likely

{numbers}
"""


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.4g}"


def _solvable(values: Sequence[Fraction]) -> bool:
    return solve_values(list(values)) is not None


def solve_values(values: list[Fraction], exprs: list[str] | None = None) -> str | None:
    """An expression over ``values`` (all used once) that makes 24, or ``None``."""
    exprs = exprs or [_fmt(v) for v in values]
    if len(values) == 1:
        return exprs[0] if values[0] == 24 else None
    for i, j in itertools.permutations(range(len(values)), 2):
        rest = [k for k in range(len(values)) if k not in (i, j)]
        a, b = values[i], values[j]
        options = [(a + b, "+"), (a - b, "-"), (a * b, "*")]
        if b != 0:
            options.append((a / b, "/"))
        for value, op in options:
            found = solve_values(
                [values[k] for k in rest] + [value],
                [exprs[k] for k in rest] + [f"({exprs[i]} {op} {exprs[j]})"],
            )
            if found is not None:
                return found
    return None


def solve(numbers: Sequence[int]) -> str | None:
    """An expression that makes 24 from ``numbers``, or ``None``."""
    return solve_values([Fraction(n) for n in numbers])


def is_solution(expression: str, numbers: Sequence[int]) -> bool:
    """Whether ``expression`` uses exactly ``numbers`` once each and equals 24."""
    used = sorted(int(n) for n in re.findall(r"\d+", expression))
    if used != sorted(numbers):
        return False
    try:
        return abs(float(evaluate_expression(expression)) - 24) < 1e-6
    except Exception:
        return False


def generate_puzzles(count: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``count`` distinct solvable puzzles of four numbers from 1 to 13, seeded."""
    rng = random.Random(seed)  # noqa: S311 - reproducible puzzles, not secrets
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []
    while len(out) < count:
        puzzle = tuple(sorted(rng.randint(1, 13) for _ in range(4)))
        if puzzle not in seen and solve(puzzle) is not None:
            seen.add(puzzle)
            out.append(puzzle)
    return out


# -- states ------------------------------------------------------------------------------
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _exact(node: ast.AST) -> Fraction:
    """The exact value of a state's expression (numbers and + - * / only)."""
    if isinstance(node, ast.Expression):
        return _exact(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Fraction(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_exact(node.left), _exact(node.right))  # type: ignore[no-any-return]
    raise ValueError(f"not a Game of 24 expression: {ast.dump(node)}")


def _values_of(state: str) -> list[Fraction]:
    try:
        return [_exact(ast.parse(e, mode="eval")) for e in state.split(", ") if e.strip()]
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        raise ToolArgumentError(f"{state!r} is not a Game of 24 state ({exc})") from None


def _numbers(state: str) -> str:
    return " ".join(_fmt(v) for v in _values_of(state))


def _apply_step(state: str, line: str) -> str | None:
    """The state after a proposed step "a op b = c", or ``None`` if it does not apply."""
    match = _STEP.match(line)
    if not match:
        return None
    exprs = state.split(", ")
    values = _values_of(state)
    a, op, b = Fraction(match.group(1)), match.group(2), Fraction(match.group(3))
    try:
        i = values.index(a)
        j = next(k for k, v in enumerate(values) if v == b and k != i)
    except (ValueError, StopIteration):
        return None
    rest = [exprs[k] for k in range(len(exprs)) if k not in (i, j)]
    return ", ".join([*rest, f"({exprs[i]} {op} {exprs[j]})"])


def exact_proposals(numbers: str, limit: int = 8, seed: int = 0) -> str:
    """A perfect proposer's reply: steps that keep the puzzle solvable first."""
    values = [Fraction(n) for n in numbers.split()]
    good: list[str] = []
    bad: list[str] = []
    seen: set[tuple[Fraction, ...]] = set()
    for i, j in itertools.permutations(range(len(values)), 2):
        a, b = values[i], values[j]
        rest = [values[k] for k in range(len(values)) if k not in (i, j)]
        for value, op in ((a + b, "+"), (a - b, "-"), (a * b, "*"), (a / b if b else None, "/")):
            if value is None or value < 0 or (op in "+*" and i > j):
                continue
            left = tuple(sorted([*rest, value]))
            if left in seen:
                continue
            seen.add(left)
            line = f"{_fmt(a)} {op} {_fmt(b)} = {_fmt(value)} (left: {' '.join(map(_fmt, left))})"
            (good if _solvable(list(left)) else bad).append(line)
    rng = random.Random(f"{seed}:{numbers}")  # noqa: S311 - a reproducible order
    rng.shuffle(good)
    rng.shuffle(bad)
    return "\n".join((good + bad)[:limit])


def exact_value(numbers: str) -> str:
    values = [Fraction(n) for n in numbers.split()]
    return "sure" if _solvable(values) else "impossible"


def simulated_reply(messages: list[Message]) -> str:
    """What an exact proposer / evaluator says to one of the prompts above."""
    prompt = messages[-1].content
    if prompt.rstrip().endswith("Possible next steps:"):
        numbers = prompt.rstrip().splitlines()[-2].removeprefix("Input:").strip()
        return exact_proposals(numbers)
    return exact_value(prompt.rstrip().splitlines()[-1])


# -- tools -------------------------------------------------------------------------------
@dataclass
class Game24Session:
    """The tools and search state of one puzzle."""

    puzzle: tuple[int, ...]
    model: Model
    parallel: bool = True
    evaluations: list[list[tuple[str, float]]] = field(default_factory=list)
    next_id: int = 1

    @property
    def start(self) -> str:
        return ", ".join(str(n) for n in self.puzzle)

    def tools(self) -> list[Tool]:
        session = self

        async def propose(state: str) -> list[str]:
            prompt = PROPOSE_PROMPT.format(numbers=_numbers(state))
            reply = await call_model(session.model, [Message("user", prompt)], max_tokens=300)
            steps = (_apply_step(state, line) for line in reply.text.splitlines())
            return [s for s in steps if s is not None]

        async def evaluate(states: list[str]) -> list[dict[str, Any]]:
            async def one(state: str) -> dict[str, Any]:
                prompt = VALUE_PROMPT.format(numbers=_numbers(state))
                reply = await call_model(session.model, [Message("user", prompt)], max_tokens=80)
                words = reply.text.strip().lower().split()
                verdict = words[-1] if words and words[-1] in _VALUES else "impossible"
                return {"state": state, "value": verdict}

            if session.parallel:
                scored = list(await asyncio.gather(*(one(s) for s in states)))
            else:
                scored = [await one(s) for s in states]
            session.evaluations[-1].extend((s["state"], _VALUES[s["value"]]) for s in scored)
            return scored

        propose.__doc__ = "Propose next steps for a Game of 24 state; returns the new states."
        evaluate.__doc__ = "Judge whether each state can still reach 24 (sure/likely/impossible)."
        return [Tool(propose), Tool(evaluate)]

    def frontier(self) -> list[str]:
        """The states to expand next: the start, then the best of the last depth."""
        if not self.evaluations:
            return [self.start]
        ranked = sorted(self.evaluations[-1], key=lambda pair: -pair[1])
        unique = list(dict.fromkeys(state for state, _ in ranked))
        return unique[:BREADTH]

    def answer(self) -> str:
        for state in self.frontier():
            exprs = state.split(", ")
            if len(exprs) == 1 and _values_of(state) == [24]:
                return exprs[0]
        return "no solution found"

    # -- dagcall ------------------------------------------------------------------------
    def plan(self) -> str:
        """The planner's plan for the next depth."""
        frontier = self.frontier()
        self.evaluations.append([])
        first = self.next_id
        lines = [f'{first + i}. propose("{state}")' for i, state in enumerate(frontier)]
        base = first + len(frontier)
        lines += [f'{base + i}. evaluate("${first + i}")' for i in range(len(frontier))]
        self.next_id = base + len(frontier)
        return "\n".join([*lines, "join()<END_OF_PLAN>"])

    def join(self) -> str:
        if len(self.evaluations) < DEPTH:
            kept = "; ".join(self.frontier())
            return f"Thought: keep the best states: {kept}.\nAction: Replan(expand the kept states)"
        return f"Thought: this reaches 24.\nAction: Finish({self.answer()})"


async def run_tot_sequential(session: Game24Session) -> RunResult:
    """The original Tree-of-Thoughts: every propose and evaluate call one after another."""
    return await drive(_SequentialTreeOfThoughts(session), None)


class _SequentialTreeOfThoughts(RunScope):
    def __init__(self, session: Game24Session) -> None:
        tools = {t.name: t for t in session.tools()}
        super().__init__(f"Game of 24: {session.start}", tools, RunLimits(), None)
        self.session = session

    async def body(self) -> None:
        session = self.session
        for depth in range(DEPTH):
            rnd = Round(index=depth)
            self.round = depth
            self.result.rounds.append(rnd)
            frontier = session.frontier()
            session.evaluations.append([])
            for state in frontier:
                proposals = await self.run(rnd, "propose", {"state": state}, f'propose("{state}")')
                proposals = proposals or []
                count = f"evaluate({len(proposals)} states)"
                await self.run(rnd, "evaluate", {"states": proposals}, count)
        self.result.answer = session.answer()
        self.result.stop_reason = StopReason.FINISH

    async def run(self, rnd: Round, tool: str, kwargs: dict[str, Any], call: str) -> Any:
        """Run one task to its end, alone; its output (``None`` if it failed)."""
        task_id = len(self.scheduler.records) + 1
        spec = TaskSpec(task_id, tool, (), kwargs, frozenset(), call, raw_kwargs=kwargs)
        self.scheduler.submit(spec, rnd.index)
        rnd.task_ids.append(task_id)
        await self.wait_for_tasks()
        return self.scheduler.records[task_id].output


def dagcall_compiler(
    session: Game24Session,
    planner: Model,
    joiner: Model,
    optimize: Optimizations | bool = True,
) -> Compiler:
    return Compiler(
        planner_model=planner,
        joiner_model=joiner,
        tools=session.tools(),
        max_replans=DEPTH - 1,
        max_tasks=4 * BREADTH,
        optimize=optimize,
    )
