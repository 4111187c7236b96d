"""The SQLite run store."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from dagcall import RunResult, UsageError
from dagcall.store import RunNotFoundError, RunStore, default_path
from runs import sample_run


def test_save_list_load_round_trip(tmp_path: Path) -> None:
    result = sample_run()
    with RunStore(tmp_path / "runs.sqlite3") as store:
        run_id = store.save(result, planner="scripted", joiner="scripted")
        (summary,) = store.list_runs()
        assert summary.id == run_id
        assert summary.question == result.question
        assert summary.answer == 'c = "value of c"'
        assert summary.llm_calls == 4
        loaded = store.load(run_id[:5])  # a unique prefix is enough
    expected = json.loads(result.to_json())
    data = loaded.to_dict()
    assert {k: data[k] for k in expected} == expected  # typed, and the same run
    assert isinstance(loaded, RunResult)
    assert loaded.id == run_id
    assert loaded.planner == "scripted"
    assert loaded.repairs == []
    assert [type(t.error) for t in loaded.tasks] == [type(t.error) for t in result.tasks]


def test_normalised_tables_answer_sql(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with RunStore(path) as store:
        run_id = store.save(sample_run())
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT id, status, ended_at >= started_at, error FROM tasks WHERE run_id = ? "
            "ORDER BY id",
            (run_id,),
        ).fetchall()
        roles = db.execute(
            "SELECT role, count(*) FROM llm_calls WHERE run_id = ? GROUP BY role ORDER BY role",
            (run_id,),
        ).fetchall()
        plans = db.execute("SELECT count(*) FROM rounds WHERE run_id = ?", (run_id,)).fetchone()
    finally:
        db.close()
    assert [(r[0], r[1]) for r in rows] == [
        (1, "done"),
        (2, "done"),
        (3, "done"),
        (4, "failed"),
        (5, "skipped"),
        (7, "done"),
    ]
    assert all(r[2] for r in rows if r[1] == "done")
    assert "backend down" in rows[3][3]
    assert roles == [("joiner", 2), ("planner", 2)]
    assert plans == (2,)


def test_unknown_ambiguous_and_bad_ids(tmp_path: Path) -> None:
    with RunStore(tmp_path / "r.sqlite3") as store:
        ids = {store.save(sample_run()) for _ in range(20)}
        with pytest.raises(RunNotFoundError, match="no saved run"):
            store.load("ffffffffffff" if "ffffffffffff" not in ids else "000000000000")
        with pytest.raises(RunNotFoundError, match="ambiguous"):
            store.load(_shared_prefix(ids))
        with pytest.raises(RunNotFoundError, match="hex digits"):
            store.load("not-an-id")
        victim = sorted(ids)[0]
        store.delete(victim)
        assert victim not in {s.id for s in store.list_runs(100)}
        assert len(store.list_runs(100)) == 19


def _shared_prefix(ids: set[str]) -> str:
    first = sorted(ids)
    for a, b in itertools.pairwise(first):
        if a[0] == b[0]:
            return a[0]
    pytest.skip("no two random ids share a first digit")


def test_concurrent_saves_from_threads(tmp_path: Path) -> None:
    result = sample_run()
    path = tmp_path / "r.sqlite3"
    ids: list[str] = []

    def worker() -> None:
        with RunStore(path) as store:
            for _ in range(5):
                ids.append(store.save(result))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(ids)) == 20
    with RunStore(path) as store:
        assert len(store.list_runs(100)) == 20


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, I am not a database" * 100)
    with pytest.raises(UsageError, match="cannot be used as a dagcall run store"):
        RunStore(bad)
    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE mine (x)")
    db.commit()
    db.close()
    with pytest.raises(UsageError, match="unknown schema"):
        RunStore(other)


def test_default_path_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "d"))
    assert default_path() == tmp_path / "d" / "runs.sqlite3"


def test_a_run_can_be_saved_under_a_given_id(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite3") as store:
        assert store.save(sample_run(), run_id="00c0ffee0000") == "00c0ffee0000"
        assert store.load("00c0ffee").id == "00c0ffee0000"
        with pytest.raises(UsageError, match="already has a run 00c0ffee0000"):
            store.save(sample_run(), run_id="00c0ffee0000")
        for bad in ("", "XYZ", "0" * 33, "../x"):
            with pytest.raises(UsageError, match="1 to 32 lower-case hex digits"):
                store.save(sample_run(), run_id=bad)
        assert len(store.list_runs()) == 1
