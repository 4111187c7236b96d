"""The run store: saved runs in one SQLite file, read back as typed runs.

``RunStore(path)`` saves a :class:`~dagcall.RunResult` (``save``) and reads it back as a
:class:`StoredRun` (``load``), lists runs (``list_runs``, ``scan``) and deletes them;
:func:`default_path` is where the ``dagcall`` command keeps its runs.  :func:`read_run` reads a
run from its JSON data however damaged, saying what it had to repair.
"""

from ._records import read_run
from ._store import (
    RunListing,
    RunNotFoundError,
    RunStore,
    RunSummary,
    StoredRun,
    default_path,
    recovery_hint,
)

__all__ = [
    "RunListing",
    "RunNotFoundError",
    "RunStore",
    "RunSummary",
    "StoredRun",
    "default_path",
    "read_run",
    "recovery_hint",
]
