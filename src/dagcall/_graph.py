"""A run's task graph as Mermaid: tasks, their dependencies, and each round's join."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._records import typed_run
from ._result import RunResult, TaskRecord

__all__ = ["mermaid"]

_CLASSES = {
    "done": "fill:#d8f0d8,stroke:#3a923a",
    "failed": "fill:#f8d0d0,stroke:#d62728",
    "skipped": "fill:#e8dcf4,stroke:#9467bd",
    "cancelled": "fill:#e0e0e0,stroke:#7f7f7f",
    "waiting": "fill:#f4f4f4,stroke:#c7c7c7",
    "running": "fill:#ffe8cc,stroke:#ff7f0e",
}
#: Defined only in graphs that use them: a task whose worker thread could not be stopped.
_EXTRA_CLASSES = {"abandoned": "fill:#f3e2d3,stroke:#8c564b"}


def _text(label: str, width: int = 48) -> str:
    """A label safe inside Mermaid's ``["..."]``: quotes, markup, ``$`` (KaTeX maths in
    Mermaid 10.9+) and control characters become entities; lone surrogates become U+FFFD."""
    label = " ".join(label.split())
    if len(label) > width:
        label = label[: width - 1] + "…"
    label = re.sub("[\ud800-\udfff]", "\ufffd", label)
    return re.sub(r'["<>#&$`\x00-\x1f\x7f-\x9f]', lambda m: f"#{ord(m.group(0))};", label)


def _node(task_id: int) -> str:
    """A Mermaid node name for a task id: ``t7`` for task 7, ``tn7`` for task -7."""
    return f"t{task_id}" if task_id >= 0 else f"tn{-task_id}"


def mermaid(run: RunResult | Mapping[str, Any]) -> str:
    """The run's DAG as a Mermaid ``flowchart TD``.

    ``run`` is a :class:`~dagcall.RunResult` (a stored run is one), or the data of one, which
    is read however damaged (a status this version does not know is read as failed).
    """
    result = typed_run(run)
    tasks: dict[int, TaskRecord] = {}
    for t in result.tasks:
        tasks.setdefault(t.id, t)  # a plan with one id twice: the first, as the run ran it
    lines = ["flowchart TD"]
    edges: list[str] = []
    used_classes: set[str] = set()
    for position, rnd in enumerate(result.rounds):
        number = rnd.index + 1 if rnd.index >= 0 else position + 1
        ids = list(dict.fromkeys(i for i in rnd.task_ids if i in tasks))
        lines.append(f'  subgraph round{number}["round {number}"]')
        for task_id in ids:
            t = tasks[task_id]
            css = str(t.status)  # read_run made every status one this version knows
            used_classes.add(css)
            label = _text(f"{task_id}. {t.call}", len(str(task_id)) + 50)
            lines.append(f'    {_node(task_id)}["{label}"]:::{css}')
        join = f"join{number}"
        decision = rnd.decision or "join"
        lines.append(f'    {join}(["join: {_text(decision)}"])')
        lines.append("  end")
        used_in_round = {d for i in ids for d in tasks[i].deps if d in ids}
        for task_id in ids:
            for dep in tasks[task_id].deps:
                edges.append(f"  {_node(dep)} --> {_node(task_id)}")
            if task_id not in used_in_round:
                edges.append(f"  {_node(task_id)} --> {join}")
        if not ids:
            edges.append(f"  %% round {number} had no tasks")
    lines += edges
    lines += [f"  classDef {name} {style}" for name, style in _CLASSES.items()]
    lines += [f"  classDef {n} {s}" for n, s in _EXTRA_CLASSES.items() if n in used_classes]
    return "\n".join(lines) + "\n"
