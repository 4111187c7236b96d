"""A run's timeline as a Gantt chart: LLM calls and tasks on one time axis."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["build_timeline", "draw_timeline", "plot_timeline"]

_STATUS_COLOUR = {
    "done": "#3a923a",
    "failed": "#d62728",
    "skipped": "#9467bd",
    "cancelled": "#7f7f7f",
    "running": "#ff7f0e",
    "waiting": "#c7c7c7",
}
_LLM_COLOUR = {"planner": "#1f77b4", "joiner": "#17becf", "tool": "#bcbd22"}


def _label(text: str, width: int = 42) -> str:
    """Shortened, with ``$`` escaped: matplotlib reads ``$1 - $2`` as math text otherwise."""
    text = " ".join(text.split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def build_timeline(run: Mapping[str, Any], *, title: str | None = None) -> tuple[Any, int]:
    """The figure and its bar count: one bar per LLM call and one per task that started.

    A planner or joiner bar is drawn light up to its first token and solid after it; a task
    that waited between becoming ready and starting (a concurrency limit) gets a hatched bar
    for that wait, which is not counted.
    """
    from matplotlib.figure import Figure

    bars = _bar_count(run)
    fig = Figure(figsize=(10, 0.45 * max(bars, 2) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    draw_timeline(ax, run, title=title or _label(run["question"], 90))
    return fig, bars


def _bar_count(run: Mapping[str, Any]) -> int:
    return len(run["usage"]) + sum(1 for t in run["tasks"] if t["started_at"] is not None)


def draw_timeline(
    ax: Any, run: Mapping[str, Any], *, title: str = "", scale: float = 1.0, legend: bool = True
) -> int:
    """Draw the run's bars on a matplotlib axis; times are divided by ``scale``."""
    from matplotlib.patches import Patch

    Segment = tuple[float, float, dict[str, Any]]
    rows: list[tuple[str, list[Segment]]] = []
    wall = run["wall_time"] / scale
    for call in run["usage"]:
        start, end = call["started_at"] / scale, call["ended_at"] / scale
        colour = _LLM_COLOUR.get(call["role"], "#8c564b")
        name = f"{call['role']} (round {call['round'] + 1})"
        if call["role"] == "tool" and call.get("task_id") is not None:
            name = f"LLM of task {call['task_id']}"
        ttft = call.get("time_to_first_token")
        segments: list[Segment] = []
        if ttft:
            ttft /= scale
            segments.append((start, ttft, {"color": colour, "alpha": 0.35}))
            segments.append((start + ttft, max(end - start - ttft, 0.0), {"color": colour}))
        else:
            segments.append((start, max(end - start, 0.0), {"color": colour}))
        rows.append((name, segments))
    for task in run["tasks"]:
        if task["started_at"] is None:
            continue
        start = task["started_at"] / scale
        end = task["ended_at"] / scale if task["ended_at"] is not None else wall
        segments = []
        ready = task.get("ready_at")
        if ready is not None and start - ready / scale > 1e-3 / scale:
            ready /= scale
            segments.append(
                (ready, start - ready, {"color": "none", "edgecolor": "#7f7f7f", "hatch": "//"})
            )
        colour = _STATUS_COLOUR.get(task["status"], "#7f7f7f")
        # A few-millisecond task still gets a visible sliver.
        segments.append((start, max(end - start, 0.006 * wall), {"color": colour}))
        rows.append((f"{task['id']}. {_label(task['call'])}", segments))

    for y, (_, segments) in enumerate(rows):
        for start, width, style in segments:
            ax.barh(y, width, left=start, height=0.6, **style)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the question was asked")
    ax.axvline(wall, color="black", linewidth=1, linestyle="--")
    ax.set_title(title)
    if legend:
        handles = [
            Patch(color=_LLM_COLOUR["planner"], label="planner"),
            Patch(color=_LLM_COLOUR["joiner"], label="joiner (light: before 1st token)"),
            *(Patch(color=_STATUS_COLOUR[s], label=f"task {s}") for s in ("done", "failed")),
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    return len(rows)


def plot_timeline(
    run: Mapping[str, Any], path: str | os.PathLike[str], *, title: str | None = None
) -> int:
    """Write the run's timeline (``RunResult.to_dict()`` or a stored run) as a PNG.

    Returns the number of bars: one per LLM call and one per task that started.
    """
    fig, bars = build_timeline(run, title=title)
    fig.savefig(os.fspath(path), format="png", dpi=110)
    return bars
