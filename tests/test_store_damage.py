"""A damaged run store keeps every run SQLite can still read, and says what is wrong.

Damage is made the way it happens: bytes overwritten in the middle of the file (whole pages,
random offsets), and rows whose stored JSON or columns hold garbage.  Every command either
works or fails in one line, never with a traceback, and a run whose row can still be read
by SQLite stays listed and shown.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagcall import RunResult, StopReason, TaskRecord, TaskStatus
from dagcall.cli import main
from dagcall.store import RunStore, StoredRun, read_run
from dagcall.viz import build_timeline, mermaid, plot_timeline
from runs import sample_run

RUNS = 12


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store of RUNS runs (some with long answers, so rows spill onto overflow pages)."""
    path = tmp_path_factory.mktemp("pristine") / "runs.sqlite3"
    result = sample_run()
    ids = []
    with RunStore(path) as store:
        for n in range(RUNS):
            result.answer = f"answer {n} " + "x" * (3000 * (n % 3))
            ids.append(store.save(result, planner="p", joiner="j"))
    return path, ids


@pytest.fixture
def store(
    pristine: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[str]]:
    """A fresh copy of the pristine store as the CLI's store."""
    data = tmp_path / "data"
    data.mkdir()
    path = data / "runs.sqlite3"
    shutil.copy(pristine[0], path)
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(data))
    monkeypatch.setenv("DAGCALL_MODEL", "openai:x@http://127.0.0.1:9/v1")  # never the local one
    return path, pristine[1]


