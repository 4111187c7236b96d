"""Cancellation is truthful: a task recorded as cancelled or timed out has stopped, and one
whose sync worker thread could not be stopped says so (abandoned), because Python cannot kill
a thread.  Cooperative sync tools (polling ``current_tool_context().cancelled``) stop and are
cancelled; ``isolation="process"`` tools are terminated, and their side effects provably never
happen.  Every test checks that no thread or process of ours is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import _process_tools as pt
from dagcall import (
    Compiler,
    RunEvent,
    RunResult,
    RunTimeoutError,
    ScriptedModel,
    TaskStatus,
    ToolDefinitionError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
    current_tool_context,
    tool,
)

FINISH = "Thought: done.\nAction: Finish(the answer)"
#: A budget that only a hang reaches; process start-up is slow on a loaded machine.
HANG = 60.0


# -- no leftovers ---------------------------------------------------------------------------


def _children() -> set[int]:
    """Live child processes of this process (zombies, already dead, excluded)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with open(task / "children") as f:
            pids.update(int(p) for p in f.read().split())
    return {p for p in pids if _alive(p)}


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state and "dead" not in state


def _our_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("dagcall-", "waitpid-"))}


async def _eventually(check: Any, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.02)


@pytest.fixture
async def no_leftovers() -> AsyncIterator[None]:
    """Fail the test if it leaves a worker thread, a child process or an asyncio task."""
    threads, children, tasks = _our_threads(), _children(), asyncio.all_tasks()
    yield
    await _eventually(lambda: _our_threads() <= threads, "a worker thread was left running")
    await _eventually(lambda: _children() <= children, "a child process was left running")
    assert asyncio.all_tasks() <= tasks | {asyncio.current_task()}, "orphaned asyncio tasks"


def _compiler(call: str, *tools: Any, **options: Any) -> Compiler:
    model = ScriptedModel([f"1. {call}\n2. join()", FINISH])
    return Compiler(model=model, tools=list(tools), max_replans=0, **options)


async def _run(compiler: Compiler) -> RunResult:
    """Run; a RunTimeoutError's partial result is the result."""
    try:
        return await asyncio.wait_for(compiler.arun("q"), HANG)
    except RunTimeoutError as exc:
        if exc.result is None:
            raise AssertionError("the RunTimeoutError lost the partial result") from exc
        return exc.result


async def _started(folder: Path) -> None:
    await _eventually(lambda: (folder / "started").exists(), "the tool never started", HANG)


async def _go_and_check(folder: Path, *, expect_done: bool) -> None:
    """Let the call go on, then check whether its side effect happened."""
    (folder / "go").write_text("go")
    if expect_done:
        await _eventually(lambda: (folder / "done").exists(), "the abandoned call never finished")
    else:
        await asyncio.sleep(1.0)  # long past when a live call would have written it
        assert not (folder / "done").exists(), "a stopped call did its side effect"


# -- sync tools in threads: abandoned, truthfully -------------------------------------------


@pytest.mark.usefixtures("no_leftovers")
async def test_a_sync_tool_running_past_the_run_timeout_is_abandoned(tmp_path: Path) -> None:
    compiler = _compiler(f'plain_writer("{tmp_path}")', pt.plain_writer, timeout=1.0)
    result = await _run(compiler)
    task = result.task(1)
    assert task.status is TaskStatus.ABANDONED
    assert task.status.terminal
    assert isinstance(task.error, ToolError)
    assert "abandoned" in task.error.message
    assert "may yet complete its side effects" in task.error.message
    assert (tmp_path / "started").exists()
    # ... and the record was right: the thread goes on and does what it was asked.
    await _go_and_check(tmp_path, expect_done=True)


@pytest.mark.usefixtures("no_leftovers")
async def test_a_sync_tool_past_its_own_timeout_is_failed_and_said_to_be_abandoned(
    tmp_path: Path,
) -> None:
    writer = tool(name="plain_writer", timeout=0.5, cancel_grace=0.1)(pt.write_when_told)
    result = await _run(_compiler(f'plain_writer("{tmp_path}")', writer))
    task = result.task(1)
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.error, ToolTimeoutError)
    assert "did not finish within 0.5 s" in task.error.message
    assert "and was abandoned: its worker thread is still running" in task.error.message
    assert "may yet complete its side effects" in task.error.message
    assert result.answer == "the answer"  # the run went on
    await _go_and_check(tmp_path, expect_done=True)


