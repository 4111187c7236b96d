"""A run's task graph as Mermaid: tasks, their dependencies, and each round's join."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["mermaid"]

_CLASSES = {
    "done": "fill:#d8f0d8,stroke:#3a923a",
    "failed": "fill:#f8d0d0,stroke:#d62728",
    "skipped": "fill:#e8dcf4,stroke:#9467bd",
    "cancelled": "fill:#e0e0e0,stroke:#7f7f7f",
    "waiting": "fill:#f4f4f4,stroke:#c7c7c7",
    "running": "fill:#ffe8cc,stroke:#ff7f0e",
}


def _text(label: str, width: int = 48) -> str:
    """A label safe inside Mermaid's ``["..."]``: quotes, markup and ``$`` (KaTeX maths in
    Mermaid 10.9+) become entities."""
    label = " ".join(label.split())
    if len(label) > width:
        label = label[: width - 1] + "…"
    return re.sub(r'["<>#&$]', lambda m: f"#{ord(m.group(0))};", label)


def mermaid(run: Mapping[str, Any]) -> str:
    """The run's DAG as a Mermaid ``flowchart TD`` (``RunResult.to_dict()`` or a stored run)."""
    tasks = {t["id"]: t for t in run["tasks"]}
    lines = ["flowchart TD"]
    edges: list[str] = []
    for rnd in run["rounds"]:
        ids = [i for i in rnd["task_ids"] if i in tasks]
        lines.append(f'  subgraph round{rnd["index"] + 1}["round {rnd["index"] + 1}"]')
        for task_id in ids:
            t = tasks[task_id]
            lines.append(f'    t{task_id}["{task_id}. {_text(t["call"])}"]:::{t["status"]}')
        join = f"join{rnd['index'] + 1}"
        decision = rnd.get("decision") or "join"
        lines.append(f'    {join}(["join: {_text(decision)}"])')
        lines.append("  end")
        used_in_round = {d for i in ids for d in tasks[i]["deps"] if d in ids}
        for task_id in ids:
            edges += [f"  t{dep} --> t{task_id}" for dep in tasks[task_id]["deps"]]
            if task_id not in used_in_round:
                edges.append(f"  t{task_id} --> {join}")
        if not ids:
            edges.append(f"  %% round {rnd['index'] + 1} had no tasks")
    lines += edges
    lines += [f"  classDef {name} {style}" for name, style in _CLASSES.items()]
    return "\n".join(lines) + "\n"
