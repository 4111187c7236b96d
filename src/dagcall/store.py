"""The run store: saved runs in one SQLite file or a PostgreSQL database, read back as typed
runs.

``RunStore(path)`` saves a :class:`~dagcall.RunResult` (``save``) and reads it back as a
:class:`StoredRun` (``load``), lists runs (``list_runs``, ``scan``) and deletes them;
:class:`PostgresRunStore` does the same on a PostgreSQL server (the ``postgres`` extra), so
service replicas and batch workers share runs.  :func:`open_store` opens the one a path or a
``postgresql://`` URL names (``None``: ``$DAGCALL_STORE``, else :func:`default_path`, where the
``dagcall`` command keeps its runs); both are a :class:`Store`.  :func:`read_run` reads a run
from its JSON data however damaged, saying what it had to repair.
"""

from ._pgstore import PostgresRunStore
from ._records import read_run
from ._store import (
    STORE_ENV,
    RunListing,
    RunNotFoundError,
    RunStore,
    RunSummary,
    Store,
    StoreConnectionError,
    StoredRun,
    default_path,
    is_store_url,
    open_store,
    recovery_hint,
    store_location,
)

__all__ = [
    "STORE_ENV",
    "PostgresRunStore",
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
    "read_run",
    "recovery_hint",
    "store_location",
]