@pytest.mark.usefixtures("no_leftovers")
async def test_an_async_tool_that_honours_cancellation_is_cancelled(tmp_path: Path) -> None:
    @tool
    async def waits(folder: str) -> str:
        """Waits for go, asynchronously."""
        (Path(folder) / "started").write_text("async")
        while not (Path(folder) / "go").exists():
            await asyncio.sleep(0.01)
        (Path(folder) / "done").write_text("side effect")
        return "done"

    result = await _run(_compiler(f'waits("{tmp_path}")', waits, timeout=1.0))
    task = result.task(1)
    assert task.status is TaskStatus.CANCELLED
    assert task.error is not None
    assert "abandoned" not in task.error.message
    await _go_and_check(tmp_path, expect_done=False)


@tool(cancel_grace=0.2)
async def deaf(folder: str) -> str:
    """Swallows every cancellation, and does its side effect when told to go."""
    where = Path(folder)
    (where / "started").write_text("async")
    deadline = time.monotonic() + pt.PATIENCE
    while not (where / "go").exists() and time.monotonic() < deadline:
        with contextlib.suppress(asyncio.CancelledError):  # a badly behaved tool
            await asyncio.sleep(0.01)
    (where / "done").write_text("side effect")
    return "done"


@pytest.mark.usefixtures("no_leftovers")
async def test_an_async_tool_that_swallows_cancellation_cannot_hold_the_run(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    result = await _run(_compiler(f'deaf("{tmp_path}")', deaf, timeout=1.0))
    assert time.monotonic() - started < 20  # the run's timeout held
    task = result.task(1)
    assert task.status is TaskStatus.ABANDONED
    assert task.error is not None
    assert "coroutine ignored cancellation" in task.error.message
    await _go_and_check(tmp_path, expect_done=True)  # truthful: it went on
    await _eventually(
        lambda: not [t for t in asyncio.all_tasks() if t.get_name().startswith("dagcall-")],
        "the abandoned coroutine never ended",
    )


@pytest.mark.usefixtures("no_leftovers")
async def test_an_async_tool_swallowing_its_timeout_is_failed_and_abandoned(
    tmp_path: Path,
) -> None:
    impatient = tool(name="deaf", timeout=0.3, cancel_grace=0.1)(deaf.function)
    result = await _run(_compiler(f'deaf("{tmp_path}")', impatient))
    task = result.task(1)
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.error, ToolTimeoutError)
    assert "and was abandoned: its coroutine ignored cancellation" in task.error.message
    await _go_and_check(tmp_path, expect_done=True)
    await _eventually(
        lambda: not [t for t in asyncio.all_tasks() if t.get_name().startswith("dagcall-")],
        "the abandoned coroutine never ended",
    )


# -- the cooperative signal -----------------------------------------------------------------


@pytest.mark.parametrize("writer", [pt.polite_writer, pt.quitter_writer])
@pytest.mark.usefixtures("no_leftovers")
async def test_a_sync_tool_polling_the_signal_stops_and_is_cancelled(
    writer: Any, tmp_path: Path
) -> None:
    result = await _run(_compiler(f'{writer.name}("{tmp_path}")', writer, timeout=1.0))
    task = result.task(1)
    assert (tmp_path / "started").exists()
    assert task.status is TaskStatus.CANCELLED, task.error
    assert task.error is not None
    assert "abandoned" not in task.error.message
    assert task.output is None  # a call told to stop has no result, even one it returned
    await _go_and_check(tmp_path, expect_done=False)


@pytest.mark.usefixtures("no_leftovers")
async def test_a_sync_tool_polling_the_signal_past_its_timeout_stops(tmp_path: Path) -> None:
    polite = tool(name="polite", timeout=0.5)(pt.polite_writer.function)
    result = await _run(_compiler(f'polite("{tmp_path}")', polite))
    task = result.task(1)
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.error, ToolTimeoutError)
    assert "abandoned" not in task.error.message
    await _go_and_check(tmp_path, expect_done=False)


