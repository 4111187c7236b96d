"""The Gantt timeline of a run, checked on the figure's own bars as well as on the PNG."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from PIL import Image

from dagcall import Compiler, Message, RunResult, ScriptedModel, call_model, tool
from dagcall._plot import build_timeline, plot_timeline
from dagcall._store import RunStore
from runs import sample_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LONG_KEY = "k" * 60


@tool
async def slow(key: str) -> str:
    """Take a while to fetch a value."""
    await asyncio.sleep(0.03)
    return key


@tool
async def summarise(text: str) -> str:
    """Summarise with a model of its own (an LLM call of role "tool")."""
    reply = await call_model(ScriptedModel(["short"]), [Message("user", text)])
    return reply.text


@pytest.fixture(scope="module")
def queued_run() -> dict[str, Any]:
    """One task at a time, so task 2 waits for a slot; the models take 20 ms to first token."""
    model = ScriptedModel(
        [
            f'1. slow("{LONG_KEY}")\n2. slow("b")\n3. summarise("$1 $2")\n4. join()',
            "Action: Finish(done)",
        ],
        time_to_first_token=0.02,
    )
    result = Compiler(model=model, tools=[slow, summarise], max_concurrency=1).run("queued?")
    assert result.answer == "done"
    run: dict[str, Any] = json.loads(result.to_json())
    return run


def _bars(fig: Any) -> list[Rectangle]:
    return [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]


def _rows(fig: Any) -> dict[str, list[Rectangle]]:
    """The bars of each labelled row, found by the y position of each bar."""
    ax = fig.axes[0]
    ticks = zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
    labels = {round(y): label.get_text() for y, label in ticks}
    rows: dict[str, list[Rectangle]] = {}
    for bar in _bars(fig):
        rows.setdefault(labels[round(bar.get_y() + bar.get_height() / 2)], []).append(bar)
    return rows


def _started(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in run["tasks"] if t["started_at"] is not None]


def test_one_row_of_bars_per_llm_call_and_started_task(queued_run: dict[str, Any]) -> None:
    fig, count = build_timeline(queued_run)
    rows = _rows(fig)
    assert len(rows) == count == len(queued_run["usage"]) + len(_started(queued_run))
    assert {"planner (round 1)", "joiner (round 1)", "LLM of task 3"} <= set(rows)
    assert '2. slow("b")' in rows
    assert '3. summarise("$1 $2")' not in rows  # "$" is escaped for matplotlib
    assert '3. summarise("\\$1 \\$2")' in rows
    (long_label,) = [name for name in rows if name.startswith("1. ")]
    assert long_label.endswith("…")
    assert len(long_label) <= len("1. ") + 42


def test_the_wait_for_a_slot_is_a_hatched_bar(queued_run: dict[str, Any]) -> None:
    task = next(t for t in queued_run["tasks"] if t["id"] == 2)
    wait = task["started_at"] - task["ready_at"]
    assert wait > 0.015  # it waited for task 1 to free the only slot
    fig, _ = build_timeline(queued_run)
    (hatched,) = [b for b in _rows(fig)['2. slow("b")'] if b.get_hatch()]
    assert hatched.get_x() == pytest.approx(task["ready_at"])
    assert hatched.get_width() == pytest.approx(wait)
    assert not any(b.get_hatch() for b in _rows(fig)["planner (round 1)"])


def test_time_to_first_token_is_the_lighter_part_of_the_planner_bar(
    queued_run: dict[str, Any],
) -> None:
    call = next(c for c in queued_run["usage"] if c["role"] == "planner")
    assert call["time_to_first_token"] >= 0.015
    fig, _ = build_timeline(queued_run)
    first, rest = sorted(_rows(fig)["planner (round 1)"], key=lambda b: b.get_x())
    assert first.get_x() == pytest.approx(call["started_at"])
    assert first.get_width() == pytest.approx(call["time_to_first_token"])
    alpha = first.get_alpha()
    assert alpha is not None
    assert alpha < 1
    assert rest.get_x() + rest.get_width() == pytest.approx(call["ended_at"])


def test_tasks_are_coloured_by_status() -> None:
    run = json.loads(sample_run().to_json())
    fig, _ = build_timeline(run)
    rows = {name.split(".")[0]: bars for name, bars in _rows(fig).items()}
    colours: dict[str, set[tuple[float, ...]]] = {}
    for task in _started(run):
        (bar,) = [b for b in rows[str(task["id"])] if not b.get_hatch()]
        colours.setdefault(task["status"], set()).add(tuple(to_rgba(bar.get_facecolor())))
    assert set(colours) == {"done", "failed"}  # the skipped task never started: no bar
    assert len(colours["done"]) == len(colours["failed"]) == 1
    assert colours["done"] != colours["failed"]


def test_the_run_end_is_marked_and_the_title_can_be_set(queued_run: dict[str, Any]) -> None:
    fig, _ = build_timeline(queued_run, title="my title")
    ax = fig.axes[0]
    assert ax.get_title() == "my title"
    ends = [line for line in ax.get_lines() if set(line.get_xdata()) == {queued_run["wall_time"]}]
    assert len(ends) == 1
    assert build_timeline(queued_run)[0].axes[0].get_title() == "queued?"


def test_png_of_a_stored_run(tmp_path: Path) -> None:
    result = sample_run()
    with RunStore(tmp_path / "runs.sqlite3") as store:
        run = store.load(store.save(result))
    out = tmp_path / "timeline.png"
    count = plot_timeline(run, str(out))
    assert count == result.llm_calls + sum(t.started_at is not None for t in result.tasks)
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(out) as image:
        assert image.format == "PNG"
        image.load()
        assert image.width > 600
        assert image.height > 300


def test_a_run_without_calls_or_tasks_is_an_empty_chart(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    assert plot_timeline(RunResult(question="nothing ran").to_dict(), out) == 0
    assert _bars(build_timeline(RunResult(question="nothing ran").to_dict())[0]) == []
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"


def test_plotting_does_not_import_pyplot(tmp_path: Path) -> None:
    """No global figure manager or backend choice: users' notebooks and GUIs keep theirs."""
    run_file = tmp_path / "run.json"
    run_file.write_text(sample_run().to_json(), encoding="utf-8")
    code = (
        "import json, sys\n"
        "from dagcall._plot import plot_timeline\n"
        "run = json.loads(open(sys.argv[1], encoding='utf-8').read())\n"
        "assert plot_timeline(run, sys.argv[2]) > 0\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    out = tmp_path / "t.png"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run_file), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
