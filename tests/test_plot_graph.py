"""Timeline plots and Mermaid graphs of runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from dagcall._graph import mermaid
from dagcall._plot import build_timeline, plot_timeline
from runs import sample_run


def test_timeline_png_has_a_bar_per_llm_call_and_started_task(tmp_path: Path) -> None:
    run = json.loads(sample_run().to_json())
    started = [t for t in run["tasks"] if t["started_at"] is not None]
    assert len(started) == 5  # the skipped task never started
    expected = len(run["usage"]) + len(started)
    out = tmp_path / "timeline.png"
    assert plot_timeline(run, out) == expected
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        width, height = image.size
    assert width > 600
    assert height > 300
    # Counted independently: the rows of the chart are its y tick labels.
    fig, bars = build_timeline(run)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == bars == expected
    assert labels[0] == "planner (round 1)"
    assert '4. fetch("broken")' in labels
    # "$" is escaped so that matplotlib does not typeset "$1 and $2" as math.
    assert '3. fetch("\\$1 and \\$2")' in labels


def test_mermaid_graph_of_a_run() -> None:
    text = mermaid(json.loads(sample_run().to_json()))
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert '  subgraph round1["round 1"]' in lines
    assert '    t3["3. fetch(#34;#36;1 and #36;2#34;)"]:::done' in lines
    assert '    t4["4. fetch(#34;broken#34;)"]:::failed' in lines
    assert '    t5["5. fetch(#34;after #36;4#34;)"]:::skipped' in lines
    assert '    join1(["join: replan"])' in lines
    assert '    join2(["join: finish"])' in lines
    for edge in ("t1 --> t3", "t2 --> t3", "t4 --> t5", "t3 --> join1", "t5 --> join1"):
        assert f"  {edge}" in lines, edge
    assert "  t7 --> join2" in lines
    assert "  t1 --> join1" not in lines  # task 3 uses it
    # Nothing that would break Mermaid's quoting is left in labels.
    for line in lines:
        label = re.search(r'\["(.*)"\]', line)
        if label:
            assert '"' not in label.group(1)
            assert "<" not in label.group(1)
