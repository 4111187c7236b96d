"""The planner: the prompt, the plan grammar, the model's stream, fed to the plan parser.

It yields each task (and each plan error) the moment its line is complete, while the model is
still writing, so the task fetching unit can start it at once (the paper's streamed planner).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from ._budget import Meter
from ._errors import BudgetError, UsageError
from ._exemplars import ExampleBank
from ._grammar import plan_grammar
from ._plan import END_OF_PLAN, PlanItem, PlanParser
from ._prompts import conversation_messages, planner_messages
from ._result import LLMCall, Round, TaskRecord
from ._streams import Clock, ModelCall, model_error
from ._tools import BaseTool
from .models import Message, Model

__all__ = ["Planner"]


class Planner:
    """Writes plans with ``model`` over ``tools``.

    ``examples``: ``None`` (the default) or an :class:`~dagcall.ExampleBank` chooses the
    examples per question, falling back on the built-in example when it cannot cast the
    tools; ``"builtin"`` always uses the built-in one; any other text replaces it (``""``
    for none); ``constrained``
    decodes plans under a GBNF grammar of the plan language (models with
    ``supports_grammar`` only); ``idle_timeout`` gives up a silent stream; ``shared_prefix``
    lays out the planner's, joiner's and replanner's prompts as one conversation
    (:func:`~dagcall._prompts.conversation_messages`), so each continues the last;
    ``join_answer`` teaches the planner to end with ``join("$M")`` when task M's result is
    the answer.
    """

    def __init__(
        self,
        model: Model,
        tools: Mapping[str, BaseTool],
        *,
        examples: str | ExampleBank | None,
        constrained: bool,
        idle_timeout: float | None,
        shared_prefix: bool = False,
        join_answer: bool = False,
    ) -> None:
        self.model = model
        self.shared_prefix = shared_prefix
        self.join_answer = join_answer
        self.tools = tools
        if examples is None:  # the default: worked patterns chosen per question
            examples = ExampleBank()
        self.bank = examples if isinstance(examples, ExampleBank) else None
        fixed = None if isinstance(examples, ExampleBank) else examples
        self.examples = None if fixed == "builtin" else fixed
        self.idle_timeout = idle_timeout
        self.constrained = constrained
        self._grammar: tuple[tuple[BaseTool, ...], str] | None = None

    @property
    def grammar(self) -> str | None:
        """The plan grammar of the tools there are now (a toolset's join when it opens)."""
        if not self.constrained or not self.tools:
            return None
        key = tuple(self.tools.values())  # the tool objects themselves, kept alive here
        if self._grammar is None or self._grammar[0] != key:
            self._grammar = (key, plan_grammar(list(self.tools.values())))
        return self._grammar[1]

    def examples_for(self, question: str) -> str | None:
        """The planner examples for ``question``: the bank's choice for it, or the fixed ones
        (``None``: the built-in example)."""
        if self.bank is not None:
            return self.bank.examples(
                question, list(self.tools.values()), join_answer=self.join_answer
            )
        return self.examples

    def messages(
        self,
        question: str,
        *,
        rounds: Sequence[Round] = (),
        records: dict[int, TaskRecord] | None = None,
        reason: str = "",
        examples: str | None = None,
    ) -> list[Message]:
        """The messages for a first plan, or for a replan after ``rounds``; ``examples``
        replace the planner's own for this call (a plan cache's example)."""
        records = records or {}
        chosen = self.examples_for(question) if examples is None else examples
        if self.shared_prefix:
            return conversation_messages(
                question,
                list(self.tools.values()),
                examples=chosen,
                rounds=rounds,
                records=records,
                ask="plan",
                join_answer=self.join_answer,
            )
        return planner_messages(
            question,
            list(self.tools.values()),
            examples=chosen,
            rounds=rounds,
            records=records,
            reason=reason,
            first_id=max(records, default=0) + 1,
            join_answer=self.join_answer,
        )

    async def plan(
        self,
        messages: Sequence[Message],
        rnd: Round,
        *,
        prior_ids: Iterable[int],
        clock: Clock,
        meter: Meter,
        on_text: Callable[[str], None],
        record: Callable[[LLMCall], None],
    ) -> AsyncGenerator[PlanItem, None]:
        """Stream a plan for round ``rnd``, yielding its tasks and plan errors as they complete.

        Fills ``rnd.plan`` and ``rnd.thought``; hands the call's usage to ``record`` however
        it ends.  A model failure after some tasks were written is added to ``rnd.errors``
        (those tasks still run and the joiner decides); before any, it is raised.
        """
        parser = PlanParser(self.tools, prior_ids=prior_ids)
        call = ModelCall(
            "planner",
            self.model,
            messages,
            round_index=rnd.index,
            clock=clock,
            meter=meter,
            idle_timeout=self.idle_timeout,
        )
        options: dict[str, Any] = {"stop": [END_OF_PLAN]}
        line_times: list[float] = []
        partial: float | None = None  # when text after the last newline arrived
        if self.grammar is not None:  # only grammar-capable models take the keyword
            options["grammar"] = self.grammar
        try:
            try:
                async with aclosing(call.deltas(**options)) as deltas:
                    async for delta in deltas:
                        if parser.finished:
                            if delta.strip():
                                break  # the plan is over; don't wait for the model's chatter
                            continue
                        call.took(delta)
                        arrived = clock()
                        line_times.extend([arrived] * delta.count("\n"))
                        partial = None if delta.endswith("\n") else arrived
                        on_text(delta)
                        for item in parser.feed(delta):
                            yield item
                for item in parser.close():
                    yield item
            except (UsageError, BudgetError):
                raise  # the configuration or a limit, not the model, ended the plan
            except Exception as exc:
                error = model_error(exc, self.model, "planner")
                for item in parser.close(complete=False):
                    yield item
                if not rnd.task_ids:  # the loop has taken every item yielded so far
                    raise error  # noqa: B904 - cause already set; `from exc` may self-cite
                rnd.errors.append(error)  # the tasks it did write still run; the joiner decides
        finally:
            if partial is not None:
                line_times.append(partial)  # a last line without a newline
            rnd.plan = parser.text
            rnd.line_times = line_times
            rnd.answer_task = parser.join_target
            rnd.thought = parser.trailing_thought
            record(call.record())
