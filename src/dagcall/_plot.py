"""A run's timeline as a Gantt chart: LLM calls and tasks on one time axis."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ._errors import UsageError
from ._records import typed_run
from ._result import RunResult

__all__ = ["bar_count", "build_timeline", "draw_timeline", "plot_timeline"]

_STATUS_COLOUR = {
    "done": "#3a923a",
    "failed": "#d62728",
    "skipped": "#9467bd",
    "cancelled": "#7f7f7f",
    "running": "#ff7f0e",
    "waiting": "#c7c7c7",
    "abandoned": "#8c564b",  # cancelled, but its worker thread could not be stopped
}
_UNKNOWN_COLOUR = "#aaaaaa"  # a status this version does not know
_LLM_COLOUR = {"planner": "#1f77b4", "joiner": "#17becf", "tool": "#bcbd22"}


#: Seconds beyond which a (damaged) time is drawn at this bound instead.
_TIME_BOUND = 1e9


def require_matplotlib(what: str, extra: str = "plot") -> None:
    """Raise a UsageError naming the extra when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{what} need matplotlib, which is not installed: pip install 'dagcall[{extra}]'"
        ) from None


#: Inches: matplotlib cannot write an image taller than 2**16 pixels.
_MAX_HEIGHT = 590.0
_UNDRAWABLE = re.compile("[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _label(text: str, width: int = 42) -> str:
    """Shortened, with ``$`` escaped: matplotlib reads ``$1 - $2`` as math text otherwise;
    lone surrogates and control characters become U+FFFD."""
    text = " ".join(_UNDRAWABLE.sub("\ufffd", text).split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def _t(seconds: float) -> float:
    if not math.isfinite(seconds):  # a damaged time: NaN at the start, infinities at a bound
        return 0.0 if seconds != seconds else math.copysign(_TIME_BOUND, seconds)
    return min(max(seconds, -_TIME_BOUND), _TIME_BOUND)


@contextmanager
def _quiet() -> Iterator[None]:
    """No warnings from matplotlib about glyphs its font lacks or labels that overlap."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def build_timeline(
    run: RunResult | Mapping[str, Any], *, title: str | None = None
) -> tuple[Any, int]:
    """The figure and its bar count: one bar per LLM call and one per task that started.

    A planner or joiner bar is drawn light up to its first token and solid after it; a task
    that waited between becoming ready and starting (a concurrency limit) gets a hatched bar
    for that wait, which is not counted.
    """
    require_matplotlib("plots")
    from matplotlib.figure import Figure

    result = typed_run(run)
    bars = bar_count(result)
    height = min(0.45 * max(bars, 2) + 1.4, _MAX_HEIGHT)
    fig = Figure(figsize=(10, height), layout="constrained")
    ax = fig.add_subplot()
    with _quiet():
        draw_timeline(ax, result, title=title or _label(result.question, 90))
    return fig, bars


def bar_count(run: RunResult) -> int:
    """How many bars the run's timeline has: its LLM calls and the tasks that started."""
    return len(run.usage) + sum(1 for t in run.tasks if t.started_at is not None)


def draw_timeline(
    ax: Any,
    run: RunResult | Mapping[str, Any],
    *,
    title: str = "",
    scale: float = 1.0,
    legend: bool = True,
) -> int:
    """Draw the run's bars on a matplotlib axis; times are divided by ``scale``.

    Any task status is drawn (an unknown one in a neutral grey), and the data of a damaged
    run is drawn as far as it can be read.
    """
    require_matplotlib("plots")
    from matplotlib.patches import Patch

    result = typed_run(run)
    Segment = tuple[float, float, dict[str, Any]]
    rows: list[tuple[str, list[Segment]]] = []
    wall = _t(result.wall_time / scale)
    for call in result.usage:
        start, end = _t(call.started_at / scale), _t(call.ended_at / scale)
        colour = _LLM_COLOUR.get(call.role, "#8c564b")
        name = _label(f"{call.role} (round {call.round + 1})")
        if call.role == "tool" and call.task_id is not None:
            name = _label(f"LLM of task {call.task_id}")
        segments: list[Segment] = []
        if call.time_to_first_token:
            ttft = _t(call.time_to_first_token / scale)
            segments.append((start, ttft, {"color": colour, "alpha": 0.35}))
            segments.append((start + ttft, max(end - start - ttft, 0.0), {"color": colour}))
        else:
            segments.append((start, max(end - start, 0.0), {"color": colour}))
        rows.append((name, segments))
    for task in result.tasks:
        if task.started_at is None:
            continue
        start = _t(task.started_at / scale)
        end = _t(task.ended_at / scale) if task.ended_at is not None else wall
        segments = []
        if task.ready_at is not None and start - _t(task.ready_at / scale) > 1e-3 / scale:
            ready = _t(task.ready_at / scale)
            segments.append(
                (ready, start - ready, {"color": "none", "edgecolor": "#7f7f7f", "hatch": "//"})
            )
        colour = _STATUS_COLOUR.get(str(task.status), _UNKNOWN_COLOUR)
        # A few-millisecond task still gets a visible sliver.
        segments.append((start, max(end - start, 0.006 * wall), {"color": colour}))
        rows.append((f"{task.id}. {_label(task.call)}", segments))

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
        if any(t.status == "abandoned" for t in result.tasks):
            handles.append(Patch(color=_STATUS_COLOUR["abandoned"], label="task abandoned"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    return len(rows)


def plot_timeline(
    run: RunResult | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> int:
    """Write the run's timeline (a :class:`~dagcall.RunResult`, such as a stored run, or the
    data of one) as a PNG.

    Returns the number of bars: one per LLM call and one per task that started.
    """
    fig, bars = build_timeline(run, title=title)
    with _quiet():
        _write_png(fig, Path(os.fspath(path)))
    return bars


def _write_png(fig: Any, path: Path) -> None:
    """Write the PNG next to ``path`` and move it into place, so that a failed write (a full
    disk) leaves any earlier file whole; a device or pipe (``/dev/stdout``) is written to
    directly.  Raises ``OSError`` naming ``path``."""
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory (give a file name)", str(path))
    if path.exists() and not path.is_file():
        fig.savefig(path, format="png", dpi=110)
        return
    target = Path(os.path.realpath(path))  # through a symlink, not over it
    if not target.parent.is_dir():
        raise FileNotFoundError(2, "No such folder", str(target.parent))
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(temporary, format="png", dpi=110)
        os.replace(temporary, target)
    except BaseException as exc:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename == str(temporary):
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
