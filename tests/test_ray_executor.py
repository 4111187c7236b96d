"""RayExecutor on real Ray: a local instance (``ray.init(num_cpus=2)``) and a two-node cluster
on this machine (``ray.cluster_utils.Cluster``), driven by real Compiler runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from dagcall import (  # noqa: E402
    ApprovalError,
    AsyncioExecutor,
    Compiler,
    Executor,
    RunTimeoutError,
    SchemaTool,
    ScriptedModel,
    TaskStatus,
    Tool,
    ToolExecutionError,
    ToolTimeoutError,
    current_tool_context,
    tool,
)
from dagcall.ray import RayExecutor  # noqa: E402

FINISH = "Thought: done.\nAction: Finish(ok)"
HERE = Path(__file__).resolve().parent
# The workers import this module (the pydantic model, the stateful tool's class) as pytest
# does: the Ray processes started here inherit PYTHONPATH (a job runtime_env would instead cost
# a fresh worker process per call here: no prestarted workers).
PYTHONPATH = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
INIT = {"include_dashboard": False, "log_to_driver": False}


@contextlib.contextmanager
def ray_env() -> Iterator[None]:
    """The environment the Ray processes started inside inherit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", PYTHONPATH)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.delenv("RAY_ADDRESS", raising=False)
        yield


class Point(BaseModel):
    x: int
    y: int


@tool(placement="remote")
def make_point(x: int, y: int) -> Point:
    """A point."""
    return Point(x=x, y=y)


@tool(placement="remote")
def shift(p: Point, dx: int) -> Point:
    """Move a point."""
    return Point(x=p.x + dx, y=p.y)


@tool(placement="remote")
def stats(values: list[int]) -> dict[str, int]:
    """Sum and count."""
    return {"sum": sum(values), "n": len(values)}


@tool(placement="remote")
def spread(d: dict[str, int]) -> list[int]:
    """A dict's values, sorted."""
    return sorted(d.values())


@tool(placement="remote")
async def twice(x: int) -> int:
    """An async tool as a Ray task."""
    return 2 * x


class Locked:
    """A callable object that cannot be pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self) -> int:
        return 1


locked = Tool(Locked(), name="locked", placement="remote")


class Slowpoke:
    """A stateful sync tool whose second call hangs."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, seconds: float) -> int:
        self.calls += 1
        time.sleep(seconds)
        return self.calls


# Stateful, and clocks: every call must really happen (equal calls are not shared).
slowpoke = Tool(Slowpoke(), name="slowpoke", placement="actor", timeout=1.0, cacheable=False)


@tool(placement="remote")
def boom(x: int) -> int:
    """Fails."""
    raise ValueError(f"boom {x}")


@tool(placement="remote")
def add(a: int, b: int) -> int:
    """Adds."""
    return a + b


@tool(placement="remote")
def pid_remote() -> int:
    """The worker's pid."""
    return os.getpid()


@tool(placement="local")
def pid_local() -> int:
    """This process's pid."""
    return os.getpid()


@tool(placement="local")
def local_nap(seconds: float) -> float:
    """Sleeps here."""
    time.sleep(seconds)
    return seconds


@tool  # auto placement, no resources: the executor's default
def pid_auto() -> int:
    """Where an auto tool runs."""
    return os.getpid()


@tool(placement="remote")
def whereami() -> dict[str, Any]:
    """What a remote call sees of its task."""
    ctx = current_tool_context()
    assert ctx is not None
    return {"task": ctx.task_id, "tool": ctx.tool, "round": ctx.round, "pid": os.getpid()}


@tool(placement="remote")
def napping(seconds: float, marker: str) -> str:
    """Sleeps, then leaves a file behind."""
    time.sleep(seconds)
    Path(marker).write_text("ran to the end")
    return "woke"


@tool(placement="remote", side_effects=True)
def launch(marker: str) -> str:
    """A side effect."""
    Path(marker).write_text("launched")
    return "launched"


@tool(placement="remote", cacheable=False)
def interval(seconds: float) -> list[float]:
    """When the call ran, by the wall clock of the machine."""
    start = time.time()
    time.sleep(seconds)
    return [start, time.time()]


@tool(placement="remote")
def lock() -> Any:
    """Returns what cannot be pickled."""
    return threading.Lock()


@tool(placement="local")
def local_lock() -> Any:
    """A local result that cannot be sent to Ray."""
    return threading.Lock()


@tool(placement="remote")
def describe(value: Any) -> str:
    """Takes anything."""
    return repr(value)


