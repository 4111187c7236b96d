"""A run's task graph as Mermaid: tasks, their dependencies, and each round's join."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._store import tidy_run

__all__ = ["mermaid"]

_CLASSES = {
    "done": "fill:#d8f0d8,stroke:#3a923a",
    "failed": "fill:#f8d0d0,stroke:#d62728",
    "skipped": "fill:#e8dcf4,stroke:#9467bd",
    "cancelled": "fill:#e0e0e0,stroke:#7f7f7f",
    "waiting": "fill:#f4f4f4,stroke:#c7c7c7",
    "running": "fill:#ffe8cc,stroke:#ff7f0e",
}
#: Defined only in graphs that use them: a task whose worker thread could not be stopped, and
#: a status this version does not know (a neutral grey, dashed).
_EXTRA_CLASSES = {
    "abandoned": "fill:#f3e2d3,stroke:#8c564b",
    "other": "fill:#ffffff,stroke:#999999,stroke-dasharray:3 3",
}


def _text(label: str, width: int = 48) -> str:
    """A label safe inside Mermaid's ``["..."]``: quotes, markup, ``$`` (KaTeX maths in
    Mermaid 10.9+) and control characters become entities; lone surrogates become U+FFFD."""
    label = " ".join(label.split())
    if len(label) > width:
        label = label[: width - 1] + "…"
    label = re.sub("[\ud800-\udfff]", "\ufffd", label)
    return re.sub(r'["<>#&$`\x00-\x1f\x7f-\x9f]', lambda m: f"#{ord(m.group(0))};", label)


def _class(status: str) -> str:
    return status if status in _CLASSES or status == "abandoned" else "other"


def _node(key: Any, position: int) -> str:
    """A Mermaid node name for a task id: ``t7`` for task 7, ``tx3`` (the task's position)
    for an id that is not a non-negative int."""
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return f"t{key}"
    return f"tx{position}"


def _label_id(key: Any) -> str:
    return key if isinstance(key, str) else repr(key) if isinstance(key, float) else str(key)


def mermaid(run: Mapping[str, Any]) -> str:
    """The run's DAG as a Mermaid ``flowchart TD`` (``RunResult.to_dict()`` or a stored run).

    Any task status is drawn: the known ones with their colours, anything else in a neutral
    dashed grey (class ``other``).  A damaged run (missing or odd fields) still gives a graph.
    """
    tidy = tidy_run(run)
    tasks: dict[Any, dict[str, Any]] = {}
    nodes: dict[Any, str] = {}
    for position, t in enumerate(tidy["tasks"]):
        if t["id"] not in tasks:
            tasks[t["id"]] = t
            nodes[t["id"]] = _node(t["id"], position)

    def node_of(key: Any) -> str | None:
        if key in nodes:
            return nodes[key]
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            return f"t{key}"  # a task the run does not list (as Mermaid draws it: bare)
        return None

    lines = ["flowchart TD"]
    edges: list[str] = []
    used_classes: set[str] = set()
    for position, rnd in enumerate(tidy["rounds"]):
        number = rnd["index"] + 1 if rnd["index"] >= 0 else position + 1
        ids = list(dict.fromkeys(i for i in rnd["task_ids"] if i in tasks))
        lines.append(f'  subgraph round{number}["round {number}"]')
        for task_id in ids:
            t = tasks[task_id]
            css = _class(t["status"])
            used_classes.add(css)
            label = _text(f"{_label_id(task_id)}. {t['call']}", len(_label_id(task_id)) + 50)
            lines.append(f'    {nodes[task_id]}["{label}"]:::{css}')
        join = f"join{number}"
        decision = rnd["decision"] or "join"
        lines.append(f'    {join}(["join: {_text(decision)}"])')
        lines.append("  end")
        used_in_round = {d for i in ids for d in tasks[i]["deps"] if d in ids}
        for task_id in ids:
            for dep in tasks[task_id]["deps"]:
                source = node_of(dep)
                if source is not None:
                    edges.append(f"  {source} --> {nodes[task_id]}")
            if task_id not in used_in_round:
                edges.append(f"  {nodes[task_id]} --> {join}")
        if not ids:
            edges.append(f"  %% round {number} had no tasks")
    lines += edges
    lines += [f"  classDef {name} {style}" for name, style in _CLASSES.items()]
    lines += [f"  classDef {n} {s}" for n, s in _EXTRA_CLASSES.items() if n in used_classes]
    return "\n".join(lines) + "\n"
