"""The run scaffold that dagcall's compiler and its baselines share, for agent loops of your
own: subclass :class:`RunScope`, write its ``body`` (call models, submit tasks to
``self.scheduler``, record calls with ``self.add_call``, send events with ``self.emit``), and
run it with :func:`drive` under a time budget.  Your loop then has the compiler's timeouts,
token and task budgets, events, cancellation and partial results.
"""

from ._run import EventHandler, RunLimits, RunScope, drive

__all__ = ["EventHandler", "RunLimits", "RunScope", "drive"]
