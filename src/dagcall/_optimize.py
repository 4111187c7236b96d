"""The compiler's optimisations, and the switch for each: :class:`Optimizations`.

``Compiler(optimize=...)`` takes an :class:`Optimizations` (or ``True`` for the defaults,
``False`` for none).  Each optimisation shows in the run's trace:

* ``field_access`` -- ``$N.field``, ``$N["key"]``, ``$N[0]`` select inside a typed result (see
  :mod:`dagcall.plan`).  Off, a reference with a selection reads as before the plan language
  had it: the whole result's text followed by the selection as text.
* ``dedupe`` -- common calls run once: a task calling a tool with the same validated
  arguments (compared as canonical JSON) as an earlier task of the run (this round or an
  earlier one; also while that one is still running) takes its outcome instead of calling
  again.  Its :class:`~dagcall.TaskRecord` has ``reused_from`` = that task's id.  A failure
  is reused only within the round it happened in: a replan may retry the call.  Which tools:
  ``"pure"`` (or ``True``; the default) every tool without side effects, except those marked
  ``cacheable=False`` (a clock, a poll, a random draw: every call must happen);
  ``"cacheable"`` only those marked ``cacheable=True``; ``"off"`` (or ``False``) none.  Tools
  with ``side_effects=True`` always run.
* ``critical_path`` -- with ``max_concurrency`` set, when more tasks are ready than there are
  free slots, the next slot goes to the ready task with the longest remaining path to the end
  of the plan (the plan known so far), by per-tool latency estimates learned from the
  compiler's earlier calls (:class:`LatencyEstimates`), ties to the lower task id.  Each task's
  ``ready_at`` / ``started_at`` show the order.
* ``elide_joiner`` -- the planner may end a plan with ``join("$M")``: the answer is task M's
  result as it stands.  When M and every other task of the round succeeded, the plan had no
  problems, the question asks for no choice or yes or no, and M's result is a number or a
  short text, the run finishes with that result without the joiner's LLM call (the round's
  ``joiner_elided``; ``answer_task`` is M).  When anything failed, the joiner runs as usual.
  Off, the planner is not told about ``join("$M")`` and the joiner always runs.
* ``shared_prefix`` -- the planner's, joiner's and replanner's prompts of one question are
  one conversation (one system prompt, the question, each plan as written, its results), so
  each call's prompt continues the last one's and a prompt cache (llama.cpp's context, a
  provider's cache) serves all but the new part.  Off by default: measured in the benchmark
  docs, it changes the joiner's prompt.
* ``streaming`` -- dispatch each task as soon as its line has streamed (the paper's design);
  off, the tasks start only when the whole plan has arrived (the paper's ablation).

The call cache across runs is separate: ``Compiler(call_cache=MemoryCallCache())`` or
``SQLiteCallCache(path)`` (see :mod:`dagcall._cache`), for tools marked ``cacheable=True``;
a task answered from it has ``cache="hit"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._errors import UsageError

__all__ = [
    "DEFAULT_LATENCY",
    "DedupeScope",
    "LatencyEstimates",
    "Optimizations",
    "optimizations",
]

#: Which tools' equal calls share one outcome (see :class:`Optimizations`).
DedupeScope: TypeAlias = Literal["off", "cacheable", "pure"]

#: The latency estimate of a tool that has not been timed yet, in seconds.
DEFAULT_LATENCY = 1.0


@dataclass(frozen=True, slots=True)
class Optimizations:
    """Which of the compiler's optimisations are on (all are, by default: each is safe)."""

    field_access: bool = True
    dedupe: DedupeScope | bool = "pure"  # True is read as "pure", False as "off"
    critical_path: bool = True
    elide_joiner: bool = True
    shared_prefix: bool = False
    streaming: bool = True

    @classmethod
    def none(cls) -> Optimizations:
        """Every optimisation off: the plain LLMCompiler of the paper (which streams)."""
        return cls(
            field_access=False,
            dedupe="off",
            critical_path=False,
            elide_joiner=False,
            shared_prefix=False,
        )

    def __post_init__(self) -> None:
        for name in ("field_access", "critical_path", "elide_joiner", "shared_prefix", "streaming"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"Optimizations({name}=...) must be True or False")
        scope: object = self.dedupe
        if scope is True:
            object.__setattr__(self, "dedupe", "pure")
        elif scope is False:
            object.__setattr__(self, "dedupe", "off")
        elif scope not in ("off", "cacheable", "pure"):
            raise UsageError(
                'Optimizations(dedupe=...) must be "cacheable", "pure", "off", True or False'
            )


def optimizations(value: Optimizations | bool | None) -> Optimizations:
    """``Compiler(optimize=...)``'s value as an :class:`Optimizations`."""
    if value is None or value is True:
        return Optimizations()
    if value is False:
        return Optimizations.none()
    if isinstance(value, Optimizations):
        return value
    raise UsageError(
        f"optimize must be True, False or an Optimizations, not {type(value).__name__}"
    )


class LatencyEstimates:
    """Per-tool latency estimates: the running mean of the observed call durations.

    One lives as long as its :class:`~dagcall.Compiler`, so later runs schedule by what earlier
    ones measured; a tool never timed is estimated at ``default`` seconds.
    """

    def __init__(self, default: float = DEFAULT_LATENCY) -> None:
        if not (isinstance(default, int | float) and math.isfinite(default) and default > 0):
            raise UsageError("a default latency must be a positive number of seconds")
        self.default = float(default)
        self._sums: dict[str, tuple[float, int]] = {}

    def estimate(self, tool: str) -> float:
        """The estimated duration of one call of ``tool``, in seconds."""
        total, count = self._sums.get(tool, (0.0, 0))
        return total / count if count else self.default

    def observe(self, tool: str, seconds: float) -> None:
        """Learn from one call of ``tool`` that took ``seconds``."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        total, count = self._sums.get(tool, (0.0, 0))
        self._sums[tool] = (total + seconds, count + 1)

    def observed(self, tool: str) -> int:
        """How many calls of ``tool`` the estimate is made from."""
        return self._sums.get(tool, (0.0, 0))[1]
