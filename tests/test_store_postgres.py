"""The run store on a real PostgreSQL server (started by pg_server.py for the session)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import pg_server
from dagcall import RunResult, UsageError
from dagcall.cli import main
from dagcall.store import (
    PostgresRunStore,
    RunNotFoundError,
    RunStore,
    Store,
    StoreConnectionError,
    open_store,
    store_location,
)
from openai_server import FakeOpenAIServer, Stream
from pg_server import PASSWORD, PostgresServer
from runs import sample_run
from test_cli import ANSWER, PLAN, TOOLS_FILE, model_flag
from test_service import TOKEN, body, compiler, events, serving, start

# The session's PostgreSQL server and a new database for each test (tests/pg_server.py).
postgres_server = pg_server.postgres_server
pg_url = pg_server.pg_url

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def result() -> RunResult:
    return sample_run()


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("id", "created_at")}


def _sql(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    import psycopg  # the postgres extra: without it, the server fixture skips these tests

    with psycopg.connect(url, autocommit=True) as db:
        cur = db.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


# -- the store ------------------------------------------------------------------------------------


def test_a_run_reads_back_as_the_sqlite_store_reads_it(
    pg_url: str, tmp_path: Path, result: RunResult
) -> None:
    with open_store(pg_url) as pg, RunStore(tmp_path / "runs.sqlite3") as lite:
        assert isinstance(pg, PostgresRunStore)
        assert isinstance(pg, Store)
        assert isinstance(lite, Store)
        pg_id = pg.save(result, planner="scripted", joiner="scripted")
        lite_id = lite.save(result, planner="scripted", joiner="scripted")
        from_pg = pg.load(pg_id[:5])  # a unique prefix is enough
        from_lite = lite.load(lite_id)
        (summary,) = pg.list_runs()
    assert _comparable(from_pg.to_dict()) == _comparable(from_lite.to_dict())
    assert json.loads(from_pg.to_json())["answer"] == 'c = "value of c"'
    expected = json.loads(result.to_json())
    data = from_pg.to_dict()
    assert {k: data[k] for k in expected} == expected
    assert from_pg.id == pg_id
    assert from_pg.planner == "scripted"
    assert from_pg.repairs == []
    assert [type(t.error) for t in from_pg.tasks] == [type(t.error) for t in result.tasks]
    assert summary.id == pg_id
    assert (summary.llm_calls, summary.input_tokens) == (4, result.input_tokens)
    assert summary.created_at == from_pg.created_at
    # the same normalised tables as SQLite's, queryable with SQL
    rows = _sql(pg_url, "SELECT id, status, error FROM tasks WHERE run_id = %s ORDER BY id", pg_id)
    assert [(int(r[0]), r[1]) for r in rows] == [
        (1, "done"),
        (2, "done"),
        (3, "done"),
        (4, "failed"),
        (5, "skipped"),
        (7, "done"),
    ]
    assert "backend down" in rows[3][2]
    roles = _sql(
        pg_url,
        "SELECT role, count(*) FROM llm_calls WHERE run_id = %s GROUP BY role ORDER BY role",
        pg_id,
    )
    assert roles == [("joiner", 2), ("planner", 2)]
    assert _sql(pg_url, "SELECT max(version) FROM dagcall_migrations") == [(1,)]


def test_prefixes_ambiguity_delete_list_and_scan(pg_url: str, result: RunResult) -> None:
    with open_store(pg_url) as store:
        ids = [store.save(result) for _ in range(20)]
        with pytest.raises(RunNotFoundError, match="no saved run"):
            store.load("ffffffffffff" if "ffffffffffff" not in ids else "000000000000")
        with pytest.raises(RunNotFoundError, match="ambiguous"):
            store.load(_shared_prefix(ids))
        with pytest.raises(RunNotFoundError, match="hex digits"):
            store.load("not-an-id")
        with pytest.raises(RunNotFoundError, match="hex digits"):
            store.load("")
        # newest first: saved in the same second, the last saved comes first
        assert [s.id for s in store.list_runs(5)] == ids[::-1][:5]
        listing = store.scan(100)
        assert (listing.unreadable, listing.damage) == (0, None)
        assert [s.id for s in listing.runs] == ids[::-1]
        victim = ids[3]
        store.delete(victim[:8])
        assert victim not in {s.id for s in store.list_runs(100)}
        assert len(store.list_runs(100)) == 19
        with pytest.raises(RunNotFoundError):
            store.load(victim)
        assert _sql(pg_url, "SELECT count(*) FROM tasks WHERE run_id = %s", victim) == [(0,)]
        assert store.list_runs(0) == []


def _shared_prefix(ids: list[str]) -> str:
    first = sorted(ids)
    for a, b in itertools.pairwise(first):
        if a[0] == b[0]:
            return a[0]
    pytest.skip("no two random ids share a first digit")


def test_a_taken_run_id_and_bad_ids_are_usage_errors(pg_url: str, result: RunResult) -> None:
    with open_store(pg_url) as store:
        assert store.save(result, run_id="00c0ffee0000") == "00c0ffee0000"
        assert store.load("00c0ffee").id == "00c0ffee0000"
        with pytest.raises(UsageError, match="already has a run 00c0ffee0000"):
            store.save(result, run_id="00c0ffee0000")
        for bad in ("", "XYZ", "0" * 33, "../x"):
            with pytest.raises(UsageError, match="1 to 32 lower-case hex digits"):
                store.save(result, run_id=bad)
        assert len(store.list_runs()) == 1
    # the refused save left nothing half-written
    assert _sql(pg_url, "SELECT count(*) FROM tasks") == [(6,)]


def test_a_newer_or_unknown_schema_is_refused(pg_url: str, postgres_server: PostgresServer) -> None:
    with open_store(pg_url):
        pass
    _sql(pg_url, "INSERT INTO dagcall_migrations (version) VALUES (2)")
    for create in (True, False):
        with pytest.raises(UsageError, match=r"newer dagcall \(store schema 2; this version"):
            open_store(pg_url, create=create)
    other = postgres_server.create_database()
    _sql(other, "CREATE TABLE runs (x int)")
    with pytest.raises(UsageError, match="unknown schema"):
        open_store(other)


def test_reading_a_database_without_tables_creates_nothing(pg_url: str) -> None:
    with open_store(pg_url, create=False) as store:
        assert store.list_runs() == []
        with pytest.raises(RunNotFoundError, match="no saved run"):
            store.load("abc")
        with pytest.raises(UsageError, match="opened for reading only"):
            store.save(sample_run())
    assert _sql(pg_url, "SELECT to_regclass('runs'), to_regclass('dagcall_migrations')") == [
        (None, None)
    ]


def test_the_store_survives_the_server_dropping_its_connection(
    pg_url: str, result: RunResult
) -> None:
    with open_store(pg_url) as store:
        first = store.save(result)
        killed = _sql(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'dagcall' AND pid <> pg_backend_pid()",
        )
        assert killed == [(True,)]
        assert [s.id for s in store.list_runs()] == [first]  # reconnected
        second = store.save(result)
        assert {s.id for s in store.list_runs()} == {first, second}
    with pytest.raises(UsageError, match="is closed"):
        store.list_runs()


def test_a_forked_child_opens_its_own_connection(pg_url: str, result: RunResult) -> None:
    with open_store(pg_url) as store:
        first = store.save(result)
        pid = os.fork()
        if pid == 0:  # the child: save through the parent's store object, then leave at once
            code = 1
            try:
                store.save(result, run_id="0000f0f0")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent's connection was left alone
        assert {s.id for s in store.list_runs()} == {first, "0000f0f0"}


def test_threads_share_one_store(pg_url: str, result: RunResult) -> None:
    ids: list[str] = []
    with open_store(pg_url) as store:

        def worker() -> None:
            for _ in range(5):
                ids.append(store.save(result))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(set(ids)) == 20
        assert {s.id for s in store.list_runs(100)} == set(ids)


# -- choosing the store ----------------------------------------------------------------------------


def test_open_store_takes_a_path_a_url_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGCALL_STORE", raising=False)
    assert store_location() == tmp_path / "data" / "runs.sqlite3"
    assert store_location(tmp_path / "a.sqlite3") == tmp_path / "a.sqlite3"
    assert store_location("postgres://h/db") == "postgres://h/db"
    assert store_location("POSTGRESQL://h/db") == "POSTGRESQL://h/db"
    with open_store(str(tmp_path / "b.sqlite3")) as store:
        assert isinstance(store, RunStore)
        assert store.location == str(tmp_path / "b.sqlite3")
    monkeypatch.setenv("DAGCALL_STORE", str(tmp_path / "env.sqlite3"))
    with open_store() as store:
        assert isinstance(store, RunStore)
        assert store.location == str(tmp_path / "env.sqlite3")
    monkeypatch.setenv("DAGCALL_STORE", "postgresql://u@127.0.0.1:9/db")
    assert store_location(None) == "postgresql://u@127.0.0.1:9/db"
    assert store_location(str(tmp_path / "c.sqlite3")) == tmp_path / "c.sqlite3"  # given wins
    with pytest.raises(UsageError, match=r"mysql://… is not supported"):
        open_store("mysql://u:pw@h/db")


def test_importing_dagcall_needs_no_driver_and_a_missing_one_says_which_extra() -> None:
    code = (
        "import sys\n"
        "import dagcall, dagcall.store, dagcall.cli\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
        "sys.modules['psycopg'] = None\n"
        "from dagcall import UsageError\n"
        "try:\n"
        "    dagcall.store.open_store('postgresql://u:pw@127.0.0.1:9/db')\n"
        "except UsageError as exc:\n"
        "    print(exc.message)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'dagcall[postgres]'" in done.stdout


def test_connection_failures_are_typed_and_keep_the_password(
    postgres_server: PostgresServer,
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    wrong_port = f"postgresql://dagcall:{PASSWORD}@127.0.0.1:{closed_port}/postgres"
    with pytest.raises(StoreConnectionError) as down:
        open_store(wrong_port)
    assert f"127.0.0.1:{closed_port}" in down.value.message
    assert "cannot be reached" in down.value.message
    wrong_password = postgres_server.url(password="not-" + PASSWORD)
    with pytest.raises(StoreConnectionError) as refused:
        open_store(wrong_password)
    assert "password authentication failed" in refused.value.message
    with pytest.raises(UsageError) as bad_url:
        open_store(postgres_server.url() + "?bogus_option=" + PASSWORD)
    assert "not a PostgreSQL URL" in bad_url.value.message
    for error in (down.value, refused.value, bad_url.value):
        assert PASSWORD not in str(error)
        assert PASSWORD not in repr(error.args)


# -- the command line and the service ------------------------------------------------------------


def test_runs_and_show_read_the_postgres_store(
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    result: RunResult,
) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGCALL_STORE", raising=False)
    with open_store(pg_url) as store:
        run_id = store.save(result, planner="p", joiner="j")
    assert main(["runs", "--store", pg_url]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith(run_id)
    assert 'What is "c" <really>?' in listing
    assert main(["show", run_id[:6], "--store", pg_url]) == 0
    shown = capsys.readouterr().out
    assert 'fetch("broken")' in shown
    assert PASSWORD not in listing + shown
    monkeypatch.setenv("DAGCALL_STORE", pg_url)
    assert main(["show", run_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == run_id
    assert data["answer"] == 'c = "value of c"'
    assert main(["show", "abcdef"]) == 2
    assert "no saved run abcdef" in capsys.readouterr().err
    # the local file is untouched by all this
    assert not (tmp_path / "data").exists()


def test_ask_save_writes_to_the_postgres_store(
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    openai_server: FakeOpenAIServer,
) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGCALL_STORE", raising=False)
    tools = tmp_path / "my_tools.py"
    tools.write_text(TOOLS_FILE)
    args = ["ask", "What is a + b?", "--tools", str(tools), "-m", model_flag(openai_server)]
    openai_server.script(Stream(PLAN, usage=(400, 30)), Stream(ANSWER, usage=(200, 10)))
    assert main([*args, "--save", "--json", "--store", pg_url]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    openai_server.script(Stream(PLAN, usage=(400, 30)), Stream(ANSWER, usage=(200, 10)))
    monkeypatch.setenv("DAGCALL_STORE", pg_url)
    assert main([*args, "--save", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["run_id"]
    with open_store(pg_url) as store:
        assert {s.id for s in store.list_runs()} == {run_id, second}
        assert store.load(run_id).answer == "5.0"
    assert not (tmp_path / "data").exists()
    # a store that cannot be reached: the answer is printed, then the failure, no password
    openai_server.script(Stream(PLAN, usage=(400, 30)), Stream(ANSWER, usage=(200, 10)))
    down = pg_url.replace(pg_url.split("@", 1)[1].split("/", 1)[0], "127.0.0.1:9")
    assert down != pg_url
    assert main([*args, "--save", "--store", down]) != 0
    captured = capsys.readouterr()
    assert "A: 5.0" in captured.out
    assert "the run was not saved" in captured.err
    assert "cannot be reached" in captured.err
    assert PASSWORD not in captured.out + captured.err


def test_serve_opens_the_store_its_url_names(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagcall.service

    opened: dict[str, Any] = {}

    def fake_serve(compiler: Any, **kw: Any) -> None:
        opened.update(kw)

    monkeypatch.setattr(dagcall.service, "serve", fake_serve)
    model = ["-m", "openai:x@http://127.0.0.1:9/v1", "--tool", "calculator"]
    assert main(["serve", "--store", pg_url, *model]) == 0
    store = opened["store"]
    assert isinstance(store, PostgresRunStore)
    store.close()
    monkeypatch.setenv("DAGCALL_STORE", pg_url)
    assert main(["serve", *model]) == 0
    assert isinstance(opened["store"], PostgresRunStore)
    opened["store"].close()


def test_the_service_saves_its_runs_to_postgres(pg_url: str) -> None:
    with (
        open_store(pg_url) as store,
        serving(
            __import__("dagcall.service", fromlist=["create_app"]).create_app(
                compiler(), store=store, token=TOKEN
            )
        ) as running,
    ):
        with running.client() as client:
            run_id = start(client, "add 2 3")
            got = events(client, run_id)
            record = client.get(f"/v1/runs/{run_id}").json()
            listing = client.get("/v1/runs").json()["runs"]
        final = body(got[-1])
        assert final["stored_id"] == run_id
        assert record["stored_id"] == run_id
        assert listing[0]["stored_id"] == run_id
    # another replica (a new connection) sees the run
    with open_store(pg_url, create=False) as other:
        stored = other.load(run_id)
    assert (stored.question, stored.answer) == ("add 2 3", "5")


# -- several processes writing at once -------------------------------------------------------------

WORKER = """
import json, sys, time
from pathlib import Path
from dagcall import RunResult, UsageError
from dagcall.store import open_store

