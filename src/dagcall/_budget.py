"""A run's budgets, in one object the run loop checks: tokens (counted while models stream)
and task lines per plan.

Nothing here raises from inside someone else's callback: recording a call only notes that the
budget is spent (:attr:`Budget.over`, :attr:`Budget.spent`), and the loop raises it at its
own checks (:meth:`Budget.check`), so a limit can never replace an error or a cancellation that
is already unwinding.  The one exception is :class:`Meter`, which the planner and joiner call
from their own streaming loops to stop a model that streams past the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ._errors import BudgetError
from ._result import LLMCall
from ._tokens import estimate_tokens
from .models import Message, TokenUsage

__all__ = ["Budget", "Meter"]


class Budget:
    """``max_tokens`` (LLM tokens in and out for a run, tools' own calls included) and
    ``max_tasks`` (task lines of one plan, valid or not); ``None`` lifts either."""

    def __init__(self, *, max_tokens: int | None, max_tasks: int | None) -> None:
        self.max_tokens = max_tokens
        self.max_tasks = max_tasks
        self.tokens_used = 0
        self.over: BudgetError | None = None
        self.spent = asyncio.Event()  # set once the token budget is spent
        self.plan_lines = 0  # task lines of the current plan

    # -- tokens ----------------------------------------------------------------------------
    def add(self, call: LLMCall) -> None:
        """Count a finished model call; never raises (see the module docstring)."""
        self.tokens_used += call.input_tokens + call.output_tokens
        limit = self.max_tokens
        if limit is not None and self.tokens_used > limit and self.over is None:
            self.over = BudgetError(
                f"the run used {self.tokens_used:,} LLM tokens, over max_tokens={limit:,} "
                f"(after a {call.role} call); raise max_tokens or simplify the question",
                limit="max_tokens",
                value=limit,
            )
            self.spent.set()

    def tokens_left(self) -> int | None:
        """Tokens the run may still spend, or ``None`` without a limit."""
        return None if self.max_tokens is None else self.max_tokens - self.tokens_used

    def check(self) -> None:
        """Raise the BudgetError of a spent budget (the run loop's check)."""
        if self.over is not None:
            raise self.over

    def meter(self, messages: Sequence[Message], role: str) -> Meter:
        """A counter for one streaming call (see :class:`Meter`)."""
        return Meter(self, messages, role)

    # -- task lines ------------------------------------------------------------------------
    def new_plan(self) -> None:
        self.plan_lines = 0

    def count_line(self, what: str) -> None:
        """Count one task line of the current plan (``what`` names it for the message)."""
        limit = self.max_tasks
        if limit is not None and self.plan_lines >= limit:
            raise BudgetError(
                f"the plan has more than max_tasks={limit} task lines, valid or not "
                f"({what} is one too many); raise max_tasks or ask a narrower question",
                limit="max_tasks",
                value=limit,
            )
        self.plan_lines += 1


class Meter:
    """Counts one streaming call's output tokens as they arrive, against ``max_tokens``: it
    raises BudgetError the moment the run's tokens so far, this prompt's estimated tokens and
    the output streamed so far pass the limit, so a model that streams for ever is stopped
    within one chunk of it."""

    def __init__(self, budget: Budget, messages: Sequence[Message], role: str) -> None:
        self.budget = budget
        self.role = role
        self.limit = budget.max_tokens
        self.prompt = 0 if self.limit is None else estimate_tokens(m.content for m in messages)
        self.streamed = 0  # output tokens so far (chunk by chunk), counted only under a limit

    def __call__(self, text: str) -> None:
        if self.limit is None:
            return
        self.budget.check()  # a tool's own model call may have spent it meanwhile
        self.streamed += estimate_tokens(text)
        used = self.budget.tokens_used + self.prompt + self.streamed
        if used > self.limit:
            raise BudgetError(
                f"the run reached {used:,} LLM tokens, over max_tokens={self.limit:,}, while "
                f"the {self.role} was still streaming (it was stopped); raise max_tokens or "
                "simplify the question",
                limit="max_tokens",
                value=self.limit,
            )

    def usage(self, reported: TokenUsage | None) -> TokenUsage | None:
        """The provider's usage, else (under a limit) the metered estimate."""
        if reported is not None or self.limit is None:
            return reported
        return TokenUsage(self.prompt, self.streamed, estimated=True)