def readable_by_sqlite(path: Path, ids: list[str]) -> set[str]:
    """The runs plain SQLite can still read whole, by row id: the oracle."""
    found = set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.text_factory = bytes
    try:
        for rowid, run_id in enumerate(ids, start=1):
            try:
                row = db.execute(
                    "SELECT id, result_json FROM runs WHERE rowid = ?", (rowid,)
                ).fetchone()
            except sqlite3.Error:
                continue
            if row is None or row[0] != run_id.encode():
                continue
            try:
                if isinstance(json.loads(row[1]), dict):
                    found.add(run_id)
            except ValueError:
                continue
    except sqlite3.Error:
        return set()
    finally:
        db.close()
    return found


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run a command; check it worked or failed in exactly one line, without a traceback."""
    code = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out, captured.err
    if code != 0:
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("error: "), lines[0]
    return code, captured.out, captured.err


def page_of(path: Path, name: str, kind: str = "%") -> list[int]:
    """The pages of a table or index (``kind``: internal, leaf or overflow)."""
    db = sqlite3.connect(path)
    try:
        query = "SELECT pageno FROM dbstat WHERE name = ? AND pagetype LIKE ? ORDER BY pageno"
        return [p for (p,) in db.execute(query, (name, kind))]
    finally:
        db.close()


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(data)


# -- whole pages -------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["runs", "sqlite_autoindex_runs_1", "runs_created", "tasks"])
def test_each_damaged_page_loses_only_its_rows(
    table: str,
    store: tuple[Path, list[str]],
    pristine: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, ids = store
    pages = page_of(pristine[0], table)
    assert pages
    for page in pages:
        shutil.copy(pristine[0], path)
        overwrite(path, (page - 1) * 4096 + 8, b"\xa5" * 1500)
        oracle = readable_by_sqlite(path, ids)
        code, out, err = run_cli(["runs", "-n", "100"], capsys)
        listed = {line.split()[0] for line in out.splitlines() if line.strip()}
        assert oracle <= listed, (table, page)
        if code != 0:  # damage SQLite noticed: it says what and how to recover
            assert str(path) in err
            assert ".recover" in err
            assert "could not be read" in err
        for run_id in ids:
            code, out, err = run_cli(["show", run_id], capsys)
            if run_id in oracle:
                assert code == 0, (table, page, err)
                assert "A: answer" in out


def test_a_damaged_table_page_is_reported_with_a_count(
    store: tuple[Path, list[str]],
    pristine: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, ids = store
    leaves = page_of(pristine[0], "runs", "leaf")
    leaf = leaves[len(leaves) // 2]
    overwrite(path, (leaf - 1) * 4096, b"\x0d\x00\x00\xff\xff" + b"\xee" * 4091)
    with RunStore(path, create=False) as opened:
        listing = opened.scan(100)
    assert listing.damage is not None
    assert listing.unreadable is not None
    assert 0 < listing.unreadable < RUNS
    assert len(listing.runs) + listing.unreadable == RUNS
    code, out, err = run_cli(["runs", "-n", "100"], capsys)
    assert code == 1
    assert f"{listing.unreadable} run" in err
    assert len(out.splitlines()) == len(listing.runs)
    good = listing.runs[0].id
    for command in (["show", good], ["graph", good], ["show", good, "--json"]):
        assert run_cli(command, capsys)[0] == 0
    bad = sorted(set(ids) - {s.id for s in listing.runs})[0]
    code, _, err = run_cli(["show", bad], capsys)
    assert code != 0
    assert "damaged" in err


def test_a_damaged_first_page_says_how_to_recover(
    store: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = store
    overwrite(path, 0, b"garbage garbage!")
    for args in (["runs"], ["show", ids[0]], ["graph", ids[0]]):
        code, _, err = run_cli(args, capsys)
        assert code != 0
        assert str(path) in err
        assert ".recover" in err
        assert "move" in err


# -- random bytes at random offsets ------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    damage=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=600)),
        min_size=1,
        max_size=4,
    )
)
def test_random_damage_never_a_traceback_and_readable_runs_stay_readable(
    damage: list[tuple[float, bytes]],
    store: tuple[Path, list[str]],
    pristine: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, ids = store
    shutil.copy(pristine[0], path)
    size = path.stat().st_size
    for where, data in damage:
        overwrite(path, int(where * size), data)
    oracle = readable_by_sqlite(path, ids)
    code, out, _ = run_cli(["runs", "-n", "100"], capsys)
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert oracle <= listed
    for run_id in ids:
        code, _, _ = run_cli(["show", run_id], capsys)
        if run_id in oracle:
            assert code == 0
    for run_id in sorted(oracle)[:2]:
        assert run_cli(["graph", run_id], capsys)[0] == 0
        assert run_cli(["show", run_id, "--json"], capsys)[0] == 0
    # A save either works or fails with a UsageError naming the file, nothing else.
    failure = _save_failure(path)
    assert failure is None or str(path) in failure


def _save_failure(path: Path) -> str | None:
    from dagcall import UsageError

    try:
        with RunStore(path) as opened:
            opened.save(sample_run())
    except UsageError as exc:
        return exc.message
    return None


# -- rows with garbage in them -----------------------------------------------------------------


def _set(path: Path, run_id: str, column: str, value: object) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(f"UPDATE runs SET {column} = ? WHERE id = ?", (value, run_id))  # noqa: S608
        db.commit()
    finally:
        db.close()


GARBAGE_JSON: list[object] = [
    "{not json",
    "",
    "[1, 2, 3]",
    "null",
    '"a string"',
    "[" * 100_000,
    b"\xff\xfe\x00binary",
    json.dumps({"tasks": "nope", "rounds": [1, None, "x"], "usage": {"a": 1}}),
]


@pytest.mark.parametrize("garbage", range(len(GARBAGE_JSON)))
def test_a_row_with_garbage_json(
    garbage: int, store: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = store
    bad, good = ids[0], ids[1]
    value = GARBAGE_JSON[garbage]
    _set(path, bad, "result_json", value)
    code, out, _ = run_cli(["runs", "-n", "100"], capsys)
    assert code == 0
    assert len(out.splitlines()) == RUNS
    for command in ("show", "graph"):
        assert run_cli([command, good], capsys)[0] == 0
    assert run_cli(["plot", good, "-o", str(tmp_path / "good.png")], capsys)[0] == 0
    loads_as_a_dict = isinstance(value, str) and value.startswith("{")
    try:
        loads_as_a_dict = isinstance(json.loads(value), dict)  # type: ignore[arg-type]
    except (ValueError, TypeError, RecursionError):
        loads_as_a_dict = False
    code, _, err = run_cli(["show", bad], capsys)
    if loads_as_a_dict:  # valid JSON, odd values: shown as far as it goes
        assert code == 0, err
        assert run_cli(["graph", bad], capsys)[0] == 0
        assert run_cli(["plot", bad, "-o", str(tmp_path / "bad.png")], capsys)[0] == 0
    else:
        assert code != 0
        assert bad in err
        assert "cannot be read" in err


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("question", b"\xff\xfe invalid utf-8"),
        ("question", b""),
        ("answer", 12345),
        ("wall_time", "fast"),
        ("wall_time", b"\x00\x01"),
        ("llm_calls", "many"),
        ("created_at", 7),
        ("id", b"\xffbinary id"),
    ],
)
def test_odd_column_values_are_listed(
    column: str, value: object, store: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = store
    db = sqlite3.connect(path)
    try:  # past the NOT NULL constraints, as damage would be
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            f"UPDATE runs SET {column} = ? WHERE id = ?",  # noqa: S608
            (value, ids[0]),
        )
        db.commit()
    except sqlite3.IntegrityError:
        pytest.skip(f"SQLite will not store {value!r} in {column}")
    finally:
        db.close()
    code, out, err = run_cli(["runs", "-n", "100"], capsys)
    if column == "id":  # a row without a run id cannot be a run: it is counted as damage
        assert code == 1
        assert "1 run could not be read" in err
        assert len(out.splitlines()) == RUNS - 1
    else:
        assert code == 0
        assert len(out.splitlines()) == RUNS
    assert run_cli(["show", ids[1]], capsys)[0] == 0


# -- values SQLite cannot hold -------------------------------------------------------------------


def test_ints_beyond_64_bits_nan_and_surrogates_are_saved(tmp_path: Path) -> None:
    result = sample_run()
    big = [2**64 + 1, 2**64 + 2, -(2**70)]
    for task, new_id in zip(result.tasks, big, strict=False):
        task.id = new_id
    result.question = "q \ud800 \udcff"
    result.answer = "a \udfff"
    result.wall_time = math.nan
    result.tasks[0].started_at = math.inf
    with RunStore(tmp_path / "r.sqlite3") as store:
        run_id = store.save(result, planner="p\ud800", joiner="j")
        loaded = store.load(run_id)
        (summary,) = store.list_runs()
    assert [t.id for t in loaded.tasks][:3] == big
    assert loaded.repairs == []
    assert summary.question == "q \ufffd \ufffd"
    db = sqlite3.connect(tmp_path / "r.sqlite3")
    try:
        ids = [i for (i,) in db.execute("SELECT CAST(id AS TEXT) FROM tasks ORDER BY rowid")]
    finally:
        db.close()
    assert ids[:3] == [str(i) for i in big]
    assert mermaid(loaded).startswith("flowchart TD")


def test_a_store_locked_past_its_timeout(tmp_path: Path) -> None:
    from dagcall import UsageError

    path = tmp_path / "r.sqlite3"
    with RunStore(path) as store:
        run_id = store.save(sample_run())
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE runs SET answer = 'x'")
        with (
            pytest.raises(UsageError, match="locked by another process"),
            RunStore(path, timeout=0.1) as store,
        ):
            store.load(run_id)
    finally:
        holder.close()
    with RunStore(path, timeout=0.1) as store:  # free again
        assert store.load(run_id).id == run_id


# -- rendering whatever a damaged run holds --------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELD_VALUE = JSON | st.sampled_from(["done", "failed", "abandoned", "whatever", "$1 <b>"])
TASK = st.fixed_dictionaries(
    {},
    optional={
        name: FIELD_VALUE
        for name in (
            "id",
            "call",
            "status",
            "deps",
            "output",
            "error",
            "started_at",
            "ended_at",
            "ready_at",
        )
    },
)
CALL = st.fixed_dictionaries(
    {},
    optional={
        name: FIELD_VALUE
        for name in ("role", "model", "round", "started_at", "ended_at", "time_to_first_token")
    },
)
ROUND = st.fixed_dictionaries(
    {}, optional={name: FIELD_VALUE for name in ("index", "plan", "task_ids", "decision")}
)
RUN = st.fixed_dictionaries(
    {},
    optional={
        "question": FIELD_VALUE,
        "answer": FIELD_VALUE,
        "wall_time": FIELD_VALUE,
        "tasks": st.lists(TASK | JSON, max_size=5) | JSON,
        "usage": st.lists(CALL | JSON, max_size=3) | JSON,
        "rounds": st.lists(ROUND | JSON, max_size=3) | JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(run=RUN | JSON)
def test_any_damaged_run_reads_as_a_typed_run_and_gives_a_graph(run: Any) -> None:
    typed, repairs = read_run(run, StoredRun)
    assert isinstance(typed, StoredRun)
    ids = {t.id for t in typed.tasks}
    for task in typed.tasks:
        assert type(task.id) is int
        assert isinstance(task.call, str)
        assert isinstance(task.status, TaskStatus)
        assert task.started_at is None or math.isfinite(task.started_at)
        assert all(type(d) is int for d in task.deps)
    for rnd in typed.rounds:
        assert all(type(i) is int for i in rnd.task_ids)
    assert all(c.task_id is None or type(c.task_id) is int for c in typed.usage)
    assert isinstance(typed.stop_reason, StopReason)
    if repairs:  # what was repaired is said, and the typed run writes strict JSON
        assert all(isinstance(r, str) and r for r in repairs)
    again, more = read_run(json.loads(typed.to_json()), StoredRun)
    assert more == []  # what it wrote reads back exactly
    assert again.to_json() == typed.to_json()
    assert {t.id for t in again.tasks} == ids
    text = mermaid(run)
    assert text.startswith("flowchart TD\n")
    for line in text.splitlines()[1:]:
        assert line.startswith("  "), line


@settings(max_examples=15, deadline=None)
@given(run=RUN)
def test_any_damaged_run_gives_a_timeline(run: Any) -> None:
    fig, bars = build_timeline(run)
    assert bars == len(fig.axes[0].get_yticklabels())
    with tempfile.TemporaryDirectory() as folder:
        assert plot_timeline(run, Path(folder) / "t.png") == bars


def test_unknown_and_abandoned_statuses_are_drawn(tmp_path: Path) -> None:
    result = RunResult(question="q", wall_time=1.0)
    for n in range(1, 5):
        record = TaskRecord(id=n, tool="t", call=f"t({n})", round=0)
        record.status = TaskStatus.DONE
        record.started_at, record.ended_at = 0.1 * n, 0.1 * n + 0.05
        result.tasks.append(record)
    result.rounds = []
    run = result.to_dict()
    for task, status in zip(run["tasks"], ["done", "abandoned", "made up", ""], strict=True):
        task["status"] = status
    run["rounds"] = [{"index": 0, "task_ids": [1, 2, 3, 4], "decision": "finish"}]
    text = mermaid(run)
    assert ":::abandoned" in text
    assert "classDef abandoned" in text
    # statuses this version does not know are read as failed, and the reading says so
    assert text.count(":::failed") == 2
    typed, repairs = read_run(run)
    assert [str(t.status) for t in typed.tasks] == ["done", "abandoned", "failed", "failed"]
    assert any("'made up' is not known" in r for r in repairs), repairs
    assert plot_timeline(run, tmp_path / "s.png") == 4
