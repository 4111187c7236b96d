"""The call cache: results of ``cacheable=True`` tools, shared across runs.

``Compiler(call_cache=MemoryCallCache())`` keeps them in memory for the compiler's life;
``Compiler(call_cache=SQLiteCallCache("calls.db"))`` in a SQLite file, across processes.
An entry lives ``tool.cache_ttl`` seconds (the cache's ``ttl`` for tools without one; ``None``:
for ever).  Only successful calls are cached.  The key is the tool's name and its validated
arguments as canonical JSON (see :func:`call_key`); calls whose arguments are not JSON data
are not cached.  The SQLite cache stores values as JSON: a value that is not JSON data is
not persisted (the memory cache keeps any value, by reference).

A task answered from the cache is recorded with ``cache="hit"`` (``"miss"`` when the cache
was asked and had nothing), and ``dagcall show`` marks it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any, Protocol, runtime_checkable

from ._errors import UsageError

__all__ = ["CacheHit", "CallCache", "MemoryCallCache", "SQLiteCallCache", "call_key"]


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A cached result."""

    value: Any


@runtime_checkable
class CallCache(Protocol):
    """Where results of cacheable calls are kept: ``get(key)`` a :class:`CacheHit` or
    ``None``; ``put(key, value, ttl)`` stores one for ``ttl`` seconds (``None``: the cache's
    own default) and says whether it was stored."""

    def get(self, key: str) -> CacheHit | None: ...

    def put(self, key: str, value: Any, ttl: float | None = None) -> bool: ...


def canonical_json(value: Any) -> str | None:
    """``value`` as canonical JSON (sorted keys, no spaces), or ``None`` when it is not JSON
    data (pydantic models and dataclasses count as their fields)."""
    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_plain,
        )
    except (TypeError, ValueError, RecursionError):
        return None


def _plain(value: Any) -> Any:
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return {"__model__": type(value).__qualname__, **value.model_dump(mode="json")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"__dataclass__": type(value).__qualname__, **fields}
    if isinstance(value, tuple | set | frozenset):  # pragma: no cover - json does tuples
        return list(value)
    raise TypeError(type(value).__name__)


def call_key(tool: str, arguments: Mapping[str, Any]) -> str | None:
    """The cache key of a call of ``tool`` with validated ``arguments`` (``None``: the
    arguments are not JSON data, so the call is neither shared nor cached)."""
    text = canonical_json(dict(arguments))
    if text is None:
        return None
    return hashlib.sha256(f"dagcall-call-v1\0{tool}\0{text}".encode()).hexdigest()


def _ttl(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise UsageError(f"{what} must be a positive number of seconds or None")
    return None if math.isinf(value) else float(value)


class MemoryCallCache:
    """A call cache in memory: at most ``max_entries`` (least recently used go first), each for
    ``ttl`` seconds unless the tool sets its own ``cache_ttl``."""

    def __init__(self, *, ttl: float | None = None, max_entries: int = 10_000) -> None:
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise UsageError("max_entries must be a positive int")
        self.ttl = _ttl(ttl, "ttl")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float | None, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CacheHit | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is not None and entry[0] <= time.monotonic():
            del self._entries[key]
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return CacheHit(entry[1])

    def put(self, key: str, value: Any, ttl: float | None = None) -> bool:
        life = _ttl(ttl, "ttl") if ttl is not None else self.ttl
        self._entries[key] = (None if life is None else time.monotonic() + life, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SQLiteCallCache:
    """A persistent call cache in the SQLite file at ``path`` (created when missing), each
    entry for ``ttl`` seconds unless the tool sets its own ``cache_ttl``.  Values are stored as
    JSON; one that is not JSON data is not stored (``put`` returns ``False``).  Expired
    entries are deleted when they are next read, and by :meth:`purge`."""

    def __init__(self, path: str | PathLike[str], *, ttl: float | None = None) -> None:
        self.path = path
        self.ttl = _ttl(ttl, "ttl")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dagcall_calls "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL, stored REAL NOT NULL)"
        )
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CacheHit | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value, expires FROM dagcall_calls WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[1] is not None and row[1] <= time.time():
                self._db.execute("DELETE FROM dagcall_calls WHERE key = ?", (key,))
                row = None
        value: Any = None
        if row is not None:
            try:
                value = json.loads(row[0])
            except (ValueError, RecursionError):
                row = None
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return CacheHit(value)

    def put(self, key: str, value: Any, ttl: float | None = None) -> bool:
        life = _ttl(ttl, "ttl") if ttl is not None else self.ttl
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
            same = json.loads(text) == value  # a tuple, or a dict with int keys, would change
        except (TypeError, ValueError, RecursionError):
            return False
        if not same:
            return False
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO dagcall_calls (key, value, expires, stored) "
                "VALUES (?, ?, ?, ?)",
                (key, text, None if life is None else now + life, now),
            )
        return True

    def purge(self) -> int:
        """Delete the expired entries; how many there were."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM dagcall_calls WHERE expires IS NOT NULL AND expires <= ?",
                (time.time(),),
            )
        return cursor.rowcount

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM dagcall_calls")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM dagcall_calls").fetchone()
        return int(row[0])
