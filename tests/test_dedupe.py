"""Common calls run once (within a run, across its replans) and the call cache (across runs)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dagcall import (
    Compiler,
    MemoryCallCache,
    Optimizations,
    RunEvent,
    RunResult,
    ScriptedModel,
    SQLiteCallCache,
    TaskStatus,
    ToolExecutionError,
    UsageError,
    tool,
)
from dagcall._cache import call_key, canonical_json

FINISH = "Thought: done.\nAction: Finish(ok)"
REPLAN = "Thought: not enough.\nAction: Replan(look again)"

calls: Counter[str] = Counter()


def plan(*lines: str) -> str:
    return "\n".join(lines) + "\n<END_OF_PLAN>"


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


@tool(cacheable=True)
async def lookup(query: str, delay: float = 0.2) -> dict[str, Any]:
    """A look-up whose equal calls may share a result."""
    calls[f"lookup:{query}"] += 1
    await asyncio.sleep(delay)
    return {"query": query, "n": calls[f"lookup:{query}"]}


@tool
async def plain(query: str) -> str:
    """No side effects, not declared cacheable."""
    calls[f"plain:{query}"] += 1
    await asyncio.sleep(0.05)
    return f"plain {query}"


@tool(cacheable=False)
async def clock(query: str) -> str:
    """Every call must really happen (a clock, a poll)."""
    calls[f"clock:{query}"] += 1
    await asyncio.sleep(0.05)
    return f"clock {query}"


@tool(side_effects=True)
async def send(to: str) -> str:
    """Sends something: every call must happen."""
    calls[f"send:{to}"] += 1
    return f"sent to {to}"


@tool(cacheable=True)
async def flaky(key: str) -> str:
    """Fails on its first call for a key."""
    calls[f"flaky:{key}"] += 1
    if calls[f"flaky:{key}"] == 1:
        raise RuntimeError(f"first call for {key} fails")
    return f"ok {key}"


@tool(cacheable=True)
def opaque(key: str) -> object:
    """A result that is not JSON data."""
    calls[f"opaque:{key}"] += 1
    return {1, 2, 3}


@tool(cacheable=True, cache_ttl=0.2)
def brief(key: str) -> str:
    """Cached for 0.2 s only."""
    calls[f"brief:{key}"] += 1
    return f"brief {key}"


TOOLS = [lookup, plain, clock, send, flaky, opaque, brief]


def compiler(replies: list[str], **options: Any) -> Compiler:
    options.setdefault("approve", lambda record: True)
    return Compiler(model=ScriptedModel(replies), tools=TOOLS, **options)


def by_id(result: RunResult) -> dict[int, Any]:
    return {t.id: t for t in result.tasks}


# -- within a round ------------------------------------------------------------------------------


async def test_an_equal_call_while_the_first_runs_waits_for_it_and_reuses_its_outcome() -> None:
    events: list[RunEvent] = []
    result = await compiler(
        [
            plan(
                '1. lookup("paris")',
                '2. lookup(query="paris", delay=0.2)',  # the same call, spelled differently
                '3. lookup("lyon")',
                "4. join()",
            ),
            FINISH,
        ]
    ).arun("q", on_event=events.append)
    t = by_id(result)
    assert calls == {"lookup:paris": 1, "lookup:lyon": 1}
    assert all(task.status is TaskStatus.DONE for task in result.tasks)
    assert t[2].reused_from == 1
    assert t[1].reused_from is None
    assert t[3].reused_from is None
    assert t[2].output is t[1].output
    assert t[2].resolved_args == {"query": "paris", "delay": 0.2}
    # It waited for task 1 (which was still running) rather than calling again.
    assert t[2].started_at is not None
    assert t[1].ended_at is not None
    assert t[2].started_at < t[1].ended_at <= t[2].ended_at
    # In the trace: the record's field, its JSON, and the task events.
    assert result.to_dict()["tasks"][1]["reused_from"] == 1
    assert RunResult.model_validate_json(result.to_json()).tasks[1].reused_from == 1
    assert any(e.kind == "task" and e.task is not None and e.task.reused_from == 1 for e in events)


async def test_which_tools_are_shared_is_switchable() -> None:
    lines = plan(
        '1. plain("a")',
        '2. plain("a")',
        '3. lookup("b", delay=0)',
        '4. lookup("b", delay=0)',
        '5. clock("c")',
        '6. clock("c")',
        "7. join()",
    )
    # Default ("pure"): every tool without side effects, unless it says cacheable=False.
    result = await compiler([lines, FINISH]).arun("q")
    assert calls == {"plain:a": 1, "lookup:b": 1, "clock:c": 2}
    assert by_id(result)[2].reused_from == 1
    assert by_id(result)[6].reused_from is None
    calls.clear()
    # "cacheable": only tools declared cacheable=True.
    result = await compiler([lines, FINISH], optimize=Optimizations(dedupe="cacheable")).arun("q")
    assert calls == {"plain:a": 2, "lookup:b": 1, "clock:c": 2}
    calls.clear()
    # Off (optimize=False turns every optimisation off).
    for off in (Optimizations(dedupe="off"), Optimizations(dedupe=False), False):
        calls.clear()
        result = await compiler([lines, FINISH], optimize=off).arun("q")
        assert calls == {"plain:a": 2, "lookup:b": 2, "clock:c": 2}
        assert all(task.reused_from is None for task in result.tasks)
    assert Optimizations(dedupe=True).dedupe == "pure"
    with pytest.raises(UsageError, match="dedupe"):
        Optimizations(dedupe="sometimes")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="optimize"):
        Compiler(model=ScriptedModel([]), tools=TOOLS, optimize="yes")  # type: ignore[arg-type]


async def test_a_side_effecting_duplicate_runs_twice() -> None:
    result = await compiler(
        [plan('1. send("bob")', '2. send("bob")', "3. join()"), FINISH],
        optimize=Optimizations(dedupe="pure"),
    ).arun("q")
    assert calls == {"send:bob": 2}
    assert all(task.reused_from is None and task.cache is None for task in result.tasks)


async def test_a_failure_is_shared_within_its_round_and_retried_by_a_replan() -> None:
    result = await compiler(
        [
            plan('1. flaky("k")', '2. flaky("k")', "3. join()"),
            REPLAN,
            plan('4. flaky("k")', '5. flaky("k")', "6. join()"),
            FINISH,
        ]
    ).arun("q")
    t = by_id(result)
    assert t[1].status is TaskStatus.FAILED
    assert t[2].status is TaskStatus.FAILED
    assert t[2].reused_from == 1
    assert isinstance(t[2].error, ToolExecutionError)
    assert t[2].error.task_id == 2
    assert "same call as task 1 failed" in t[2].error.message
    assert "first call for k fails" in t[2].error.message
    # The replan calls again (once), and its equal task reuses that.
    assert t[4].status is TaskStatus.DONE
    assert t[4].reused_from is None
    assert t[5].status is TaskStatus.DONE
    assert t[5].reused_from == 4
    assert calls == {"flaky:k": 2}


async def test_a_replan_repeating_round_ones_look_ups_reuses_them() -> None:
    result = await compiler(
        [
            plan('1. lookup("a", delay=0)', '2. plain("x")', "3. join()"),
            REPLAN,
            plan('4. lookup("a", delay=0)', '5. lookup("new", delay=0)', "6. join()"),
            FINISH,
        ]
    ).arun("q")
    t = by_id(result)
    assert t[4].reused_from == 1
    assert t[4].round == 1
    assert t[4].output == t[1].output
    assert calls == {"lookup:a": 1, "plain:x": 1, "lookup:new": 1}


async def test_a_cancelled_first_call_is_not_shared() -> None:
    compiled = compiler(
        [plan('1. lookup("slow", delay=5)', '2. lookup("slow", delay=5)', "3. join()"), FINISH],
        timeout=0.3,
    )
    with pytest.raises(Exception, match="time"):
        await compiled.arun("q")
    assert calls == {"lookup:slow": 1}


# -- the call cache ----------------------------------------------------------------------------


async def test_the_memory_cache_answers_equal_calls_of_later_runs() -> None:
    cache = MemoryCallCache()
    script = [plan('1. lookup("a", delay=0)', '2. plain("a")', "3. join()"), FINISH]
    c = compiler(script * 2, call_cache=cache)
    first = await c.arun("q")
    second = await c.arun("q")
    assert calls == {"lookup:a": 1, "plain:a": 2}
    assert by_id(first)[1].cache == "miss"
    assert by_id(second)[1].cache == "hit"
    assert by_id(second)[2].cache is None  # not cacheable: the cache is not asked
    assert by_id(second)[1].output == by_id(first)[1].output
    assert by_id(second)[1].status is TaskStatus.DONE
    assert by_id(second)[1].started_at is not None
    assert cache.hits == 1
    assert len(cache) == 1
    assert second.to_dict()["tasks"][0]["cache"] == "hit"
    assert RunResult.model_validate_json(second.to_json()).tasks[0].cache == "hit"


async def test_failures_are_not_cached() -> None:
    cache = MemoryCallCache()
    script = [plan('1. flaky("z")', "2. join()"), FINISH]
    c = compiler(script * 3, call_cache=cache)
    assert by_id(await c.arun("q"))[1].status is TaskStatus.FAILED
    assert by_id(await c.arun("q"))[1].cache == "miss"
    assert by_id(await c.arun("q"))[1].cache == "hit"
    assert calls == {"flaky:z": 2}


async def test_the_sqlite_cache_persists_across_compilers_with_its_ttl(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    script = [
        plan('1. lookup("a", delay=0)', '2. opaque("o")', '3. brief("b")', "4. join()"),
        FINISH,
    ]
    first = await compiler(script, call_cache=SQLiteCallCache(path)).arun("q")
    assert [t.cache for t in first.tasks] == ["miss", "miss", "miss"]
    cache = SQLiteCallCache(path)
    second = await compiler(script, call_cache=cache).arun("q")
    t = by_id(second)
    assert t[1].cache == "hit"
    assert t[1].output == {"query": "a", "n": 1}
    assert t[2].cache == "miss"  # a set is not JSON data: it was never persisted
    assert t[3].cache == "hit"
    assert len(cache) == 2
    await asyncio.sleep(0.25)  # past brief's cache_ttl
    third = await compiler(script, call_cache=cache).arun("q")
    assert by_id(third)[3].cache == "miss"
    assert calls == {"lookup:a": 1, "opaque:o": 3, "brief:b": 2}
    cache.close()


def test_cache_entries_expire_and_values_keep_their_json_meaning(tmp_path: Path) -> None:
    memory = MemoryCallCache(ttl=0.05, max_entries=2)
    memory.put("a", 1)
    memory.put("b", 2, ttl=10)
    memory.put("c", 3, ttl=10)
    assert memory.get("a") is None  # evicted (least recently used) or expired
    time.sleep(0.06)
    assert memory.get("b") is not None
    assert memory.get("c") is not None
    sql = SQLiteCallCache(tmp_path / "c.db", ttl=0.05)
    assert sql.put("t", (1, 2)) is False  # a tuple would come back a list
    assert sql.put("i", {1: 2}) is False  # int keys would come back strings
    assert sql.put("n", float("nan")) is False
    assert sql.put("ok", {"a": [1, 2.5, None, "x"]}) is True
    hit = sql.get("ok")
    assert hit is not None
    assert hit.value == {"a": [1, 2.5, None, "x"]}
    time.sleep(0.06)
    assert sql.purge() == 1
    assert sql.get("ok") is None
    with pytest.raises(UsageError):
        MemoryCallCache(ttl=0)
    with pytest.raises(UsageError, match="call_cache"):
        Compiler(model=ScriptedModel([]), tools=TOOLS, call_cache=object())  # type: ignore[arg-type]


def test_call_keys_are_canonical() -> None:
    assert call_key("t", {"a": 1, "b": [1, {"y": 2, "x": 1}]}) == call_key(
        "t", {"b": [1, {"x": 1, "y": 2}], "a": 1}
    )
    assert call_key("t", {"a": 1}) != call_key("u", {"a": 1})
    assert call_key("t", {"a": 1}) != call_key("t", {"a": "1"})
    assert call_key("t", {"a": object()}) is None
    assert canonical_json({"a": float("nan")}) is None


# -- dagcall show --------------------------------------------------------------------------------


async def test_show_marks_reused_and_cached_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    from dagcall._store import RunStore
    from dagcall.cli import main

    cache = MemoryCallCache()
    cache.put(call_key("brief", {"key": "b"}) or "", "brief b")
    result = await compiler(
        [
            plan(
                '1. lookup("a", delay=0)', '2. lookup("a", delay=0)', '3. brief("b")', "4. join()"
            ),
            FINISH,
        ],
        call_cache=cache,
    ).arun("q")
    with RunStore() as store:
        run_id = store.save(result, planner="p", joiner="j")
    assert await asyncio.to_thread(main, ["show", run_id]) == 0
    shown = capsys.readouterr().out.split("\ntasks:")[1]
    line2 = next(line for line in shown.splitlines() if line.strip().startswith("2."))
    line3 = next(line for line in shown.splitlines() if line.strip().startswith("3."))
    assert "(reused task 1)" in line2
    assert "(cache hit)" in line3


async def test_a_failing_cache_is_a_miss_not_the_tasks_failure() -> None:
    class Broken:
        def get(self, key: str) -> Any:
            raise OSError("disk gone")

        def put(self, key: str, value: Any, ttl: float | None = None) -> bool:
            raise OSError("disk gone")

    result = await compiler(
        [plan('1. lookup("a", delay=0)', "2. join()"), FINISH], call_cache=Broken()
    ).arun("q")
    assert result.tasks[0].status is TaskStatus.DONE
    assert result.tasks[0].cache == "miss"