class Counter:
    """A stateful callable object."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, step: int) -> list[int]:
        self.total += step
        return [self.total, os.getpid()]


count = Tool(Counter(), name="count", placement="actor", cacheable=False)


@tool(placement="actor", cacheable=False)
async def apause(seconds: float) -> list[float]:
    """An async tool on its actor."""
    import asyncio

    start = time.time()
    await asyncio.sleep(seconds)
    return [start, time.time(), float(os.getpid())]


@tool(resources={"special": 1})
def on_special() -> str:
    """Needs the special resource."""
    return str(ray.get_runtime_context().get_node_id())


@tool(resources={"num_cpus": 1})
def anywhere() -> str:
    """Any node."""
    return str(ray.get_runtime_context().get_node_id())


def _watched(name: str, retries: int) -> Any:
    def call(seconds: float, marker: str) -> str:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(seconds)
        return str(ray.get_runtime_context().get_node_id())

    return Tool(call, name=name, resources={"special": 1}, retries=retries)


fragile = _watched("fragile", 0)
sturdy = _watched("sturdy", 2)


def run(executor: Executor, plan: str, tools: list[Any], **kw: Any) -> Any:
    compiler = Compiler(model=ScriptedModel([plan, FINISH]), tools=tools, executor=executor, **kw)
    return compiler.run("q")


# -- no Ray needed ---------------------------------------------------------------------------


def test_import_dagcall_does_not_import_ray() -> None:
    code = "import sys, dagcall; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_executor_keeps_its_limits_across_runs_on_new_event_loops() -> None:
    # RayExecutor is meant to live across runs (its actors do); each Compiler.run has its own
    # event loop, and a semaphore may only be waited on from one loop.
    executor = AsyncioExecutor(max_concurrency=1)
    for _ in range(2):
        result = run(executor, "1. local_nap(0.1)\n2. local_nap(0.1)", [local_nap])
        assert [t.status for t in result.tasks] == [TaskStatus.DONE] * 2, result.tasks


# -- a local Ray instance --------------------------------------------------------------------


@pytest.fixture(scope="class")
def local_ray() -> Iterator[None]:
    with ray_env():
        ray.init(address="local", num_cpus=2, **INIT)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
class TestLocalRay:
    def test_typed_results_flow_through_refs(self) -> None:
        plan = (
            "1. make_point(1, 2)\n2. shift($1, 3)\n3. stats([1, 2, 3])\n4. spread($3)\n"
            "5. add(4, 5)\n6. twice($5)\n7. join()"
        )
        with RayExecutor() as executor:
            result = run(executor, plan, [make_point, shift, stats, spread, add, twice])
        assert [t.status for t in result.tasks] == [TaskStatus.DONE] * 6, [
            t.error for t in result.tasks
        ]
        assert result.task(1).output == Point(x=1, y=2)
        assert isinstance(result.task(2).output, Point)
        assert result.task(2).output == Point(x=4, y=2)
        assert result.task(3).output == {"sum": 6, "n": 3}
        assert result.task(4).output == [3, 6]
        assert result.task(5).output == 9
        assert result.task(6).output == 18

    def test_placement_local_stays_in_process_and_remote_does_not(self) -> None:
        plan = "1. pid_local()\n2. pid_remote()\n3. pid_auto()\n4. whereami()"
        with RayExecutor() as executor:
            result = run(executor, plan, [pid_local, pid_remote, pid_auto, whereami])
            assert executor.placement(pid_auto) == "local"  # default_placement="local"
        assert result.task(1).output == os.getpid()
        assert result.task(2).output != os.getpid()
        assert result.task(3).output == os.getpid()
        seen = result.task(4).output
        assert seen["task"] == 4
        assert seen["tool"] == "whereami"
        assert seen["round"] == 0
        assert seen["pid"] != os.getpid()
        with RayExecutor(default_placement="remote") as executor:
            result = run(executor, "1. pid_auto()", [pid_auto])
        assert result.task(1).output != os.getpid()

    def test_a_failing_tool_fails_its_task_only_with_the_remote_message(self) -> None:
        with RayExecutor() as executor:
            result = run(executor, "1. boom(7)\n2. add(1, 2)\n3. add($1, 1)", [boom, add])
        statuses = {t.id: t.status for t in result.tasks}
        assert statuses == {1: TaskStatus.FAILED, 2: TaskStatus.DONE, 3: TaskStatus.SKIPPED}
        error = result.task(1).error
        assert isinstance(error, ToolExecutionError)
        assert error.message == "task 1: boom raised ValueError: boom 7"
        assert result.task(2).output == 3

    def test_approval_refused_dispatches_nothing(self, tmp_path: Path) -> None:
        marker = tmp_path / "launched"
        asked: list[int] = []

        def refuse(record: Any) -> bool:
            asked.append(record.id)
            return False

        with RayExecutor(approve=refuse) as executor:
            result = run(executor, f'1. launch("{marker}")', [launch])
            assert executor._functions == {}  # no Ray function was even made
        assert asked == [1]
        assert result.task(1).status is TaskStatus.FAILED
        assert isinstance(result.task(1).error, ApprovalError)
        assert not marker.exists()
        with RayExecutor(approve=lambda record: True) as executor:
            result = run(executor, f'1. launch("{marker}")', [launch])
        assert result.task(1).output == "launched"
        assert marker.exists()

    def test_max_concurrency_is_honoured(self) -> None:
        with RayExecutor(max_concurrency=1) as executor:
            result = run(executor, "1. interval(0.4)\n2. interval(0.4)", [interval])
        (_, a1), (b0, _) = sorted(result.task(i).output for i in (1, 2))
        assert a1 <= b0  # one after the other

    def test_what_cannot_be_pickled_is_a_clear_error(self) -> None:
        with RayExecutor() as executor:
            result = run(
                executor,
                "1. lock()\n2. local_lock()\n3. describe($2)",
                [
                    lock,
                    local_lock,
                    describe,
                ],
            )
        error = result.task(1).error
        assert isinstance(error, ToolExecutionError)
        assert error.message.startswith("task 1: lock returned a lock, which cannot be sent back")
        assert "cannot pickle" in error.message
        assert result.task(2).status is TaskStatus.DONE
        error = result.task(3).error
        assert isinstance(error, ToolExecutionError)
        assert "describe cannot be sent to Ray: its arguments cannot be pickled" in error.message
        with RayExecutor() as executor:
            result = run(executor, "1. locked()", [locked])
        error = result.task(1).error
        assert isinstance(error, ToolExecutionError)
        assert "locked could not be submitted to Ray" in error.message
        assert "must be picklable" in error.message

    def test_actors_keep_state_and_are_killed_on_close(self) -> None:
        executor = RayExecutor()
        try:
            first = run(executor, "1. count(1)\n2. count(2)\n3. count(3)", [count])
            outputs = sorted(first.task(i).output for i in (1, 2, 3))
            assert [o[0] for o in outputs][-1] == 6  # one Counter, three calls
            assert len({o[1] for o in outputs}) == 1  # one actor process
            again = run(executor, "1. count(10)", [count])  # a later run, the same actor
            assert again.task(1).output == [16, outputs[0][1]]
            parallel = run(executor, "1. apause(0.5)\n2. apause(0.5)", [apause])
            (s1, e1, p1), (s2, e2, p2) = (parallel.task(i).output for i in (1, 2))
            assert p1 == p2  # the same async actor ...
            assert max(s1, s2) < min(e1, e2)  # ... ran both at once
            handles = [h for _, h in executor._actors.values()]
            assert len(handles) == 2
        finally:
            executor.close()
        for handle in handles:
            with pytest.raises(ray.exceptions.RayActorError):
                ray.get(handle.__ray_ready__.remote(), timeout=30)

    def test_tools_that_are_not_functions_stay_local(self) -> None:
        async def look(arguments: Any) -> int:
            return os.getpid()

        schema = {"type": "object", "properties": {}}
        looked = SchemaTool("look", "Look.", schema, look, placement="remote")
        with RayExecutor(default_placement="remote") as executor:
            assert executor.placement(looked) == "local"
            result = run(executor, "1. look()", [looked])
        assert result.task(1).output == os.getpid()

    # These two kill Ray workers: last, so the others find theirs warm.
    def test_a_timeout_cancels_the_ray_task(self, tmp_path: Path) -> None:
        marker = tmp_path / "woke"
        with RayExecutor(tool_timeout=0.5) as executor:
            started = time.monotonic()
            result = run(executor, f'1. napping(2.5, "{marker}")', [napping])
            took = time.monotonic() - started
        task = result.task(1)
        assert task.status is TaskStatus.FAILED
        assert isinstance(task.error, ToolTimeoutError)
        assert "did not finish within 0.5 s" in task.error.message
        assert "its Ray task was cancelled" in task.error.message
        assert took < 2.5
        # The run's own timeout cancels its running call the same way.
        cancelled = tmp_path / "cancelled"
        with RayExecutor() as executor:
            compiler = Compiler(
                model=ScriptedModel([f'1. napping(2.5, "{cancelled}")', FINISH]),
                tools=[napping],
                executor=executor,
                timeout=0.5,
            )
            with pytest.raises(RunTimeoutError) as info:
                compiler.run("q")
        assert info.value.result is not None
        assert info.value.result.task(1).status is TaskStatus.CANCELLED
        time.sleep(2.6)
        assert not marker.exists()  # the calls were really stopped
        assert not cancelled.exists()

    def test_a_sync_actor_is_killed_to_stop_a_call_and_made_anew(self) -> None:
        with RayExecutor() as executor:
            executor.start_actors([slowpoke, pid_local])  # its start-up is not in the timeout
            assert len(executor._actors) == 1  # pid_local runs locally: no actor
            result = run(executor, "1. slowpoke(0)\n2. slowpoke(0)", [slowpoke])
            assert sorted(result.task(i).output for i in (1, 2)) == [1, 2]
            result = run(executor, "1. slowpoke(5)", [slowpoke])
            error = result.task(1).error
            assert isinstance(error, ToolTimeoutError)
            assert "its actor was killed" in error.message
            assert executor._actors == {}  # it was killed
            executor.start_actors([slowpoke])
            result = run(executor, "1. slowpoke(0)", [slowpoke])
            assert result.task(1).output == 1  # a new actor, a new Slowpoke


# -- a two-node cluster on this machine ------------------------------------------------------


@pytest.fixture(scope="class")
def cluster() -> Iterator[Cluster]:
    config = {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 3,
    }
    with ray_env():
        c = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "include_dashboard": False, "_system_config": config},
        )
        c.add_node(num_cpus=2, resources={"special": 2})
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()  # type: ignore[no-untyped-call]


def _special_node(c: Cluster) -> Any:
    return next(n for n in c.worker_nodes if "special" in n._ray_params.resources)


@pytest.mark.slow
class TestCluster:
    def test_resources_place_calls_and_parallel_calls_overlap(self, cluster: Cluster) -> None:
        special = _special_node(cluster)
        with RayExecutor() as executor:
            placed = run(executor, "1. on_special()\n2. anywhere()", [on_special, anywhere])
            # Each call takes one of the cluster's four CPUs: the two overlap.
            plan = "1. interval(1.0)\n2. interval(1.0)\n3. boom(3)"
            result = run(executor, plan, [interval, boom])
        assert placed.task(1).output == special.node_id
        assert placed.task(2).status is TaskStatus.DONE
        (s1, e1), (s2, e2) = (result.task(i).output for i in (1, 2))
        assert max(s1, s2) < min(e1, e2)  # the two calls ran at the same time
        assert result.task(3).status is TaskStatus.FAILED
        error = result.task(3).error
        assert error is not None
        assert "boom raised ValueError: boom 3" in error.message
        assert [result.task(i).status for i in (1, 2)] == [TaskStatus.DONE] * 2

    @pytest.mark.timeout(90)
    def test_a_dead_node_gives_retried_or_failed_tasks_never_a_hang(
        self, cluster: Cluster, tmp_path: Path
    ) -> None:
        doomed = _special_node(cluster)
        markers = [tmp_path / "fragile", tmp_path / "sturdy"]
        plan = f'1. fragile(3, "{markers[0]}")\n2. sturdy(3, "{markers[1]}")'
        box: dict[str, Any] = {}
        executor = RayExecutor(tool_timeout=60)

        def drive() -> None:
            box["result"] = run(executor, plan, [fragile, sturdy])

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        deadline = time.monotonic() + 30
        while not all(m.exists() for m in markers):  # both calls are running on the node
            assert time.monotonic() < deadline, "the calls never started"
            time.sleep(0.05)
        cluster.remove_node(doomed, allow_graceful=False)
        with ray_env():
            replacement = cluster.add_node(num_cpus=2, resources={"special": 2})
        driver.join(timeout=75)
        executor.close()
        assert not driver.is_alive(), "the run hung after its node died"
        result = box["result"]
        lost, retried = result.task(1), result.task(2)
        assert lost.status is TaskStatus.FAILED
        assert isinstance(lost.error, ToolExecutionError)
        assert "failed on Ray: its task did not complete" in lost.error.message
        assert retried.status is TaskStatus.DONE, retried.error
        assert retried.output == replacement.node_id
