"""The run scaffold that dagcall's compiler and its baselines share, for agent loops of your
own: subclass :class:`RunScope`, write its ``body`` (call models with ``self.call_model``,
submit tasks to ``self.scheduler``, record other calls with ``self.add_call``, send events
with ``self.emit``), and
run it with :func:`drive` under a time budget (or subclass :class:`Agent`, whose ``arun`` and
``run`` do that).  Your loop then has the compiler's timeouts,
token and task budgets, events, cancellation and partial results.
"""

from ._run import Agent, EventHandler, RunLimits, RunScope, drive

__all__ = ["Agent", "EventHandler", "RunLimits", "RunScope", "drive"]
