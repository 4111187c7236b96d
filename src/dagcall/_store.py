"""The local run store: every saved run in one SQLite file, queryable with SQL.

Each run is kept whole (its JSON, exactly what :meth:`RunResult.to_dict` gives) and also
spread over normalised tables (``tasks``, ``llm_calls``, ``rounds``) so that timings and usage
can be queried directly::

    sqlite3 "$(python -c 'import dagcall._store as s; print(s.default_path())')" \\
        "select tool, avg(ended_at - started_at) from tasks group by tool"

The normalised tables hold what SQLite can: an integer outside SQLite's 64 bits (a task id
such as ``99999999999999999999``) is stored there as its decimal digits in a BLOB
(``CAST(id AS TEXT)`` reads it), a NaN as the text ``'NaN'``, and text with lone surrogates
with U+FFFD in their place; ``result_json`` keeps every value exactly.

A damaged store (a disk error, a file overwritten in the middle) is read as far as SQLite can:
:meth:`RunStore.scan` lists every run whose row can still be read and counts those that cannot,
and :meth:`RunStore.load` of a readable run works whatever happened to the others.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import secrets
import shlex
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import platformdirs

from ._errors import UsageError
from ._records import read_run
from ._result import RunResult, observation_text

__all__ = [
    "STORE_ENV",
    "RunListing",
    "RunNotFoundError",
    "RunStore",
    "RunSummary",
    "Store",
    "StoreConnectionError",
    "StoredRun",
    "default_path",
    "is_store_url",
    "open_store",
    "store_location",
]

SCHEMA_VERSION = 1
#: The environment variable naming the run store: a SQLite file's path or a PostgreSQL URL.
STORE_ENV = "DAGCALL_STORE"
#: Seconds to wait for another process's lock on the store before giving up.
LOCK_TIMEOUT = 30.0
#: When a damaged table hides how many rows it has, how far past the last readable row id to
#: look for more.
SALVAGE_REACH = 100_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    stop_reason TEXT NOT NULL,
    wall_time REAL NOT NULL,
    planner TEXT NOT NULL,
    joiner TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    llm_calls INTEGER NOT NULL,
    tasks_done INTEGER NOT NULL,
    tasks_failed INTEGER NOT NULL,
    result_json TEXT NOT NULL
);
CREATE INDEX runs_created ON runs (created_at);
CREATE TABLE rounds (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    plan TEXT NOT NULL,
    joiner_output TEXT NOT NULL,
    decision TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE tasks (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    tool TEXT NOT NULL,
    call TEXT NOT NULL,
    deps TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    parsed_at REAL,
    ready_at REAL,
    started_at REAL,
    ended_at REAL,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE llm_calls (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    round INTEGER NOT NULL,
    task_id INTEGER,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    time_to_first_token REAL,
    PRIMARY KEY (run_id, seq)
);
"""
_SUMMARY_COLUMNS = (
    "id, created_at, question, answer, wall_time, llm_calls, input_tokens, output_tokens"
)


class RunNotFoundError(UsageError):
    """No saved run has that id (or the prefix names several)."""


class StoreConnectionError(UsageError):
    """The run store's database server cannot be reached, or refused the connection (down,
    a wrong host or port, a wrong user or password); the message names the server, never the
    password."""


@dataclass(frozen=True)
class RunSummary:
    """One line of ``dagcall runs``."""

    id: str
    created_at: str
    question: str
    answer: str
    wall_time: float
    llm_calls: int
    input_tokens: int
    output_tokens: int


@dataclass
class RunListing:
    """What :meth:`RunStore.scan` could read: the newest readable runs, and the damage.

    ``unreadable`` counts the runs the store's indexes know of whose rows could not be read
    (``None`` when the indexes are damaged too, so the count is unknown); ``damage`` is a
    one-line description of what is wrong and how to recover, or ``None`` for a sound store.
    """

    runs: list[RunSummary] = field(default_factory=list)
    unreadable: int | None = 0
    damage: str | None = None


