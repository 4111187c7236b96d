"""Pictures of a run: its timeline as a Gantt chart (PNG, through matplotlib: the ``plot``
extra) and its task graph as Mermaid text.

Each takes a :class:`~dagcall.RunResult` (a stored run is one) or the data of one, which is
read however damaged (see :func:`dagcall.store.read_run`).
"""

from ._graph import mermaid
from ._plot import bar_count, build_timeline, draw_timeline, plot_timeline, require_matplotlib

__all__ = [
    "bar_count",
    "build_timeline",
    "draw_timeline",
    "mermaid",
    "plot_timeline",
    "require_matplotlib",
]
