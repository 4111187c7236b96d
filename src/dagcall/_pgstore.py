"""The run store on a PostgreSQL server, so service replicas and batch workers share runs.

:class:`PostgresRunStore` does what the SQLite :class:`~dagcall.store.RunStore` does, with the
same tables and columns (``runs``, ``rounds``, ``tasks``, ``llm_calls``) and the same
:data:`~dagcall._store.SCHEMA_VERSION`; open it with a URL (``postgresql://user:password@host/db``,
or ``postgres://``), usually through :func:`~dagcall.store.open_store`.  It needs psycopg 3
(``pip install 'dagcall[postgres]'``), imported only when a store is opened.

The schema's version is kept in ``dagcall_migrations`` (one row per version applied); the
store brings an older schema up to date under a transaction-scoped advisory lock, so several
processes starting at once create it once, and refuses a newer one.  The column types are
PostgreSQL's: SQLite's INTEGER columns are NUMERIC here (exact at any size, ``NaN`` for a
number too long to write), REAL is DOUBLE PRECISION (NaN as it is), and SQLite's implicit
``rowid`` is an identity column of ``runs`` (the order runs were saved in).  Text cannot hold
NUL characters in PostgreSQL: they are stored as U+FFFD, like lone surrogates; ``result_json``
keeps every value exactly (JSON escapes both).

Each save is one transaction; the connection is shared by the store's threads (one at a time)
and opened again after the server dropped it.  Connection failures are
:class:`~dagcall.store.StoreConnectionError`, other failures :class:`~dagcall.UsageError`;
messages name the server, never the password.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import UsageError
from ._result import RunResult, observation_text
from ._store import (
    SCHEMA_VERSION,
    RunListing,
    RunNotFoundError,
    RunSummary,
    StoreConnectionError,
    StoredRun,
    _clean,
    _is_run_id,
    _new_run_id,
    _run_data,
    _run_records,
    _short,
    _stored_run,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["ADVISORY_LOCK", "CONNECT_TIMEOUT", "PostgresRunStore", "display_url"]

T = TypeVar("T")

#: Seconds to wait for the server to accept a connection (unless the URL says
#: ``connect_timeout``).
CONNECT_TIMEOUT = 10
#: The key of the advisory lock held while the schema is created or migrated ("dagcall").
ADVISORY_LOCK = int.from_bytes(b"dagcall", "big")
#: Python cannot write an int longer than this as digits (sys.int_info's default limit).
_NUMERIC_LIMIT = 10**4000

_SCHEMA_V1 = """
CREATE TABLE runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    created_at TEXT COLLATE "C" NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    stop_reason TEXT NOT NULL,
    wall_time DOUBLE PRECISION NOT NULL,
    planner TEXT NOT NULL,
    joiner TEXT NOT NULL,
    input_tokens NUMERIC NOT NULL,
    output_tokens NUMERIC NOT NULL,
    llm_calls NUMERIC NOT NULL,
    tasks_done NUMERIC NOT NULL,
    tasks_failed NUMERIC NOT NULL,
    result_json TEXT NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX runs_created ON runs (created_at, rowid);