@dataclass
class StoredRun(RunResult):
    """A saved run read back: the :class:`~dagcall.RunResult` as it was saved, its ``id``,
    when it was saved (``created_at``, ISO 8601 UTC), the models that ran it, and
    ``repairs``: what of a damaged record had to be replaced or dropped to read it (empty
    for a sound one)."""

    id: str = ""
    created_at: str = ""
    planner: str = ""
    joiner: str = ""
    repairs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(
            id=self.id,
            created_at=self.created_at,
            planner=self.planner,
            joiner=self.joiner,
            repairs=list(self.repairs),
        )
        return data


def default_path() -> Path:
    """``$DAGCALL_DATA_DIR/runs.sqlite3``, else the user data directory's."""
    base = os.environ.get("DAGCALL_DATA_DIR")
    if base:
        return Path(base).expanduser() / "runs.sqlite3"
    folder = Path(platformdirs.user_data_dir("dagcall"))
    if not folder.is_absolute():  # no HOME, and no home folder in the password database
        raise UsageError(
            f"cannot find your data folder for the run store (it came out as {str(folder)!r}): "
            "set DAGCALL_DATA_DIR (or HOME)"
        )
    return folder / "runs.sqlite3"


def recovery_hint(path: Path) -> str:
    """How to get the runs out of a damaged store file, or start afresh."""
    recovered = path.with_name(path.stem + "-recovered.sqlite3")
    return (
        f"recover what SQLite can still read with `sqlite3 {shlex.quote(str(path))} .recover "
        f"| sqlite3 {shlex.quote(str(recovered))}` and use that file, or move {path} away to "
        "start a new store"
    )


def _while_locked(step: Callable[[], None], patience: float = LOCK_TIMEOUT) -> None:
    """Run ``step``, retrying while another connection holds a lock SQLite will not wait on."""
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# -- values in and out of SQLite ---------------------------------------------------------------


def _clean(text: str) -> str:
    """Text SQLite can store (UTF-8): lone surrogates become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _big_int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond Python's int/str conversion limit
        return f"{value:#x}"


def _sql(value: object) -> object:
    """A value sqlite3 can bind without raising, kept exact where SQLite allows."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        number = int(value)
        if _INT64_MIN <= number <= _INT64_MAX:
            return number
        # As TEXT an INTEGER column would turn it into an inexact REAL (and two such ids into
        # one); a BLOB is stored as it is.
        return _big_int_text(number).encode("ascii")
    if isinstance(value, float):
        real = float(value)
        return "NaN" if math.isnan(real) else real
    if isinstance(value, str):
        return _clean(str(value))
    return _clean(observation_text(value, None))


def _json_text(data: object) -> str:
    """JSON that SQLite can store: lone surrogates (if any) are kept as ``\\ud800`` escapes."""
    text = json.dumps(data, ensure_ascii=False)
    if _SURROGATE.search(text):
        text = json.dumps(data, ensure_ascii=True)
    return text


def _decode(raw: bytes) -> str:
    """sqlite3's text factory: a damaged row's invalid UTF-8 is replaced, not raised."""
    return raw.decode("utf-8", "replace")


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return _decode(value)
    return "" if value is None else str(value)


def _as_float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.nan
    if isinstance(value, str | bytes):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _as_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str | bytes):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _summary(row: tuple[Any, ...]) -> RunSummary:
    """A summary from ``rowid`` + the summary columns, whatever types a damaged row holds."""
    _, run_id, created, question, answer, wall, calls, tokens_in, tokens_out = row
    return RunSummary(
        id=_as_text(run_id),
        created_at=_as_text(created),
        question=_as_text(question),
        answer=_as_text(answer),
        wall_time=_as_float(wall),
        llm_calls=_as_int(calls),
        input_tokens=_as_int(tokens_in),
        output_tokens=_as_int(tokens_out),
    )


@runtime_checkable
class Store(Protocol):
    """What every run store does (:class:`RunStore` on SQLite, :class:`PostgresRunStore` on
    a PostgreSQL server); :func:`open_store` opens the one a path or URL names."""

    @property
    def location(self) -> str:
        """The store for messages: the file's path, or the server's URL without password."""
        ...

    def save(
        self, result: RunResult, *, planner: str = "", joiner: str = "", run_id: str | None = None
    ) -> str: ...

    def load(self, run_id: str) -> StoredRun: ...

    def delete(self, run_id: str) -> None: ...

    def list_runs(self, limit: int = 20) -> list[RunSummary]: ...

    def scan(self, limit: int = 20) -> RunListing: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_store_url(spec: str | os.PathLike[str]) -> bool:
    """Whether ``spec`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``) rather than
    a SQLite file's path."""
    if not isinstance(spec, str):
        return False
    scheme, sep, _ = spec.strip().partition("://")
    return bool(sep) and scheme.lower() in _POSTGRES_SCHEMES


