"""The task fetching unit: dependency bookkeeping and dispatch (the executor runs the calls).

Tasks arrive from the parser one at a time while the planner is still streaming.  A task whose
dependencies are all done starts at once; otherwise it waits, and the completion of its last
dependency starts it.  Dispatch is driven entirely by task arrival and task completion
callbacks: nothing polls.  A task whose dependency failed, was skipped or was cancelled is
skipped with a :class:`DependencyError` naming the culprit, and that cascades.

The optimisations (:class:`~dagcall.Optimizations`, set by :meth:`Scheduler.configure`) live
here too:

* field access: a reference's selection (``$1.city``) is resolved when the task is
  dispatched; one that does not exist fails that task with a :class:`ToolArgumentError`;
* common calls run once: before a call, its validated arguments are keyed (tool name and
  canonical JSON); a task with the key of an earlier one (running or ended) of a tool
  without side effects takes that one's outcome.  A failure is shared only within its round,
  so that a replan retries it.  Tools marked ``cacheable`` are looked up in, and stored to,
  the call cache;
* critical-path scheduling: with ``max_concurrency``, at most that many tasks are handed to
  the executor at once, and a freed slot goes to the waiting task with the longest remaining
  path through the tasks known so far (estimated per tool), ties to the lower id.  Granting
  happens when a task arrives or a call ends: nothing polls.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._cache import CacheHit, CallCache, call_key
from ._context import ToolContext, _ignore_call, _no_limit
from ._errors import (
    DagcallError,
    DependencyError,
    PlanError,
    ToolArgumentError,
    ToolError,
    ToolExecutionError,
)
from ._executor import (
    AsyncioExecutor,
    Executor,
    Invocation,
    Outcome,
    cancelled_by_us,
    cancelled_error,
    tool_failure,
)
from ._optimize import LatencyEstimates, Optimizations
from ._plan import Ref, SelectionError, TaskSpec, Template, path_text, record_fields, select
from ._result import LLMCall, TaskRecord, TaskStatus, observation_text
from ._tools import MAX_SHOWN_FIELDS, Approver, BaseTool

__all__ = ["Scheduler"]

log = logging.getLogger("dagcall")


class Scheduler:
    """The task fetching unit: starts each task of a run the moment its dependencies are done,
    and hands it to the ``executor`` (by default an :class:`AsyncioExecutor` built from
    ``max_concurrency``, ``tool_timeout`` and ``approve``).

    ``records`` holds every task of the run (all rounds), so later rounds can use earlier
    results.  ``record_llm_call`` receives a tool's own model calls; ``tokens_left`` tells
    them the run's remaining token budget; ``on_change`` sees every task transition.
    """

    def __init__(
        self,
        tools: Mapping[str, BaseTool],
        *,
        t0: float,
        max_concurrency: int | None = None,
        tool_timeout: float | None = None,
        record_llm_call: Callable[[LLMCall], None] | None = None,
        on_change: Callable[[TaskRecord], None] | None = None,
        approve: Approver | None = None,
        tokens_left: Callable[[], int | None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        if executor is None:
            executor = AsyncioExecutor(
                max_concurrency=max_concurrency, tool_timeout=tool_timeout, approve=approve
            )
        self._executor = executor
        self._tokens_left = tokens_left
        self._tools = tools
        self._record_llm_call = record_llm_call
        self._on_change = on_change
        self._t0 = t0
        self.records: dict[int, TaskRecord] = {}
        self._waiting_on: dict[int, set[int]] = {}  # task -> unfinished deps
        self._dependents: dict[int, list[int]] = {}  # dep -> tasks waiting for it
        self._specs: dict[int, TaskSpec] = {}
        self._root_cause: dict[int, int] = {}  # skipped task -> the failure its chain began at
        self._closing = False  # cancel_all has begun: waiters of ending tasks are cancelled
        self._running: set[asyncio.Task[None]] = set()
        self._unfinished = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_concurrency = max_concurrency
        self._children: dict[int, list[int]] = {}  # task -> every task that uses its result
        self._calls: dict[str, _SharedCall] = {}  # call key -> the task that made the call
        # Until configured (the compiler does): the plan language's field access only.
        self.optimize = Optimizations(dedupe="off", critical_path=False)
        self.call_cache: CallCache | None = None
        self.latencies = LatencyEstimates()
        self._gate: _PriorityGate | None = None

    def configure(
        self,
        *,
        optimize: Optimizations | None = None,
        call_cache: CallCache | None = None,
        latencies: LatencyEstimates | None = None,
    ) -> None:
        """Set the optimisations (by default only field access), the call cache and the
        latency estimates critical-path scheduling uses; before the first task is submitted."""
        if optimize is not None:
            self.optimize = optimize
        self.call_cache = call_cache
        if latencies is not None:
            self.latencies = latencies
        self._gate = None
        if self.optimize.critical_path and self._max_concurrency:
            self._gate = _PriorityGate(self._max_concurrency, self._priorities)

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    # -- intake ----------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, round_index: int) -> TaskRecord:
        """Accept a parsed task; start it now if its dependencies are done."""
        record = TaskRecord(
            id=spec.id,
            tool=spec.tool,
            call=spec.call,
            round=round_index,
            args=spec.raw_args,
            kwargs=spec.raw_kwargs,
            deps=tuple(sorted(spec.deps)),
            thought=spec.thought,
            parsed_at=self._now(),
        )
        self.records[spec.id] = record
        self._specs[spec.id] = spec
        for dep in spec.deps:
            self._children.setdefault(dep, []).append(spec.id)
        self._changed(record)
        self._unfinished += 1
        self._idle.clear()
        pending: set[int] = set()
        for dep in spec.deps:
            dep_record = self.records[dep]
            if not dep_record.status.terminal:
                pending.add(dep)
            elif dep_record.status is not TaskStatus.DONE:
                self._skip(record, dep_record)
                return record
        if pending:
            self._waiting_on[spec.id] = pending
            for dep in pending:
                self._dependents.setdefault(dep, []).append(spec.id)
        else:
            self._start(record)
        return record

    def reject(self, error: PlanError, round_index: int) -> TaskRecord | None:
        """Record a task line that could not be parsed as a failed task, when it had an id."""
        if error.task_id is None or error.task_id in self.records:
            return None
        record = TaskRecord(
            id=error.task_id,
            tool="",
            call=error.line,
            round=round_index,
            status=TaskStatus.FAILED,
            error=error,
            parsed_at=self._now(),
        )
        self.records[error.task_id] = record
        self._changed(record)
        return record

    # -- dispatch --------------------------------------------------------------------------
    def _start(self, record: TaskRecord) -> None:
        record.ready_at = self._now()
        task = asyncio.create_task(self._run(record), name=f"dagcall:{record.tool}#{record.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _skip(self, record: TaskRecord, culprit: TaskRecord) -> None:
        """Skip ``record`` because ``culprit`` did not finish, and cascade to its waiters."""
        self._mark_skipped(record, culprit)
        self._finish(record, TaskStatus.SKIPPED)

    def _mark_skipped(self, record: TaskRecord, culprit: TaskRecord) -> None:
        # The message names the direct culprit and the first failure of the chain only, so a
        # chain of 10,000 skips has 10,000 short messages, not nested ones of quadratic size.
        root_id = self._root_cause.get(culprit.id, culprit.id)
        self._root_cause[record.id] = root_id
        root = self.records[root_id]
        why = _status_text(culprit)
        if root is not culprit:
            why += f"; the chain started at task {root.id} ({root.tool or 'invalid'}), "
            why += _status_text(root)
        record.status = TaskStatus.SKIPPED  # terminal now, so a cascade reaches it only once
        record.error = DependencyError(
            f"task {record.id} ({record.tool}) was skipped because task {culprit.id} "
            f"({culprit.tool or 'invalid'}) did not finish ({why})",
            tool=record.tool,
            task_id=record.id,
        )

    def _changed(self, record: TaskRecord) -> None:
        if self._on_change is not None:
            self._on_change(record)

    def _finish(self, record: TaskRecord, status: TaskStatus) -> None:
        """Make ``record`` terminal; start the waiters it was the last dependency of, and skip
        (iteratively, to any depth) those it leaves without an input."""
        stack = [(record, status)]
        while stack:
            rec, st = stack.pop()
            rec.status = st
            if rec.ended_at is None:
                rec.ended_at = self._now()
            self._changed(rec)
            self._waiting_on.pop(rec.id, None)
            self._unfinished -= 1
            for waiter_id in self._dependents.pop(rec.id, ()):
                waiter = self.records[waiter_id]
                if waiter.status.terminal:
                    continue
                if self._closing:
                    waiter.status = TaskStatus.CANCELLED
                    waiter.error = cancelled_error(waiter)
                    stack.append((waiter, TaskStatus.CANCELLED))
                    continue
                if st is not TaskStatus.DONE:
                    self._mark_skipped(waiter, rec)
                    stack.append((waiter, TaskStatus.SKIPPED))
                    continue
                pending = self._waiting_on.get(waiter_id)
                if pending is not None:
                    pending.discard(rec.id)
                    if not pending:
                        del self._waiting_on[waiter_id]
                        self._start(waiter)
        if self._unfinished == 0:
            self._idle.set()

    # -- execution -------------------------------------------------------------------------
    async def _run(self, record: TaskRecord) -> None:
        """Hand one task to the executor (or reuse an equal call's outcome) and record how it
        ended."""
        tool = self._tools[record.tool]
        spec = self._specs[record.id]
        context = ToolContext(
            record.id,
            tool.name,
            record.round,
            self._t0,
            self._record_llm_call or _ignore_call,
            self._tokens_left or _no_limit,
        )
        control = context._control
        status = TaskStatus.FAILED
        shared: _SharedCall | None = None  # the call this task makes for equal ones
        held: _PriorityGate | None = None  # the gate whose slot this task holds
        try:
            args = tuple(self._resolve(a, record) for a in spec.args)
            kwargs = {k: self._resolve(v, record) for k, v in spec.kwargs.items()}
            keyed = self._call_key(record, tool, args, kwargs)
            key = None if keyed is None else keyed[0]
            outcome = None
            if keyed is not None and self._shareable(tool):
                outcome = await self._reuse(record, keyed[0], keyed[1])
                if outcome is None:
                    shared = self._calls[keyed[0]] = _SharedCall(
                        record.id, record.round, asyncio.get_running_loop().create_future()
                    )
            cache = self.call_cache if tool.cacheable and key is not None else None
            if outcome is None and cache is not None and key is not None and keyed is not None:
                hit = _cache_get(cache, key)
                record.cache = "miss" if hit is None else "hit"
                if hit is not None:
                    record.resolved_args = keyed[1]
                    self._started(record)
                    outcome = Outcome.done(hit.value)
            if outcome is None:
                invocation = Invocation(
                    record, tool, args, kwargs, context, lambda: self._started(record)
                )
                if self._gate is not None:
                    await self._gate.acquire(record.id, tool.name, tool.max_concurrency)
                    held = self._gate
                outcome = await self._executor.execute(invocation)
                if outcome.status is TaskStatus.DONE:
                    if record.started_at is not None:
                        self.latencies.observe(tool.name, self._now() - record.started_at)
                    if cache is not None and key is not None:
                        _cache_put(cache, key, outcome.output, tool.cache_ttl)
            status = outcome.status if outcome.status.terminal else TaskStatus.FAILED
            record.output, record.error = outcome.output, outcome.error
            if status is TaskStatus.FAILED and outcome.error is not None:
                _add_note(outcome.error, self._record_note(spec))
            if status is not TaskStatus.DONE and record.error is None:
                record.error = ToolExecutionError(
                    f"task {record.id}: the executor reported {outcome.status.value} with no error",
                    tool=tool.name,
                    task_id=record.id,
                )
        except _ArgumentFailure as exc:
            record.error = exc.error
        except asyncio.CancelledError as exc:
            if cancelled_by_us(control):
                abandoned = control.outcome == "abandoned"
                status = TaskStatus.ABANDONED if abandoned else TaskStatus.CANCELLED
                record.error = cancelled_error(record, control)
                raise
            record.error = tool_failure(record, tool, exc)
        except BaseException as exc:  # an executor that broke its contract
            record.error = tool_failure(record, tool, exc)
        finally:
            record.ended_at = self._now()
            if shared is not None and not shared.outcome.done():
                shared.outcome.set_result(_Ended(status, record.output, record.error))
            self._finish(record, status)
            if held is not None:  # after _finish: the tasks it made ready compete for the slot
                held.release(tool.name)

    def _call_key(
        self, record: TaskRecord, tool: BaseTool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """The key equal calls share and the validated arguments, when this call may be
        shared or cached."""
        shareable = self._shareable(tool)
        if not shareable and not (tool.cacheable and self.call_cache is not None):
            return None
        try:
            validated = tool.validate(args, kwargs, task_id=record.id)
            # Defaults the schema declares count as given: f("a") is f("a", n=1).
            arguments = dict(validated)
            properties = tool.json_schema.get("properties")
            if isinstance(properties, Mapping):
                for name, prop in properties.items():
                    if name not in arguments and isinstance(prop, Mapping) and "default" in prop:
                        arguments[name] = prop["default"]
        except Exception:  # the executor reports it, as the task's error
            return None
        key = call_key(tool.name, arguments)
        return None if key is None else (key, validated)

    def _shareable(self, tool: BaseTool) -> bool:
        """Whether equal calls of ``tool`` in this run may share one outcome."""
        scope = self.optimize.dedupe
        if tool.side_effects or scope == "off" or tool.cacheable is False:
            return False
        return scope == "pure" or tool.cacheable is True

    async def _reuse(
        self, record: TaskRecord, key: str, arguments: dict[str, Any]
    ) -> Outcome | None:
        """The outcome of the earlier equal call, when this task may take it."""
        earlier = self._calls.get(key)
        if earlier is None:
            return None
        if not earlier.outcome.done():
            record.reused_from = earlier.task_id
            self._started(record)
            await asyncio.shield(earlier.outcome)
        ended = earlier.outcome.result()
        same_round = earlier.round == record.round
        if ended.status is not TaskStatus.DONE and (
            ended.status is not TaskStatus.FAILED or not same_round
        ):
            # Cancelled, or failed in an earlier round: call again (a replan may retry).
            record.reused_from = None
            return None
        if record.reused_from is None:
            record.reused_from = earlier.task_id
            self._started(record)
        record.resolved_args = arguments
        if ended.status is TaskStatus.DONE:
            return Outcome.done(ended.output)
        return Outcome.failed(_reused_error(record, earlier.task_id, ended.error))

    def _priorities(self, task_ids: list[int]) -> dict[int, float]:
        """The remaining path of each task: its tool's estimated latency plus the longest
        remaining path of the tasks (known so far, not yet ended) that use its result."""
        memo: dict[int, float] = {}
        records, children = self.records, self._children
        for root in task_ids:
            stack = [root]
            while stack:  # iterative post-order: chains of any length
                node = stack[-1]
                if node in memo:
                    stack.pop()
                    continue
                pending = [c for c in children.get(node, ()) if c not in memo]
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                rec = records[node]
                if rec.status.terminal and node != root:
                    memo[node] = 0.0
                    continue
                below = max((memo[c] for c in children.get(node, ())), default=0.0)
                memo[node] = self.latencies.estimate(rec.tool) + below
        return {t: memo[t] for t in task_ids}

    def _started(self, record: TaskRecord) -> None:
        record.started_at = self._now()
        record.status = TaskStatus.RUNNING
        self._changed(record)

    def _resolve(self, value: Any, record: TaskRecord) -> Any:
        if isinstance(value, Ref):
            if value.path and not self.optimize.field_access:
                return self._text(Ref(value.task_id)) + path_text(value.path)
            return self._select(value, record)
        if isinstance(value, Template):
            return "".join(self._text(p, record) if isinstance(p, Ref) else p for p in value.parts)
        if isinstance(value, list):
            return [self._resolve(v, record) for v in value]
        if isinstance(value, tuple):
            return tuple(self._resolve(v, record) for v in value)
        if isinstance(value, dict):
            return {k: self._resolve(v, record) for k, v in value.items()}
        return value

    def _record_note(self, spec: TaskSpec) -> str:
        """For a failed task that passed a whole structured result (a record with fields),
        by itself or spliced into text: which fields it has and how to select one, so the
        replanner can mend ``calculator("$4 * 3")`` into ``calculator("$4.weight_kg * 3")``."""
        notes = []
        pieces = _pieces([*spec.args, *spec.kwargs.values()])
        whole = [p.task_id for p in pieces if isinstance(p, Ref) and not p.path]
        for ref in dict.fromkeys(whole):
            rec = self.records.get(ref)
            fields = record_fields(None if rec is None else rec.output)
            if not fields:
                continue
            numbers = [f for f, v in fields.items() if type(v) in (int, float)]
            pick = (numbers or list(fields))[0]
            shown = ", ".join(list(fields)[:MAX_SHOWN_FIELDS])
            if len(fields) > MAX_SHOWN_FIELDS:
                shown += ", ..."
            notes.append(
                f"${ref} is a record with the fields {shown}; pass one of them by selecting "
                f"it, as in ${ref}{path_text((pick,))}"
            )
        written = [int(n) for p in pieces if isinstance(p, str) for n in _DOLLAR_NUMBER.findall(p)]
        later = sorted({n for n in written if n >= spec.id})
        if later:
            named = ", ".join(f"${n}" for n in later)
            notes.append(
                f"{named} in task {spec.id}'s arguments is not an earlier task, so it stayed "
                "text: a task can use only the results of tasks numbered before it"
            )
        return "; ".join(dict.fromkeys(notes))

    def _text(self, ref: Ref, record: TaskRecord | None = None) -> str:
        if ref.path and not self.optimize.field_access:
            return self._text(Ref(ref.task_id)) + path_text(ref.path)
        value = self.records[ref.task_id].output if record is None else self._select(ref, record)
        return observation_text(value, None)

    def _select(self, ref: Ref, record: TaskRecord) -> Any:
        output = self.records[ref.task_id].output
        if not ref.path:
            return output
        try:
            return select(output, ref.path, name=f"${ref.task_id}")
        except SelectionError as exc:
            raise _ArgumentFailure(
                ToolArgumentError(
                    f"task {record.id} ({record.tool}): {_clip(str(ref))} in its arguments: "
                    f"{exc.message}",
                    tool=record.tool,
                    task_id=record.id,
                )
            ) from None

    # -- waiting and cancelling ------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        """Tasks accepted but not yet finished (waiting or running)."""
        return self._unfinished

    async def wait_idle(self) -> None:
        """Wait until every accepted task has finished."""
        await self._idle.wait()

    async def cancel_all(self) -> None:
        """Cancel every running task, mark every waiting one cancelled, and wait for them."""
        # Waiting tasks were cancelled too, not skipped for a failed input: mark them first, so
        # the running ones' ends do not cascade into skips.
        self._closing = True
        for record in list(self.records.values()):
            if record.status is TaskStatus.WAITING and record.id in self._waiting_on:
                record.error = cancelled_error(record)
                self._finish(record, TaskStatus.CANCELLED)
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        for record in list(self.records.values()):
            if not record.status.terminal:
                record.error = cancelled_error(record)
                self._finish(record, TaskStatus.CANCELLED)


_REASON_CHARS = 300


def _pieces(values: list[Any]) -> list[Ref | str]:
    """The references and the text of ``values`` (arguments as parsed: a reference, a
    :class:`Template` of text and references, text, or lists, tuples and dicts of them), in
    order."""
    found: list[Ref | str] = []
    stack = list(reversed(values))
    while stack:
        value = stack.pop()
        if isinstance(value, Ref | str):
            found.append(value)
        elif isinstance(value, Template):
            stack.extend(reversed(value.parts))
        elif isinstance(value, list | tuple):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
    return found


_DOLLAR_NUMBER = re.compile(r"\$\{?(\d{1,6})\}?(?![\d.,])")


def _add_note(error: DagcallError, note: str) -> None:
    """Append ``note`` to a recorded error's message (an error made for this task)."""
    try:
        if not note or note in error.message:
            return
        error.message = f"{error.message} (note: {note})"
        error.args = (error.message, *error.args[1:])
    except Exception:  # an error that will not take it keeps its own message
        return


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _cache_get(cache: CallCache, key: str) -> CacheHit | None:
    """A cache's entry; a cache that fails (a broken file, say) is a miss, not the task's."""
    try:
        hit = cache.get(key)
    except Exception as exc:
        log.warning("dagcall: the call cache failed to read (%s); calling the tool", exc)
        return None
    return hit if isinstance(hit, CacheHit) else None


def _cache_put(cache: CallCache, key: str, value: Any, ttl: float | None) -> None:
    try:
        cache.put(key, value, ttl)
    except Exception as exc:
        log.warning("dagcall: the call cache failed to store a result (%s)", exc)


class _ArgumentFailure(Exception):
    """A reference's selection does not exist: the task fails with ``error``."""

    def __init__(self, error: ToolArgumentError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class _Ended:
    status: TaskStatus
    output: Any
    error: DagcallError | None


@dataclass(frozen=True, slots=True)
class _SharedCall:
    """A call that equal calls of the run may take the outcome of."""

    task_id: int
    round: int
    outcome: asyncio.Future[_Ended]


def _reused_error(record: TaskRecord, source: int, error: DagcallError | None) -> DagcallError:
    """The failure of task ``source``, as the error of ``record``, which reused it."""
    text = error.message if error is not None else "it failed"
    message = f"task {record.id}: the same call as task {source} failed: {text}"
    try:
        reused = copy.copy(error) if error is not None else None
        if reused is None:
            raise TypeError
        reused.message = message
        reused.args = (message,)
        if isinstance(reused, ToolError):
            reused.task_id = record.id
        reused.__cause__ = error
        return reused
    except Exception:
        failure = ToolExecutionError(message, tool=record.tool, task_id=record.id)
        failure.__cause__ = error
        return failure


class _PriorityGate:
    """At most ``limit`` holders at once, and at most a tool's own ``max_concurrency`` of its
    calls; a freed slot goes to the waiter with the highest priority (``priorities`` of the
    waiting task ids, computed when the slot is handed over) whose tool has room, ties to the
    lower id.  Event-driven: ``acquire`` and ``release`` schedule one hand-over, run by the
    event loop after the callbacks already scheduled, so that the tasks a finished call made
    ready (started by then, and waiting here) compete for its slot too."""

    def __init__(self, limit: int, priorities: Callable[[list[int]], dict[int, float]]) -> None:
        self._free = limit
        self._priorities = priorities
        self._waiters: dict[int, tuple[str, int | None, asyncio.Future[None]]] = {}
        self._busy: dict[str, int] = {}  # tool -> calls holding a slot
        self._pending: asyncio.Handle | None = None  # the scheduled hand-over

    async def acquire(self, task_id: int, tool: str, tool_limit: int | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[task_id] = (tool, tool_limit, waiter)
        self._schedule()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(tool)  # granted, then cancelled before it could run: pass it on
            raise
        finally:
            entry = self._waiters.get(task_id)
            if entry is not None and entry[2] is waiter:
                del self._waiters[task_id]

    def release(self, tool: str) -> None:
        self._free += 1
        self._busy[tool] -= 1
        self._schedule()

    def _schedule(self) -> None:
        if self._pending is None and self._waiters:
            self._pending = asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Grant free slots to the best waiters whose tools have room."""
        self._pending = None
        score: dict[int, float] | None = None
        while self._free > 0:
            ready = [
                t
                for t, (tool, limit, w) in self._waiters.items()
                if not w.done() and (limit is None or self._busy.get(tool, 0) < limit)
            ]
            if not ready:
                return
            if len(ready) == 1:
                best = ready[0]
            else:
                if score is None or any(t not in score for t in ready):
                    score = self._priorities(ready)
                current = score
                best = min(ready, key=lambda t: (-current[t], t))
            tool, _, waiter = self._waiters.pop(best)
            self._free -= 1
            self._busy[tool] = self._busy.get(tool, 0) + 1
            waiter.set_result(None)


def _status_text(record: TaskRecord) -> str:
    """``failed: <message>`` for a task that did not finish, bounded in length."""
    why = record.status.value
    if record.error is not None and not isinstance(record.error, DependencyError):
        message = record.error.message
        if len(message) > _REASON_CHARS:
            message = message[:_REASON_CHARS] + "…"
        why += f": {message}"
    return why