@pytest.mark.usefixtures("no_leftovers")
async def test_the_context_is_there_in_every_tool_and_not_cancelled_while_running() -> None:
    seen: dict[str, Any] = {}

    @tool
    def sync_probe(x: int) -> int:
        """Looks at its context from its worker thread."""
        ctx = current_tool_context()
        assert ctx is not None
        ctx.check_cancelled()  # not cancelled: does not raise
        seen["sync"] = (ctx.task_id, ctx.tool, ctx.cancelled, threading.current_thread().name)
        return x

    @tool
    async def async_probe(x: int) -> int:
        """Looks at its context on the loop."""
        ctx = current_tool_context()
        assert ctx is not None
        seen["async"] = (ctx.task_id, ctx.tool, ctx.cancelled)
        return x

    model = ScriptedModel(["1. sync_probe(1)\n2. async_probe(2)\n3. join()", FINISH])
    result = await Compiler(model=model, tools=[sync_probe, async_probe]).arun("q")
    assert [t.status for t in result.tasks] == [TaskStatus.DONE, TaskStatus.DONE]
    assert seen["sync"][:3] == (1, "sync_probe", False)
    assert seen["sync"][3].startswith("dagcall-tool-")
    assert seen["async"] == (2, "async_probe", False)
    assert current_tool_context() is None  # outside a tool


# -- isolation="process": terminated, and provably without its side effect -------------------


@pytest.mark.usefixtures("no_leftovers")
async def test_a_process_tool_past_the_run_timeout_is_terminated(tmp_path: Path) -> None:
    compiler = _compiler(f'process_writer("{tmp_path}")', pt.process_writer, timeout=3.0)
    result = await _run(compiler)
    task = result.task(1)
    assert task.status is TaskStatus.CANCELLED
    assert task.error is not None
    assert "process was terminated" in task.error.message
    await _go_and_check(tmp_path, expect_done=False)


@pytest.mark.usefixtures("no_leftovers")
async def test_a_process_tool_past_its_own_timeout_is_terminated(tmp_path: Path) -> None:
    writer = tool(name="process_writer", isolation="process", timeout=3.0)(pt.write_when_told)
    result = await _run(_compiler(f'process_writer("{tmp_path}")', writer))
    task = result.task(1)
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.error, ToolTimeoutError)
    assert "did not finish within 3 s; its process was terminated" in task.error.message
    await _go_and_check(tmp_path, expect_done=False)


@pytest.mark.parametrize(
    "writer", [pt.process_writer, pt.stubborn_writer], ids=["sigterm", "sigterm-ignored"]
)
@pytest.mark.usefixtures("no_leftovers")
async def test_cancelling_the_run_from_outside_terminates_a_running_process_tool(
    writer: Any, tmp_path: Path
) -> None:
    seen: list[RunResult] = []

    def watch(event: RunEvent) -> None:
        seen.append(event.result)

    compiler = _compiler(f'{writer.name}("{tmp_path}")', writer)
    run = asyncio.create_task(compiler.arun("q", on_event=watch))
    await _started(tmp_path)  # the child is running the function, mid-call
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    task = seen[-1].task(1)
    assert task.status is TaskStatus.CANCELLED
    assert task.error is not None
    assert "process was terminated" in task.error.message
    child = int((tmp_path / "started").read_text())
    assert not _alive(child)
    await _go_and_check(tmp_path, expect_done=False)


@pytest.mark.usefixtures("no_leftovers")
async def test_terminating_a_process_tool_takes_its_own_children_too(tmp_path: Path) -> None:
    seen: list[RunResult] = []
    compiler = _compiler(f'spawning_writer("{tmp_path}")', pt.spawning_writer)
    run = asyncio.create_task(compiler.arun("q", on_event=lambda e: seen.append(e.result)))
    await _started(tmp_path)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    grandchild = int((tmp_path / "grandchild_pid").read_text())
    await _eventually(lambda: not _alive(grandchild), "the tool's own child outlived it")
    assert seen[-1].task(1).status is TaskStatus.CANCELLED


# -- isolation="process": results and failures come back --------------------------------------