def store_location(spec: str | os.PathLike[str] | None = None) -> str | Path:
    """What :func:`open_store` opens for ``spec``: a PostgreSQL URL (``str``, as given) or a
    SQLite file's :class:`~pathlib.Path`; ``None`` (or empty) means ``$DAGCALL_STORE``, else
    :func:`default_path`."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        spec = os.environ.get(STORE_ENV, "").strip() or None
        if spec is None:
            return default_path()
    if is_store_url(spec):
        return str(spec).strip()
    if isinstance(spec, str) and _URL.match(spec.strip()):
        scheme = spec.strip().split("://", 1)[0]
        raise UsageError(
            f"the run store {scheme}://… is not supported: give a SQLite file's path or a "
            "postgresql:// URL"
        )
    return Path(spec).expanduser()


def open_store(spec: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
    """The run store ``spec`` names: a ``postgresql://`` (or ``postgres://``) URL opens a
    :class:`PostgresRunStore` (the ``postgres`` extra), a path a SQLite :class:`RunStore`;
    ``None`` means ``$DAGCALL_STORE``, else :func:`default_path`.  ``create=False`` opens an
    existing store for reading without creating or changing anything."""
    where = store_location(spec)
    if isinstance(where, str):
        from ._pgstore import PostgresRunStore

        return PostgresRunStore(where, create=create)
    return RunStore(where, create=create)


class RunStore:
    """Saved runs in a SQLite file; safe to share between threads and processes.

    ``create=False`` opens an existing file for reading without creating or changing it (an
    empty file then reads as a store with no runs); ``timeout`` is how long to wait for
    another process's lock (default :data:`LOCK_TIMEOUT`).  Every failure of SQLite or the
    file system is raised as a :class:`UsageError` whose message names the file, what is wrong
    and what to do.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        timeout: float | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.timeout = LOCK_TIMEOUT if timeout is None else timeout
        self._lock = threading.Lock()
        self._empty = False  # an empty file opened with create=False: no schema, no runs
        self._db: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise UsageError(
                f"the run store {self.path} is a folder, not a SQLite file: move it away or set "
                "DAGCALL_DATA_DIR to another folder"
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(
                    self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None
                )
            else:
                uri = "file:" + urllib.parse.quote(os.fsencode(self.path.absolute())) + "?mode=rw"
                db = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=self.timeout,
                    check_same_thread=False,
                    isolation_level=None,
                )
            self._db = db
            db.text_factory = _decode
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA cell_size_check = ON")  # notice more damage, rather than misread
            _while_locked(lambda: self._migrate(create), self.timeout)
        except sqlite3.Error as exc:
            self._close_quietly()
            message = str(exc)
            if "unknown schema" in message or "newer dagcall" in message:
                raise UsageError(
                    f"{self.path} cannot be used as a dagcall run store ({message})"
                ) from exc
            if "not a database" in message or "malformed" in message:
                raise UsageError(
                    f"{self.path} cannot be used as a dagcall run store ({message}): it is not "
                    f"a SQLite file, or its first pages are damaged; {recovery_hint(self.path)}"
                ) from exc
            raise UsageError(self._explain(exc, "open the run store")) from exc
        except OSError as exc:
            self._close_quietly()
            folder = self.path.parent
            if folder.exists() and not folder.is_dir():
                raise UsageError(
                    f"the run store folder {folder} is a file, not a folder: set "
                    "DAGCALL_DATA_DIR to a folder"
                ) from exc
            if not folder.is_dir():
                raise UsageError(
                    f"cannot create the run store folder {folder} ({exc.strerror or exc}): set "
                    "DAGCALL_DATA_DIR to a writable folder"
                ) from exc
            raise UsageError(f"cannot open the run store at {self.path}: {exc}") from exc
        except BaseException:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    @property
    def location(self) -> str:
        """The store file's path, for messages."""
        return str(self.path)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise UsageError(f"the run store {self.path} is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock at once (several processes may write)."""
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    with suppress(sqlite3.Error):  # the first error is the one to report
                        db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _migrate(self, create: bool) -> None:
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            db.execute("SELECT name FROM sqlite_master").fetchall()  # a damaged schema fails here
            return
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"it was written by a newer dagcall (store schema {version}; this version reads "
                f"schema {SCHEMA_VERSION}): upgrade dagcall, or set DAGCALL_DATA_DIR to another "
                "folder"
            )
        if not create:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and not tables:
                self._empty = True
                return
            raise sqlite3.DatabaseError(
                f"unknown schema (user_version {version}, {tables} objects)"
            )
        with self._transaction() as tx:  # another process may be creating it right now
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            tables = tx.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version != 0 or tables:
                raise sqlite3.DatabaseError(
                    f"unknown schema (user_version {version}, {tables} objects)"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # Switching to WAL needs the file to itself and SQLite does not wait for that (no busy
        # handler), so a store opened by several threads at once retries this via _while_locked.
        db.execute("PRAGMA journal_mode = WAL")

    # -- failures --------------------------------------------------------------------------
    def _explain(self, exc: sqlite3.Error, doing: str) -> str:
        """One line: what went wrong with the store file, and what to do about it."""
        message = str(exc)
        low = message.lower()
        where = f"the run store {self.path}"
        if "locked" in low or "busy" in low:
            return (
                f"cannot {doing}: {where} is locked by another process (waited "
                f"{self.timeout:g} s); try again when that process has finished"
            )
        if "malformed" in low or "not a database" in low or "corrupt" in low:
            return f"cannot {doing}: {where} is damaged ({message}); {recovery_hint(self.path)}"
        if "readonly" in low or "read-only" in low:
            return (
                f"cannot {doing}: {where} is read-only ({message}); make it writable or set "
                "DAGCALL_DATA_DIR to a writable folder"
            )
        if "full" in low:
            return f"cannot {doing}: the disk holding {where} is full ({message})"
        if "unable to open" in low or "disk i/o" in low:
            return (
                f"cannot {doing}: {where} cannot be opened or written ({message}); set "
                "DAGCALL_DATA_DIR to a writable folder"
            )
        return f"cannot {doing}: {where} failed ({type(exc).__name__}: {message})"

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise UsageError(self._explain(exc, doing)) from exc

    # -- writing ---------------------------------------------------------------------------
    def save(
        self, result: RunResult, *, planner: str = "", joiner: str = "", run_id: str | None = None
    ) -> str:
        """Save a run; returns its id (12 hex digits, new unless ``run_id`` gives one, say a
        service's id for the run; any unique prefix finds it again).  An id that is taken or
        not 1 to 32 lower-case hex digits is a :class:`~dagcall.UsageError`."""
        data = _run_data(result)
        if self._empty:
            raise UsageError(f"the run store {self.path} was opened for reading only")
        run_id = _new_run_id(run_id)
        runs_row, rounds, tasks, calls = _run_records(result, data, run_id, planner, joiner)
        with self._failures("save the run"), self._transaction() as db:
            taken = db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
            if taken is not None:
                raise UsageError(f"the run store already has a run {run_id}")
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", _row(runs_row))
            db.executemany("INSERT INTO rounds VALUES (?,?,?,?,?)", map(_row, rounds))
            db.executemany(
                # a plan with the same id twice keeps its first task here (all are in the JSON)
                "INSERT OR IGNORE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                map(_row, tasks),
            )
            db.executemany(
                "INSERT INTO llm_calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", map(_row, calls)
            )
        return run_id

    def delete(self, run_id: str) -> None:
        """Delete a saved run (a unique prefix is enough)."""
        full = self._resolve(run_id)[0]
        with self._failures("delete the run"), self._transaction() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (full,))

    # -- reading ---------------------------------------------------------------------------
    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest readable runs first (:meth:`scan` also says what could not be read)."""
        return self.scan(limit).runs

    def scan(self, limit: int = 20) -> RunListing:
        """The newest ``limit`` runs that can be read, and what is damaged (if anything)."""
        if self._empty:
            return RunListing()
        with self._lock, self._failures("read the run store"):
            rows, sqlite_error = self._rows(_SUMMARY_COLUMNS)
            error: sqlite3.Error | str | None = sqlite_error
            good = [row for row in rows if _is_run_id(row[1])]
            if len(good) < len(rows) and error is None:  # misread from a damaged page
                error = "some rows hold no run id"
            unreadable = self._unreadable(good) if error is not None else 0
        newest = heapq.nlargest(
            max(limit, 0), good, key=lambda row: (_as_text(row[2]), _as_int(row[0]))
        )
        listing = RunListing([_summary(row) for row in newest], unreadable)
        if error is not None:
            listing.damage = self.damage_report(error, unreadable, len(good))
        return listing

    def _unreadable(self, good: list[tuple[Any, ...]]) -> int | None:
        """How many runs the indexes know of are not among the rows read (``None``: the
        indexes cannot say)."""
        known = self._indexed_rowids()
        return len(known - {row[0] for row in good}) if known else None

    def damage_report(
        self, error: sqlite3.Error | str, unreadable: int | None, readable: int
    ) -> str:
        """One line for a damaged store: the file, SQLite's complaint, the loss, the way out."""
        if unreadable is None:
            lost = "some runs could not be read (how many is unknown)"
        else:
            lost = f"{unreadable} run{'s' if unreadable != 1 else ''} could not be read"
        return (
            f"the run store {self.path} is damaged ({error}): {lost}, {readable} can be; "
            f"{recovery_hint(self.path)}"
        )

    def _rows(self, columns: str) -> tuple[list[tuple[Any, ...]], sqlite3.Error | None]:
        """``(rowid, *columns)`` of every row of ``runs`` SQLite can read, and the first error
        (``None``: SQLite noticed no damage).

        Indexes are not used for the scan (a damaged index could hide rows); when the table
        itself is damaged, the scan steps past the unreadable rows one row id at a time and
        goes on after them.
        """
        db = self.db
        # `columns` is one of this module's constants, never outside text.
        query = f"SELECT rowid, {columns} FROM runs NOT INDEXED WHERE rowid > ? ORDER BY rowid"  # noqa: S608
        point = f"SELECT rowid, {columns} FROM runs WHERE rowid = ?"  # noqa: S608
        rows: dict[int, tuple[Any, ...]] = {}
        position = _INT64_MIN
        first_error: sqlite3.Error | None = None
        try:
            for row in db.execute(query, (position,)):
                rows[row[0]] = row
                position = max(position, row[0])
            return list(rows.values()), None
        except sqlite3.Error as exc:
            if not _is_damage(exc):
                raise
            first_error = exc
        if "schema" in str(first_error).lower():  # nothing at all can be read
            raise first_error
        known = self._indexed_rowids()
        bound = max([*known, *rows], default=0)
        try:
            bound = max(bound, db.execute("SELECT max(rowid) FROM runs").fetchone()[0] or 0)
        except sqlite3.Error:  # how far the rows go is unknown: as far as the file could hold
            bound = max(bound, position, 0) + self._row_capacity()
        if position == _INT64_MIN:  # not even the first row could be read
            position = min([*known, 1]) - 1
        if position > bound:  # a damaged page gave a row a wild id: start from the known ones
            position = min([*known, *(r for r in rows if r <= bound), 1]) - 1
        while position < bound:
            try:
                for row in db.execute(query, (position,)):
                    rows[row[0]] = row
                    if position < row[0] <= bound:  # a wild id from a damaged page: no leap
                        position = row[0]
                break  # read to the end
            except sqlite3.Error as exc:
                if not _is_damage(exc):
                    raise
            # Something after `position` cannot be read.  The row with the next id may still
            # be (a scan can fail on a damaged page that comes before it): look it up alone,
            # then go on after it.
            position += 1
            try:
                row = db.execute(point, (position,)).fetchone()
            except sqlite3.Error as exc:
                if not _is_damage(exc):
                    raise
            else:
                if row is not None:
                    rows[row[0]] = row
        return list(rows.values()), first_error

    def _row_capacity(self) -> int:
        """At most how many rows of ``runs`` the file has room for (each takes 50 bytes or
        more), capped at :data:`SALVAGE_REACH`."""
        try:
            pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
            size = int(self.db.execute("PRAGMA page_size").fetchone()[0])
        except (sqlite3.Error, TypeError, ValueError):
            return SALVAGE_REACH
        return max(1, min(SALVAGE_REACH, pages * (size // 50)))

    def _indexed_rowids(self) -> set[int]:
        """The row ids the table's indexes list (each index is read as far as it can be)."""
        found: set[int] = set()
        for index in ("sqlite_autoindex_runs_1", "runs_created"):
            try:
                rowids = self.db.execute(f"SELECT rowid FROM runs INDEXED BY {index}")  # noqa: S608
                for (rowid,) in rowids:
                    if isinstance(rowid, int):
                        found.add(rowid)
            except sqlite3.Error:
                continue
        return found

    def load(self, run_id: str) -> StoredRun:
        """A saved run (a unique prefix of its id is enough), typed as it was saved; a run
        whose record is damaged is read as far as it can be (``repairs`` says what was
        not).  Raises :class:`RunNotFoundError` when no run has that id, and
        :class:`~dagcall.UsageError` when its JSON cannot be parsed at all."""
        full, rowid = self._resolve(run_id)
        with self._lock:
            try:
                row = self.db.execute(
                    "SELECT id, result_json, created_at, planner, joiner FROM runs WHERE rowid = ?",
                    (rowid,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise UsageError(self._explain(exc, f"read run {full}")) from exc
        if row is None:
            raise RunNotFoundError(f"no saved run {run_id}; 'dagcall runs' lists them")
        return _stored_run(full, _as_text(row[1]), row[2], row[3], row[4], str(self.path))

    def _resolve(self, run_id: str) -> tuple[str, int]:
        """The full id and row id of the run ``run_id`` (a unique prefix) names."""
        prefix = run_id.strip().lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            shown = _clean(repr(run_id[:40] + ("…" if len(run_id) > 40 else "")))
            raise RunNotFoundError(f"{shown} is not a run id (run ids are hex digits)")
        if self._empty:
            raise RunNotFoundError(f"no saved run {run_id}; 'dagcall runs' lists them")
        with self._lock:
            matches: list[tuple[str, int]] | None
            try:  # the id index first: quick, and right unless the store is damaged
                found = self.db.execute(
                    "SELECT id, rowid FROM runs WHERE id >= ? AND id < ? LIMIT 2",
                    (prefix, prefix + "g"),
                ).fetchall()
                matches = [(i, r) for i, r in found if isinstance(i, str) and i.startswith(prefix)]
                if len(matches) == 1:
                    check = self.db.execute(
                        "SELECT id FROM runs WHERE rowid = ?", (matches[0][1],)
                    ).fetchone()
                    if check is None or check[0] != matches[0][0]:
                        matches = None  # the index and the table disagree
                elif not matches:
                    matches = None  # to be sure, look at the table itself
            except sqlite3.Error as exc:
                if not _is_damage(exc):
                    raise UsageError(self._explain(exc, "read the run store")) from exc
                matches = None
            error: sqlite3.Error | None = None
            unreadable: int | None = 0
            readable = 0
            if matches is None:
                with self._failures("read the run store"):
                    rows, error = self._rows("id")
                    good = [row for row in rows if _is_run_id(row[1])]
                    if error is not None:
                        unreadable = self._unreadable(good)
                readable = len(good)
                matches = [(r[1], r[0]) for r in good if r[1].startswith(prefix)][:2]
        if not matches:
            message = f"no saved run {run_id}; 'dagcall runs' lists them"
            if error is not None:
                message = f"no readable run {run_id}: " + self.damage_report(
                    error, unreadable, readable
                )
            raise RunNotFoundError(message)
        if len(matches) > 1:
            raise RunNotFoundError(f"run id prefix {run_id} is ambiguous; give more digits")
        return matches[0]

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_run_id(value: object) -> bool:
    return isinstance(value, str) and bool(value) and all(c in "0123456789abcdef" for c in value)


def _is_damage(exc: sqlite3.Error) -> bool:
    """Whether an error is damage to the file, which reading around may get past."""
    low = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and not any(
        word in low for word in ("locked", "busy", "no such table", "no such column")
    )


def _row(values: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(_sql(v) for v in values)


def _sql_dep(dep: object) -> object:
    """A dependency id for the ``deps`` JSON column (ints JSON can hold as they are)."""
    if isinstance(dep, bool) or not isinstance(dep, int):
        return observation_text(dep, 100)
    return int(dep)


def _error_text(error: object) -> str | None:
    if error is None:
        return None
    message = getattr(error, "message", None)
    return observation_text(message if message is not None else error, None)


def _short(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _run_data(result: RunResult) -> Any:
    """The run's JSON data (what ``result_json`` holds), or a UsageError saying why not."""
    try:
        return json.loads(result.to_json(indent=None))
    except (TypeError, ValueError, RecursionError) as exc:
        raise UsageError(
            f"the run cannot be saved: it cannot be written as JSON ({type(exc).__name__}: {exc})"
        ) from exc


def _new_run_id(run_id: str | None) -> str:
    """A new run id, or ``run_id`` checked (1 to 32 lower-case hex digits)."""
    if run_id is None:
        return secrets.token_hex(6)
    if not (0 < len(run_id) <= 32 and _is_run_id(run_id)):
        raise UsageError(f"a run id is 1 to 32 lower-case hex digits, not {run_id[:40]!r}")
    return run_id


_Record = tuple[object, ...]


def _run_records(
    result: RunResult, data: Any, run_id: str, planner: str, joiner: str
) -> tuple[_Record, list[_Record], list[_Record], list[_Record]]:
    """The rows of ``runs``, ``rounds``, ``tasks`` and ``llm_calls`` for a run, in the
    tables' column order, as Python values (each store makes them values it can bind)."""
    statuses = [str(getattr(t.status, "value", t.status)) for t in result.tasks]
    runs_row = (
        run_id,
        datetime.now(UTC).isoformat(timespec="seconds"),
        result.question,
        result.answer,
        result.stop_reason,
        result.wall_time,
        planner,
        joiner,
        result.input_tokens,
        result.output_tokens,
        result.llm_calls,
        statuses.count("done"),
        len(statuses) - statuses.count("done"),
        _json_text(data),
    )
    rounds: list[_Record] = [
        (run_id, r.index, r.plan, r.joiner_output, r.decision) for r in result.rounds
    ]
    tasks: list[_Record] = [
        (
            run_id,
            t.id,
            t.round,
            t.tool,
            t.call,
            _json_text([_sql_dep(d) for d in t.deps]),
            status,
            observation_text(t.output, None) if t.output is not None else None,
            _error_text(t.error),
            t.parsed_at,
            t.ready_at,
            t.started_at,
            t.ended_at,
        )
        for t, status in zip(result.tasks, statuses, strict=True)
    ]
    calls: list[_Record] = [
        (
            run_id,
            seq,
            c.role,
            c.model,
            c.round,
            c.task_id,
            c.input_tokens,
            c.output_tokens,
            int(bool(c.estimated)),
            c.started_at,
            c.ended_at,
            c.time_to_first_token,
        )
        for seq, c in enumerate(result.usage)
    ]
    return runs_row, rounds, tasks, calls


def _stored_run(
    full: str, text: str, created_at: object, planner: object, joiner: object, where: str
) -> StoredRun:
    """A stored run read back from its ``result_json`` and columns, through :func:`read_run`
    (a damaged record is read as far as it can be); ``where`` names the store."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(
            f"run {full} in {where} cannot be read: its stored JSON is damaged "
            f"({type(exc).__name__}: {_short(str(exc))}); the other runs are not affected"
        ) from exc
    if not isinstance(data, dict):
        raise UsageError(
            f"run {full} in {where} cannot be read: its stored JSON is a "
            f"{type(data).__name__}, not a run; the other runs are not affected"
        )
    for name in ("id", "created_at", "planner", "joiner", "repairs"):
        data.pop(name, None)  # the columns say these
    run, repairs = read_run(data, StoredRun)
    run.id = full
    run.created_at = _as_text(created_at)
    run.planner = _as_text(planner)
    run.joiner = _as_text(joiner)
    run.repairs = repairs
    return run
