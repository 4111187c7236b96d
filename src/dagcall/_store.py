"""The local run store: every saved run in one SQLite file, queryable with SQL.

Each run is kept whole (its JSON, exactly what :meth:`RunResult.to_dict` gives) and also
spread over normalised tables (``tasks``, ``llm_calls``, ``rounds``) so that timings and usage
can be queried directly::

    sqlite3 "$(python -c 'import dagcall._store as s; print(s.default_path())')" \\
        "select tool, avg(ended_at - started_at) from tasks group by tool"
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import platformdirs

from ._errors import UsageError
from ._result import RunResult, observation_text

__all__ = ["RunNotFoundError", "RunStore", "RunSummary", "default_path"]

SCHEMA_VERSION = 1
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


class RunNotFoundError(UsageError):
    """No saved run has that id (or the prefix names several)."""


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


def default_path() -> Path:
    """``$DAGCALL_DATA_DIR/runs.sqlite3``, else the user data directory's."""
    base = os.environ.get("DAGCALL_DATA_DIR") or platformdirs.user_data_dir("dagcall")
    return Path(base) / "runs.sqlite3"


def _while_locked(step: Callable[[], None], patience: float = 30.0) -> None:
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


class RunStore:
    """Saved runs in a SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=30, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA foreign_keys = ON")
            _while_locked(self._migrate)
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_db"):  # opened, but not a store: do not leak the connection
                self._db.close()
            raise UsageError(
                f"{self.path} cannot be used as a dagcall run store ({exc}); move it away or "
                "set DAGCALL_DATA_DIR to another folder"
            ) from exc
        except OSError as exc:
            raise UsageError(f"cannot open the run store at {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock at once (several processes may write)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self._transaction() as db:  # another process may be creating it right now
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version != 0 or tables:
                raise sqlite3.DatabaseError(
                    f"unknown schema (user_version {version}, {tables} objects)"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # Switching to WAL needs the file to itself and SQLite does not wait for that (no busy
        # handler), so a store opened by several threads at once retries this via _while_locked.
        self._db.execute("PRAGMA journal_mode = WAL")

    # -- writing ---------------------------------------------------------------------------
    def save(self, result: RunResult, *, planner: str = "", joiner: str = "") -> str:
        """Save a run; returns its id (12 hex digits; any unique prefix finds it again)."""
        data: dict[str, Any] = json.loads(result.to_json(indent=None))
        run_id = secrets.token_hex(6)
        statuses = [t["status"] for t in data["tasks"]]
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
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
                    json.dumps(data, ensure_ascii=False),
                ),
            )
            db.executemany(
                "INSERT INTO rounds VALUES (?,?,?,?,?)",
                [(run_id, r.index, r.plan, r.joiner_output, r.decision) for r in result.rounds],
            )
            db.executemany(
                "INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        t.id,
                        t.round,
                        t.tool,
                        t.call,
                        json.dumps(list(t.deps)),
                        t.status.value,
                        observation_text(t.output, None) if t.output is not None else None,
                        t.error.message if t.error is not None else None,
                        t.parsed_at,
                        t.ready_at,
                        t.started_at,
                        t.ended_at,
                    )
                    for t in result.tasks
                ],
            )
            db.executemany(
                "INSERT INTO llm_calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        seq,
                        c.role,
                        c.model,
                        c.round,
                        c.task_id,
                        c.input_tokens,
                        c.output_tokens,
                        int(c.estimated),
                        c.started_at,
                        c.ended_at,
                        c.time_to_first_token,
                    )
                    for seq, c in enumerate(result.usage)
                ],
            )
        return run_id

    def delete(self, run_id: str) -> None:
        """Delete a saved run (a unique prefix is enough)."""
        full = self._resolve(run_id)
        with self._transaction() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (full,))

    # -- reading ---------------------------------------------------------------------------
    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest runs first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, created_at, question, answer, wall_time, llm_calls, input_tokens, "
                "output_tokens FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [RunSummary(*row) for row in rows]

    def load(self, run_id: str) -> dict[str, Any]:
        """A saved run as the dict :meth:`RunResult.to_dict` gave, plus ``id`` and models."""
        full = self._resolve(run_id)
        with self._lock:
            row = self._db.execute(
                "SELECT result_json, created_at, planner, joiner FROM runs WHERE id = ?", (full,)
            ).fetchone()
        data: dict[str, Any] = json.loads(row[0])
        data.update(id=full, created_at=row[1], planner=row[2], joiner=row[3])
        return data

    def _resolve(self, run_id: str) -> str:
        prefix = run_id.strip().lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise RunNotFoundError(f"{run_id!r} is not a run id (run ids are hex digits)")
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM runs WHERE id >= ? AND id < ? LIMIT 2",
                (prefix, prefix + "g"),
            ).fetchall()
        if not rows:
            raise RunNotFoundError(f"no saved run {run_id}; 'dagcall runs' lists them")
        if len(rows) > 1:
            raise RunNotFoundError(f"run id prefix {run_id} is ambiguous; give more digits")
        return str(rows[0][0])

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
