"""The Mermaid task graph: exact text, escaping of labels, and every edge of the DAG."""

from __future__ import annotations

import json
import re
from typing import Any

from dagcall import Compiler, ScriptedModel
from dagcall._graph import mermaid
from runs import fetch, sample_run

CLASS_DEFS = """\
  classDef done fill:#d8f0d8,stroke:#3a923a
  classDef failed fill:#f8d0d0,stroke:#d62728
  classDef skipped fill:#e8dcf4,stroke:#9467bd
  classDef cancelled fill:#e0e0e0,stroke:#7f7f7f
  classDef waiting fill:#f4f4f4,stroke:#c7c7c7
  classDef running fill:#ffe8cc,stroke:#ff7f0e
"""
NODE = re.compile(r'^    t(\d+)\["(.*)"\]:::(\w+)$')
EDGE = re.compile(r"^  t(\d+) --> (t|join)(\d+)$")


def _run(*replies: str) -> dict[str, Any]:
    model = ScriptedModel(list(replies))
    run: dict[str, Any] = json.loads(Compiler(model=model, tools=[fetch]).run("q").to_json())
    return run


def _unescape(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label)


def test_exact_text_of_a_small_run() -> None:
    run = _run(
        '1. fetch("a")\n2. fetch("b")\n3. fetch("$1 and $2")\n4. join()',
        "Action: Finish(done)",
    )
    assert mermaid(run) == (
        "flowchart TD\n"
        '  subgraph round1["round 1"]\n'
        '    t1["1. fetch(#34;a#34;)"]:::done\n'
        '    t2["2. fetch(#34;b#34;)"]:::done\n'
        '    t3["3. fetch(#34;#36;1 and #36;2#34;)"]:::done\n'
        '    join1(["join: finish"])\n'
        "  end\n"
        "  t1 --> t3\n"
        "  t2 --> t3\n"
        "  t3 --> join1\n" + CLASS_DEFS
    )


def _check_edges(run: dict[str, Any]) -> None:
    """Every dependency is an edge, and each round's join is fed by exactly its sinks."""
    lines = mermaid(run).splitlines()
    deps: set[tuple[int, int]] = set()
    joins: set[tuple[int, int]] = set()
    for line in lines:
        if match := EDGE.match(line):
            edges = deps if match[2] == "t" else joins
            edges.add((int(match[1]), int(match[3])))
    assert deps == {(d, t["id"]) for t in run["tasks"] for d in t["deps"]}
    expected_joins = set()
    for rnd in run["rounds"]:
        ids = set(rnd["task_ids"])
        used = {d for t in run["tasks"] if t["id"] in ids for d in t["deps"]}
        expected_joins |= {(i, rnd["index"] + 1) for i in ids - used}
    assert joins == expected_joins
    nodes = {int(m[1]): m[3] for line in lines if (m := NODE.match(line))}
    assert nodes == {t["id"]: t["status"] for t in run["tasks"]}
    for rnd in run["rounds"]:
        n = rnd["index"] + 1
        assert f'  subgraph round{n}["round {n}"]' in lines
        assert sum(line.startswith(f"    join{n}(") for line in lines) == 1


def test_every_edge_of_a_wider_dag() -> None:
    run = _run(
        '1. fetch("a")\n2. fetch("b")\n3. fetch("$1")\n4. fetch("$1 $2")\n'
        '5. fetch("$3 and $4")\n6. fetch("c")\n7. join()',
        "Action: Finish(done)",
    )
    assert len(run["tasks"]) == 6
    _check_edges(run)
    text = mermaid(run)
    assert "  t5 --> join1\n" in text
    assert "  t6 --> join1\n" in text
    assert "  t4 --> join1\n" not in text  # task 5 uses it


def test_every_edge_of_a_run_with_a_failure_and_a_replan() -> None:
    run = json.loads(sample_run().to_json())
    _check_edges(run)
    assert "  t1 --> t7" in mermaid(run).splitlines()  # round 2 uses a result of round 1


def test_nasty_labels_are_escaped_and_read_back() -> None:
    call = "fetch('say \"hi\" <b> & #1')"
    long_call = 'fetch("[x] {y} (z) | `q`; ' + "w" * 60 + '")'
    run = _run(f"1. {call}\n2. {long_call}\n3. join()", "Action: Finish(done)")
    nodes = {int(m[1]): m[2] for line in mermaid(run).splitlines() if (m := NODE.match(line))}
    for label in nodes.values():
        assert not set(label) & set('"<>')
        assert re.sub(r"#\d+;", "", label).count("#") == 0  # every "#" starts an entity
        assert re.sub(r"#\d+;", "", label).count("&") == 0
    assert _unescape(nodes[1]) == f"1. {call}"
    assert nodes[1] == "1. fetch('say #34;hi#34; #60;b#62; #38; #35;1')"
    long_label = _unescape(nodes[2])
    assert long_label.endswith("…")
    assert len(long_label) == len("2. ") + 48  # the call is cut to 48 characters
    assert f"2. {long_call}".startswith(long_label[:-1])


def test_double_dollars_do_not_become_math() -> None:
    run = _run('1. fetch("cost $$x$$")\n2. join()', "Action: Finish(done)")
    (label,) = [m[2] for line in mermaid(run).splitlines() if (m := NODE.match(line))]
    assert "$$" not in label