CREATE TABLE rounds (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx NUMERIC NOT NULL,
    plan TEXT NOT NULL,
    joiner_output TEXT NOT NULL,
    decision TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE tasks (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id NUMERIC NOT NULL,
    round NUMERIC NOT NULL,
    tool TEXT NOT NULL,
    call TEXT NOT NULL,
    deps TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    parsed_at DOUBLE PRECISION,
    ready_at DOUBLE PRECISION,
    started_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE llm_calls (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq NUMERIC NOT NULL,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    round NUMERIC NOT NULL,
    task_id NUMERIC,
    input_tokens NUMERIC NOT NULL,
    output_tokens NUMERIC NOT NULL,
    estimated NUMERIC NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION NOT NULL,
    time_to_first_token DOUBLE PRECISION,
    PRIMARY KEY (run_id, seq)
)
"""
#: The statements that bring the schema from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}
assert max(MIGRATIONS) == SCHEMA_VERSION  # noqa: S101 - a new version needs its migration

# Each column's kind, in the tables' order: T text, R real, I integer.
_RUNS = "TTTTTRTTIIIIIT"
_ROUNDS = "TITTT"
_TASKS = "TIITTTTTTRRRR"
_CALLS = "TITTIIIIIRRR"
_RUNS_COLUMNS = (
    "id, created_at, question, answer, stop_reason, wall_time, planner, joiner, input_tokens, "
    "output_tokens, llm_calls, tasks_done, tasks_failed, result_json"
)
_SUMMARY_COLUMNS = (
    "id, created_at, question, answer, wall_time, llm_calls, input_tokens, output_tokens"
)


def _driver() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise UsageError(
            "the PostgreSQL run store needs psycopg 3 (the postgres extra): "
            "pip install 'dagcall[postgres]'"
        ) from exc
    return psycopg


def display_url(url: str) -> str:
    """``url`` for messages: ``postgresql://user@host:port/db``, without the password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:  # no driver, or not a URL libpq reads: the query may hold a password
        scheme, _, rest = url.partition("://")
        base = re.split(r"[?#]", rest, maxsplit=1)[0]
        userinfo, at, server = base.rpartition("@")
        shown = f"{scheme}://{userinfo.split(':', 1)[0]}@{server}" if at else f"{scheme}://{base}"
        return shown + ("?…" if len(base) < len(rest) else "")
    user = parts.get("user")
    host = str(parts.get("host") or "")
    port = parts.get("port")
    netloc = ("[" + host + "]" if ":" in host and "," not in host else host) if host else ""
    if "/" in netloc:  # a socket folder: libpq's ?host= form
        netloc = ""
    if port and netloc:
        netloc += f":{port}"
    if user:
        netloc = f"{user}@{netloc}"
    shown = f"postgresql://{netloc}/{parts.get('dbname') or ''}"
    if "/" in host:
        shown += f"?host={host}"
    return shown


def _password_of(url: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(url).get("password")
    except Exception:
        found = re.match(r"^[^:]*://[^:@/]*:([^@/]*)@", url) or re.search(
            r"(?i)password=([^&]*)", url
        )
        password = found[1] if found else None
    return str(password) if password else None


# -- values in and out of PostgreSQL -------------------------------------------------------------


def _text(value: object) -> str | None:
    """Text PostgreSQL can store: no lone surrogates, no NUL characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else observation_text(value, None)
    return _clean(str(text)).replace("\x00", "\ufffd")


def _real(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str | bytes):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _integer(value: object) -> int | Decimal | None:
    """A NUMERIC value, exact where Python can write it (``NaN`` where it cannot)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        number = int(value)
        return number if -_NUMERIC_LIMIT < number < _NUMERIC_LIMIT else Decimal("NaN")
    if isinstance(value, float):
        return Decimal(value) if math.isfinite(value) else Decimal("NaN")
    if isinstance(value, str):
        try:
            return _integer(int(value))
        except ValueError:
            return Decimal("NaN")
    return Decimal("NaN")


_CONVERT = {"T": _text, "R": _real, "I": _integer}


def _row(kinds: str, values: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(_CONVERT[k](v) for k, v in zip(kinds, values, strict=True))


def _count(value: object) -> int:
    """A NUMERIC count read back (``NaN`` reads as 0)."""
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() else 0
    if isinstance(value, int):
        return value
    return 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float | Decimal) else math.nan


def _summary(row: tuple[Any, ...]) -> RunSummary:
    run_id, created, question, answer, wall, calls, tokens_in, tokens_out = row
    return RunSummary(
        id=str(run_id),
        created_at=str(created),
        question=str(question),
        answer=str(answer),
        wall_time=_float(wall),
        llm_calls=_count(calls),
        input_tokens=_count(tokens_in),
        output_tokens=_count(tokens_out),
    )


class PostgresRunStore:
    """Saved runs in a PostgreSQL database; safe to share between threads, processes and
    machines.

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/dbname?sslmode=require``;
    the ``PG*`` environment variables fill in what it leaves out).  ``create=False`` opens the
    store for reading without creating or changing anything (a database without the tables
    then reads as a store with no runs).  ``connect_timeout`` is how long to wait for the
    server (default :data:`CONNECT_TIMEOUT`, unless the URL gives one).
    """

    def __init__(
        self, url: str, *, create: bool = True, connect_timeout: float | None = None
    ) -> None:
        self.url = url
        self._shown = display_url(url)
        self._password = _password_of(url)
        self._psycopg = _driver()
        self._lock = threading.Lock()
        self._empty = False  # opened with create=False and there are no tables yet
        self._closed = False
        self._db: psycopg.Connection[tuple[Any, ...]] | None = None
        self._pid = os.getpid()
        try:
            from psycopg.conninfo import conninfo_to_dict

            given = conninfo_to_dict(url)
        except self._psycopg.Error as exc:
            raise UsageError(
                f"{self._shown} is not a PostgreSQL URL dagcall can use "
                f"({self._scrub(_short(str(exc)))}); write it as "
                "postgresql://user:password@host:port/dbname"
            ) from exc
        self._options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
            self._options["connect_timeout"] = max(1, math.ceil(timeout))
        if "application_name" not in given:
            self._options["application_name"] = "dagcall"
        with self._lock, self._failures("open"):
            try:
                self._migrate(create)
            except BaseException:
                self._close_quietly()
                raise

    # -- the connection --------------------------------------------------------------------
    @property
    def location(self) -> str:
        """The server and database, for messages (no password)."""
        return self._shown

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The open connection (called with the lock held), opened again if it was lost."""
        if self._closed:
            raise UsageError(f"the run store {self._shown} is closed")
        db = self._db
        if self._pid != os.getpid():  # a forked child: the parent's connection is not ours
            self._db = db = None  # (closing it would end the parent's session too)
            self._pid = os.getpid()
        if db is None or db.closed or db.broken:
            self._close_quietly()
            db = self._psycopg.connect(self.url, **self._options)
            self._db = db
        return db

    def _close_quietly(self) -> None:
        if self._db is not None:
            with suppress(Exception):
                self._db.close()
            self._db = None

    def _scrub(self, text: str) -> str:
        if self._password and len(self._password) >= 3:
            text = text.replace(self._password, "***")
        return text

    def _explain(self, exc: Exception, doing: str) -> UsageError:
        """One line: ``cannot {doing} the run store URL: what went wrong``, no password."""
        message = self._scrub(_short(str(exc), 400))
        head = f"cannot {doing} the run store {self._shown}"
        if isinstance(exc, self._psycopg.OperationalError) and (
            self._db is None or self._db.closed or self._db.broken
        ):
            return StoreConnectionError(
                f"{head}: the server cannot be reached or refused the connection ({message}); "
                "check that it is running and that the URL's host, port, user, password and "
                "database are right"
            )
        if isinstance(exc, self._psycopg.errors.InsufficientPrivilege):
            return UsageError(
                f"{head}: the server refused ({message}); the user needs the rights to create "
                "tables in the database (once) and to read and write them"
            )
        if isinstance(exc, self._psycopg.errors.ReadOnlySqlTransaction):
            return UsageError(f"{head}: the server is read-only ({message})")
        return UsageError(f"{head}: {type(exc).__name__}: {message}")

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise self._explain(exc, doing) from exc

    def _call(
        self,
        doing: str,
        step: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        again: Callable[[], bool] = lambda: True,
    ) -> T:
        """``step(connection)`` with the lock held; when the server had dropped the
        connection (a restart, an idle timeout) it is tried once more on a new one, if
        ``again()`` says that is safe (nothing can have been committed)."""
        with self._lock, self._failures(doing):
            db = self._connection()
            try:
                return step(db)
            except self._psycopg.OperationalError:
                if not db.broken or not again():
                    raise
            return step(self._connection())

    # -- the schema ------------------------------------------------------------------------
    def _version(self, db: psycopg.Connection[tuple[Any, ...]]) -> int | None:
        """The schema's version (``None``: there are no dagcall tables at all)."""
        # The catalog read with SQL (not to_regclass, whose cache may predate the lock):
        # after another process's migration, this statement's snapshot sees its tables.
        found = db.execute(
            "SELECT coalesce(bool_or(c.relname = 'dagcall_migrations'), false), "
            "coalesce(bool_or(c.relname = 'runs'), false) "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname IN ('dagcall_migrations', 'runs')"
        ).fetchone()
        assert found is not None  # noqa: S101 - an aggregate has a row
        has_versions, has_runs = bool(found[0]), bool(found[1])
        if not has_versions:
            if has_runs:
                raise UsageError(
                    f"{self._shown} cannot be used as a dagcall run store (unknown schema: it "
                    "has a table runs that dagcall did not make); use another database or "
                    "schema"
                )
            return None
        row = db.execute("SELECT max(version) FROM dagcall_migrations").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def _check_not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise UsageError(
                f"{self._shown} cannot be used as a dagcall run store (it was written by a "
                f"newer dagcall (store schema {version}; this version reads schema "
                f"{SCHEMA_VERSION}): upgrade dagcall, or use another database)"
            )

    def _migrate(self, create: bool) -> None:
        db = self._connection()
        version = self._version(db)
        if version == SCHEMA_VERSION:
            return
        if version is not None:
            self._check_not_newer(version)
        if not create:
            if version is None:
                self._empty = True
                return
            raise UsageError(
                f"the run store {self._shown} has an older schema ({version}; this version "
                f"uses {SCHEMA_VERSION}): open it for writing once (dagcall ask --save) to "
                "bring it up to date"
            )
        with db.transaction():  # other processes may be starting too: one migrates
            db.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
            version = self._version(db)
            if version is None:
                db.execute(
                    "CREATE TABLE dagcall_migrations (version INTEGER PRIMARY KEY, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                version = 0
            self._check_not_newer(version)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)  # this module's own text
                db.execute("INSERT INTO dagcall_migrations (version) VALUES (%s)", (step,))

    # -- writing ---------------------------------------------------------------------------
    def save(
        self, result: RunResult, *, planner: str = "", joiner: str = "", run_id: str | None = None
    ) -> str:
        """Save a run in one transaction; returns its id (12 hex digits, new unless ``run_id``
        gives one).  An id that is taken or not 1 to 32 lower-case hex digits is a
        :class:`~dagcall.UsageError`."""
        data = _run_data(result)
        if self._empty:
            raise UsageError(f"the run store {self._shown} was opened for reading only")
        run_id = _new_run_id(run_id)
        runs_row, rounds, tasks, calls = _run_records(result, data, run_id, planner, joiner)
        committing = False

        def insert(db: psycopg.Connection[tuple[Any, ...]]) -> None:
            nonlocal committing
            committing = False
            with db.transaction(), db.cursor() as cur:
                cur.execute(
                    f"INSERT INTO runs ({_RUNS_COLUMNS}) VALUES ({', '.join(['%s'] * 14)}) "  # noqa: S608
                    "ON CONFLICT (id) DO NOTHING RETURNING id",
                    _row(_RUNS, runs_row),
                )
                if cur.fetchone() is None:
                    raise UsageError(f"the run store already has a run {run_id}")
                if rounds:
                    cur.executemany(
                        "INSERT INTO rounds VALUES (%s, %s, %s, %s, %s)",
                        [_row(_ROUNDS, r) for r in rounds],
                    )
                if tasks:
                    cur.executemany(
                        # a plan with the same id twice keeps its first task (all are in the JSON)
                        "INSERT INTO tasks VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                        "%s, %s) ON CONFLICT DO NOTHING",
                        [_row(_TASKS, t) for t in tasks],
                    )
                if calls:
                    cur.executemany(
                        "INSERT INTO llm_calls VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                        "%s, %s)",
                        [_row(_CALLS, c) for c in calls],
                    )
                committing = True  # from here on the run may be saved even if this fails

        # Once the COMMIT is sent, a dropped connection leaves it unknown whether the run was
        # saved: only a failure before that is tried again.
        self._call("save the run in", insert, lambda: not committing)
        return run_id

    def delete(self, run_id: str) -> None:
        """Delete a saved run (a unique prefix is enough)."""
        full = self._resolve(run_id)
        self._call(
            "delete the run from", lambda db: db.execute("DELETE FROM runs WHERE id = %s", (full,))
        )

    # -- reading ---------------------------------------------------------------------------
    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest runs first."""
        return self.scan(limit).runs

    def scan(self, limit: int = 20) -> RunListing:
        """The newest ``limit`` runs (a server has no damaged pages to read around: the
        listing's ``unreadable`` is 0 and ``damage`` ``None``)."""
        if self._empty or limit <= 0:
            return RunListing()
        rows = self._call(
            "read",
            lambda db: db.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM runs "  # noqa: S608 - a constant
                "ORDER BY created_at DESC, rowid DESC LIMIT %s",
                (limit,),
            ).fetchall(),
        )
        return RunListing([_summary(row) for row in rows])

    def load(self, run_id: str) -> StoredRun:
        """A saved run (a unique prefix of its id is enough), typed as it was saved.  Raises
        :class:`~dagcall.store.RunNotFoundError` when no run has that id."""
        full = self._resolve(run_id)
        row = self._call(
            f"read run {full} from",
            lambda db: db.execute(
                "SELECT id, result_json, created_at, planner, joiner FROM runs WHERE id = %s",
                (full,),
            ).fetchone(),
        )
        if row is None:  # deleted since
            raise RunNotFoundError(f"no saved run {run_id}; 'dagcall runs' lists them")
        return _stored_run(full, str(row[1]), row[2], row[3], row[4], self._shown)

    def _resolve(self, run_id: str) -> str:
        """The full id of the run ``run_id`` (a unique prefix) names."""
        prefix = run_id.strip().lower()
        if not _is_run_id(prefix):
            shown = _clean(repr(run_id[:40] + ("…" if len(run_id) > 40 else "")))
            raise RunNotFoundError(f"{shown} is not a run id (run ids are hex digits)")
        if self._empty:
            raise RunNotFoundError(f"no saved run {run_id}; 'dagcall runs' lists them")
        rows = self._call(
            "read",
            lambda db: db.execute(
                "SELECT id FROM runs WHERE id >= %s AND id < %s ORDER BY id LIMIT 2",
                (prefix, prefix + "g"),
            ).fetchall(),
        )
        matches = [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]
        if not matches:
            raise RunNotFoundError(f"no saved run {run_id}; 'dagcall runs' lists them")
        if len(matches) > 1:
            raise RunNotFoundError(f"run id prefix {run_id} is ambiguous; give more digits")
        return matches[0]

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_quietly()

    def __enter__(self) -> PostgresRunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresRunStore({self._shown!r})"
