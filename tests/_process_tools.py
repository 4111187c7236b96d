"""Tools for the cancellation tests, in an importable module: ``isolation="process"`` children
import their function by module name (this directory is on ``sys.path`` under pytest, and the
child gets the parent's ``sys.path``).

The side-effecting tools write ``started`` into their folder, then wait for a ``go`` file and
write ``done``: a test lets the call go on whenever it likes by creating ``go``, so "was the
side effect ever done" is checked without racing a sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dagcall import current_tool_context, tool

#: How long a side-effecting tool waits for ``go`` before giving up (so no thread or process
#: of a failed test lives on).
PATIENCE = 30.0


def _wait_for_go(folder: Path) -> bool:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if (folder / "go").exists():
            return True
        time.sleep(0.01)
    return False


def write_when_told(folder: str) -> str:
    """Mark the start, wait for ``go``, then do the side effect: write ``done``."""
    where = Path(folder)
    (where / "started").write_text(str(os.getpid()))
    if _wait_for_go(where):
        (where / "done").write_text("side effect")
        return "done"
    return "gave up"


#: The same function three ways: in a thread that ignores cancellation, in a process.
plain_writer = tool(name="plain_writer")(write_when_told)
process_writer = tool(name="process_writer", isolation="process", cancel_grace=0.3)(write_when_told)


@tool(isolation="process", cancel_grace=0.3)
def stubborn_writer(folder: str) -> str:
    """Ignores SIGTERM, so only the SIGKILL after the grace stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return write_when_told(folder)


@tool(isolation="process", cancel_grace=0.3)
def spawning_writer(folder: str) -> str:
    """Starts a grandchild process (which would write ``grandchild``), then waits."""
    code = (
        "import pathlib, sys, time\n"
        "time.sleep(60)\n"
        "pathlib.Path(sys.argv[1], 'grandchild').write_text('x')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, folder])
    (Path(folder) / "grandchild_pid").write_text(str(child.pid))
    return write_when_told(folder)


@tool
def polite_writer(folder: str) -> str:
    """A sync tool that checks the cooperative cancellation signal while it waits."""
    ctx = current_tool_context()
    assert ctx is not None
    where = Path(folder)
    (where / "started").write_text("thread")
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        if (where / "go").exists():
            (where / "done").write_text("side effect")
            return "done"
        ctx.wait_cancelled(0.01)
    return "gave up"


@tool
def quitter_writer(folder: str) -> str:
    """Polls ``ctx.cancelled`` and returns (rather than raising) when told to stop."""
    ctx = current_tool_context()
    assert ctx is not None
    where = Path(folder)
    (where / "started").write_text("thread")
    while not ctx.wait_cancelled(0.01):
        if (where / "go").exists():
            (where / "done").write_text("side effect")
            return "done"
    return "stopped early"


@tool(isolation="process")
def add(a: int, b: int = 2, /) -> int:
    """Add two numbers in a process of its own."""
    return a + b


@tool(isolation="process")
async def double_async(x: int) -> dict[str, object]:
    """An async function run in a process."""
    ctx = current_tool_context()
    return {"value": 2 * x, "pid": os.getpid(), "task": None if ctx is None else ctx.task_id}


@tool(isolation="process")
def raises_key_error(key: str) -> str:
    """Raises in its process."""
    raise KeyError(f"no such key {key}")


class Unpicklable(Exception):
    """An exception that cannot be sent back (its lock does not pickle)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


@tool(isolation="process")
def raises_unpicklable() -> str:
    """Raises an exception that cannot cross back."""
    raise Unpicklable("held a lock")


@tool(isolation="process")
def exits(code: int) -> str:
    """Ends its process without replying."""
    os._exit(code)


@tool(isolation="process")
def kills_itself() -> str:
    """Dies by SIGKILL."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)
    return "never"


@tool(isolation="process")
def system_exit() -> str:
    """Raises SystemExit in its process."""
    sys.exit(7)


@tool(isolation="process")
def returns_lock() -> object:
    """Returns what cannot be pickled."""
    return threading.Lock()


@tool(isolation="process")
def prints_and_returns(text: str) -> str:
    """Writes to stdout and stdin-reads: neither disturbs the reply."""
    print("noise on stdout", flush=True)
    print("noise on stderr", file=sys.stderr, flush=True)
    return text + sys.stdin.read()


@tool(isolation="process")
def takes_anything(value: object) -> str:
    """Receives a value: from a plan literal it pickles; a lock from another task does not."""
    return type(value).__name__


@tool
def makes_lock() -> object:
    """A thread tool returning an unpicklable value, for a process tool to be given."""
    return threading.Lock()


def scale(x: int, factor: int) -> int:
    """Multiply x by factor."""
    return x * factor