url, count, folder, name = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
result = RunResult.model_validate_json((folder / "run.json").read_text())
(folder / f"{name}.ready").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
with open_store(url) as store:  # a new database: every worker creates the schema at once
    try:
        store.save(result, run_id="0000000000aa")
        claimed = True
    except UsageError as exc:
        assert "already has a run" in exc.message, exc.message
        claimed = False
    ids = [store.save(result, planner=name) for _ in range(count)]
print(json.dumps({"ids": ids, "claimed": claimed, "run": json.loads(result.to_json())}))
"""


@pytest.mark.slow
def test_concurrent_writers_from_several_processes_lose_nothing(
    pg_url: str, tmp_path: Path, result: RunResult
) -> None:
    workers, saves = 4, 25
    (tmp_path / "run.json").write_text(result.to_json())  # the real run each worker saves
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, pg_url, str(saves), str(tmp_path), f"w{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.ready"))) < workers:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.02)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * workers, [err for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    ids = [i for r in reports for i in r["ids"]]
    assert len(ids) == len(set(ids)) == workers * saves
    assert sum(r["claimed"] for r in reports) == 1  # one process got the contested id
    with open_store(pg_url, create=False) as store:
        listed = {s.id for s in store.list_runs(1000)}
        assert listed == {*ids, "0000000000aa"}
        for report in reports:  # every run intact: what its worker saved
            for run_id in report["ids"]:
                loaded = store.load(run_id)
                assert loaded.repairs == []
                data = loaded.to_dict()
                assert {k: data[k] for k in report["run"]} == report["run"]
    runs_total = workers * saves + 1
    assert _sql(pg_url, "SELECT count(*) FROM tasks") == [(6 * runs_total,)]
    assert _sql(pg_url, "SELECT count(*) FROM llm_calls") == [(4 * runs_total,)]
    assert _sql(pg_url, "SELECT count(*) FROM rounds") == [(2 * runs_total,)]
    assert _sql(pg_url, "SELECT count(*) FROM dagcall_migrations") == [(1,)]