@pytest.mark.usefixtures("no_leftovers")
async def test_process_tools_return_results_and_report_every_failure(tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            "1. add(40)\n"
            "2. add(a=1, b=2)\n"
            "3. double_async(21)\n"
            '4. raises_key_error("k")\n'
            "5. raises_unpicklable()\n"
            "6. exits(3)\n"
            "7. kills_itself()\n"
            "8. system_exit()\n"
            "9. returns_lock()\n"
            '10. prints_and_returns("echo")\n'
            "11. makes_lock()\n"
            "12. takes_anything($11)\n"
            '13. takes_anything(["a", 1])\n'
            "14. join()",
            FINISH,
        ]
    )
    tools = [
        pt.add,
        pt.double_async,
        pt.raises_key_error,
        pt.raises_unpicklable,
        pt.exits,
        pt.kills_itself,
        pt.system_exit,
        pt.returns_lock,
        pt.prints_and_returns,
        pt.makes_lock,
        pt.takes_anything,
    ]
    result = await asyncio.wait_for(Compiler(model=model, tools=tools).arun("q"), HANG)
    assert result.answer == "the answer"
    t = {task.id: task for task in result.tasks}
    assert (t[1].status, t[1].output) == (TaskStatus.DONE, 42)  # positional-only, default
    assert t[2].output == 3  # positional-only parameters given by name
    assert t[3].output["value"] == 42
    assert t[3].output["pid"] != os.getpid()  # it did run elsewhere
    assert t[3].output["task"] == 3  # with its task's context
    assert t[10].output == "echo"  # stdout noise and an empty stdin do not disturb it
    assert t[13].output == "list"

    def error(task_id: int) -> str:
        task = t[task_id]
        assert task.status is TaskStatus.FAILED, (task_id, task.status)
        assert isinstance(task.error, ToolExecutionError), (task_id, task.error)
        return task.error.message

    assert "raised KeyError: 'no such key k'" in error(4)
    assert t[4].error is not None
    assert isinstance(t[4].error.__cause__, KeyError)  # the child's exception itself
    assert "raised Unpicklable: held a lock" in error(5)
    assert "exited with code 3" in error(6)
    assert "killed by SIGKILL" in error(7)
    assert "raised SystemExit: 7" in error(8)
    assert "cannot be sent back from its process" in error(9)
    assert "lock" in error(9)
    assert t[11].status is TaskStatus.DONE
    assert "cannot be sent to its process" in error(12)


@pytest.mark.usefixtures("no_leftovers")
async def test_a_process_tool_from_a_file_loaded_by_path(tmp_path: Path) -> None:
    from dagcall.cli import load_tools_file

    source = tmp_path / "my_tools.py"
    source.write_text(
        "import os\n"
        "from dagcall import tool\n\n"
        "@tool(isolation='process')\n"
        "def where(x: int) -> list:\n"
        '    """Where it ran."""\n'
        "    return [x, os.getpid()]\n"
    )
    (where,) = load_tools_file(source)
    result = await asyncio.wait_for(_compiler("where(5)", where).arun("q"), HANG)
    task = result.task(1)
    assert task.status is TaskStatus.DONE, task.error
    assert task.output[0] == 5
    assert task.output[1] != os.getpid()


def _local_function(x: int) -> int:
    return x


class _Adder:
    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, x: int) -> int:
        return x + self.n


def test_process_isolation_refuses_what_a_child_could_not_import() -> None:
    def local(x: int) -> int:
        return x

    class Local:
        def __call__(self, x: int) -> int:
            return x

    refused = {
        "lambda": tool(name="f", isolation="process"),
        "local": tool(isolation="process"),
        "partial of local": tool(name="f", isolation="process"),
        "instance of local class": tool(name="f", isolation="process"),
    }
    subjects: dict[str, Any] = {
        "lambda": lambda x: x,
        "local": local,
        "partial of local": functools.partial(local, x=1),
        "instance of local class": Local(),
    }
    for what, make in refused.items():
        with pytest.raises(ToolDefinitionError, match="isolation='process'"):
            make(subjects[what])
    # Module-level things are fine: a partial and a callable object of module-level parts.
    assert tool(name="scaled", isolation="process")(functools.partial(pt.scale, factor=3))
    assert tool(name="adder", isolation="process")(_Adder(2))


@pytest.mark.usefixtures("no_leftovers")
async def test_picklable_callables_run_in_processes() -> None:
    scaled = tool(name="scaled", isolation="process")(functools.partial(pt.scale, factor=3))
    assert scaled.json_schema["properties"]["factor"]["default"] == 3  # bound, overridable
    assert scaled.description == "Multiply x by factor."
    result = await asyncio.wait_for(_compiler("scaled(7)", scaled).arun("q"), HANG)
    assert result.task(1).output == 21, result.task(1).error


def test_bad_process_options_are_refused() -> None:
    with pytest.raises(ToolDefinitionError, match="isolation"):
        tool(isolation="fork")(pt.scale)  # type: ignore[call-overload]
    with pytest.raises(ToolDefinitionError, match="cancel_grace"):
        tool(cancel_grace=-1)(pt.scale)
