"""Tool calls on a Ray cluster: ``Compiler(executor=RayExecutor(...))``.

:class:`RayExecutor` is the local :class:`~dagcall.AsyncioExecutor` with one step changed:
*how a validated, approved call is run*.  Validation, approval of side effects, the global and
per-tool concurrency limits, the per-call timeout and "whatever the tool raised is a failed
task" are the local executor's own code; a call the tool's policy places on Ray is then
submitted as a Ray task (or an actor method call) and awaited from the event loop through its
future, never with ``ray.get``.

Where a call runs is the tool's ``placement`` (see :data:`dagcall.Placement`):

* ``"local"``: in this process, exactly as the local executor runs it;
* ``"remote"``: one Ray task per call, with the tool's ``resources`` (``num_cpus``,
  ``num_gpus``, ``memory`` as Ray's options of those names, any other name as a custom
  resource) and ``retries`` (Ray's ``max_retries``, with ``retry_exceptions=True`` when it is
  above 0: a call whose worker or node died, or that raised, is tried again);
* ``"actor"``: one Ray actor per tool per executor, created on first use with the tool's
  resources; an async tool's calls run as async actor methods (concurrently), a sync tool's one
  at a time, and a callable object keeps its state across calls.  ``retries`` restarts a dead
  actor and retries its calls (those that raised too).  A sync actor is killed to stop a call
  (its timeout, the run's cancellation), losing its state: the next call makes a new one.
  An actor's start-up counts in its first call's timeout, unless
  :meth:`RayExecutor.start_actors` started it beforehand;
* ``"auto"`` (the default): ``"remote"`` when the tool asks for ``resources``, else the
  executor's ``default_placement``.

Tools that are not Python functions (:class:`~dagcall.SchemaTool`, MCP tools) always run
locally.  Arguments go to the worker and results come back pickled (cloudpickle); a value that
cannot be pickled fails its task with a :class:`~dagcall.ToolExecutionError` saying so.

What a remote call sees: :func:`~dagcall.current_tool_context` returns a
:class:`~dagcall.ToolContext` with the task's ``task_id``, ``tool`` and ``round`` (``t0`` is
this process's clock, meaningless elsewhere).  Its ``cancelled`` flag is never set: a remote
call is stopped by Ray instead (the task is force-cancelled, which kills its worker process; an
async actor method is cancelled; a sync actor is killed, and made anew on its next call), and
:func:`~dagcall.call_model` inside it is not added to the run's usage.  ``isolation`` does not
apply remotely (the Ray worker is the call's process).

``import dagcall`` never imports Ray; importing this module does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, cast

import ray
import ray.exceptions
from ray import cloudpickle

from ._context import ToolContext, _current
from ._errors import ToolExecutionError, UsageError
from ._executor import AsyncioExecutor, Invocation
from ._tools import (
    Approver,
    BaseTool,
    Tool,
    _exception_text,
    _RemoteError,
    _RemoteTraceback,
    _safe_text,
)

__all__ = ["RayExecutor"]

#: Seconds to wait for Ray to confirm a cancelled call has ended before reporting it abandoned.
_CANCEL_WAIT = 5.0
#: Options of Ray's own for these resource names; any other name is a custom resource.
_RAY_OPTIONS = ("num_cpus", "num_gpus", "memory")

Where = Literal["local", "remote", "actor"]
# cloudpickle has no type hints.
_dumps = cast(Callable[[Any], bytes], cloudpickle.dumps)
_loads = cast(Callable[[bytes], Any], cloudpickle.loads)


class RayExecutor(AsyncioExecutor):
    """Runs tool calls as Ray tasks or on Ray actors; see the module's documentation.

    ``address``: ``None`` uses Ray as it is when this process is already connected; otherwise
    it connects to the cluster ``RAY_ADDRESS`` names or, without it, starts a new local Ray
    instance (``ray.init(address="local")``, which :meth:`close` shuts down again).  A string
    (``"ray://host:10001"``, ``"auto"``, ``"host:6379"``) is passed as ``ray.init(address=)``.
    ``init_kwargs`` go to ``ray.init`` (``num_cpus=``, ``runtime_env=`` ...).  Ray connects
    a process once: when it is already initialised, that connection is used, whatever
    ``address`` says.

    ``default_placement`` is where tools with ``placement="auto"`` and no ``resources`` run:
    ``"local"`` (the default: a cheap tool does not pay Ray's round trip of milliseconds and
    pickling for nothing; a tool asks for Ray with ``resources=`` or ``placement=``) or
    ``"remote"``.  ``max_concurrency``, ``tool_timeout`` and ``approve`` are the local
    executor's: calls at once across all tools (local and remote), the timeout of tools
    without their own (60 s, the Compiler's default, as a call Ray cannot place, asking for a
    resource no node has, would otherwise wait for ever; ``None``: no limit), and the
    approver of side effects, consulted before anything is dispatched.

    Close it (``close()``, ``await aclose()``, or ``with`` / ``async with``) to kill the
    actors it made.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        default_placement: Literal["local", "remote"] = "local",
        max_concurrency: int | None = None,
        tool_timeout: float | None = 60.0,
        approve: Approver | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if default_placement not in ("local", "remote"):
            raise UsageError(
                "default_placement must be 'local' or 'remote', not "
                f"{_safe_text(default_placement, 40, use_repr=True)}"
            )
        if address is not None and not isinstance(address, str):
            raise UsageError(f"address must be a str or None, not {type(address).__name__}")
        super().__init__(
            max_concurrency=max_concurrency, tool_timeout=tool_timeout, approve=approve
        )
        self.default_placement: Literal["local", "remote"] = default_placement
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs = dict(init_kwargs or {})
            if address is not None:
                kwargs["address"] = address
            elif not os.environ.get("RAY_ADDRESS"):
                # A new local instance, never whatever cluster `ray start` last left behind.
                kwargs.setdefault("address", "local")
            ray.init(**kwargs)
            self._owns_ray = kwargs.get("address") == "local"
        elif init_kwargs:
            raise UsageError(
                "Ray is already initialised in this process; init_kwargs cannot apply (pass "
                "them to ray.init yourself, or leave them out)"
            )
        self._functions: dict[int, tuple[Tool, Any]] = {}  # id(tool) -> (tool, remote fn)
        self._actors: dict[int, tuple[Tool, Any]] = {}  # id(tool) -> (tool, actor handle)
        self._closed = False

    # -- placement ---------------------------------------------------------------------------
    def placement(self, tool: BaseTool) -> Where:
        """Where this executor runs ``tool``'s calls: ``"local"``, ``"remote"`` or
        ``"actor"``."""
        if not isinstance(tool, Tool):
            return "local"  # a SchemaTool, an MCP tool: not a Python function to ship
        if tool.placement == "auto":
            return "remote" if tool.resources else self.default_placement
        return tool.placement

    async def _run_call(self, invocation: Invocation) -> Any:
        tool = invocation.tool
        where = self.placement(tool)
        if where == "local" or not isinstance(tool, Tool):
            return await super()._run_call(invocation)
        if self._closed:
            raise ToolExecutionError(
                f"task {invocation.record.id}: {tool.name} cannot run: its RayExecutor is closed",
                tool=tool.name,
                task_id=invocation.record.id,
            )
        record, ctx = invocation.record, invocation.context
        args, kwargs = tool._split(record.resolved_args or {})
        try:
            blob = _dumps((args, kwargs))
        except Exception as exc:
            raise _failure(
                invocation,
                f"cannot be sent to Ray: its arguments cannot be pickled "
                f"({_exception_text(exc)}); pass picklable values",
            ) from exc
        context = (ctx.task_id, ctx.tool, ctx.round, ctx.t0)
        actor = None
        try:
            if where == "actor":
                actor = self._actor(tool)
                method = actor.call.options(
                    name=f"dagcall.{tool.name}", retry_exceptions=bool(tool.retries)
                )
                ref = method.remote(blob, context)
            else:
                ref = self._function(tool).remote(blob, context)
        except Exception as exc:  # the function (a callable object) cannot be pickled ...
            lines = _safe_text(exc, 300).strip().splitlines()
            raise _failure(
                invocation,
                f"could not be submitted to Ray ({type(exc).__name__}: "
                f"{lines[0] if lines else ''}); a remote tool's function must be picklable",
            ) from exc
        future = asyncio.wrap_future(ref.future())
        try:
            reply = await future
        except asyncio.CancelledError:
            await self._stop(invocation, ref, actor)
            raise
        except ray.exceptions.RayTaskError as exc:
            raised = _remote_exception(exc)
            raise raised from raised.__cause__  # its remote traceback
        except ray.exceptions.RayError as exc:
            raise _failure(invocation, _ray_failure_text(tool, where, exc)) from exc
        return _unpack(invocation, reply)

    async def _stop(self, invocation: Invocation, ref: Any, actor: Any) -> None:
        """Cancel a call's Ray task (kill a sync tool's actor) and wait, bounded, until Ray
        confirms it ended; note on the call's control how it was stopped."""
        tool = invocation.tool
        control = invocation.context._control
        control.cancel()
        if actor is None:
            how = "its Ray task was cancelled (force=True: its worker process was killed)"
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True, recursive=True)
        elif isinstance(tool, Tool) and tool.is_async:
            how = "its actor method was cancelled"
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        else:  # a sync actor method cannot be interrupted: the actor goes, with its state
            how = "its actor was killed (its state is lost; the next call makes a new one)"
            entry = self._actors.get(id(tool))
            if entry is not None and entry[1] is actor:
                del self._actors[id(tool)]
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        ended = asyncio.wrap_future(ref.future())
        done, _ = await asyncio.wait({ended}, timeout=_CANCEL_WAIT)
        if not done:
            ended.cancel()
            control.stopped(
                "abandoned",
                f"Ray did not confirm within {_CANCEL_WAIT:g} s that its task ended; it may "
                "still be running",
            )
            return
        if not ended.cancelled():
            ended.exception()  # TaskCancelledError, ActorDiedError ...: retrieved, it ended
        control.stopped("terminated", how)

    # -- Ray objects -------------------------------------------------------------------------
    def _function(self, tool: Tool) -> Any:
        """The tool's Ray remote function, made on first use."""
        entry = self._functions.get(id(tool))
        if entry is None:
            function = tool.function

            def run(blob: bytes, context: tuple[Any, ...]) -> tuple[Any, ...]:
                return _run_here(function, blob, context)

            run.__name__ = run.__qualname__ = f"dagcall.{tool.name}"
            options: dict[str, Any] = {**ray_options(tool.resources), "max_retries": tool.retries}
            if tool.retries:
                options["retry_exceptions"] = True
            remote = ray.remote(run).options(name=f"dagcall.{tool.name}", **options)
            entry = self._functions[id(tool)] = (tool, remote)
        return entry[1]

    def _actor(self, tool: Tool) -> Any:
        """The tool's actor, created on first use (or again after it was killed)."""
        entry = self._actors.get(id(tool))
        if entry is None:
            host: type = _AsyncHost if tool.is_async else _SyncHost
            options: dict[str, Any] = {
                **ray_options(tool.resources),
                "max_restarts": tool.retries,
                "max_task_retries": tool.retries,
                # A sync tool's calls one at a time (its state is not shared by threads).
                "max_concurrency": (tool.max_concurrency or 1000) if tool.is_async else 1,
            }
            handle: Any = ray.remote(host).options(**options).remote(tool.function)
            entry = self._actors[id(tool)] = (tool, handle)
        return entry[1]

    def start_actors(self, tools: Iterable[BaseTool], timeout: float | None = 120.0) -> None:
        """Create the actors of those of ``tools`` placed on actors now, and wait (up to
        ``timeout`` seconds) until they are ready: an actor's start-up (a new worker process,
        the tool's state) otherwise counts in its first call's timeout.  Call it from sync
        code, not from a coroutine (it blocks)."""
        handles = [
            self._actor(t) for t in tools if isinstance(t, Tool) and self.placement(t) == "actor"
        ]
        if handles:
            ray.get([h.__ray_ready__.remote() for h in handles], timeout=timeout)

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Kill the actors this executor made, and shut down the Ray instance it started."""
        self._closed = True
        actors, self._actors = self._actors, {}
        for _, handle in actors.values():
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
        for _, handle in actors.values():
            _wait_dead(handle)
        self._functions = {}
        if self._owns_ray:
            self._owns_ray = False
            with contextlib.suppress(Exception):
                ray.shutdown()

    async def aclose(self) -> None:
        """:meth:`close`, from a coroutine."""
        self.close()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RayExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def ray_options(resources: Mapping[str, float] | None) -> dict[str, Any]:
    """Ray's task or actor options for a tool's ``resources``: ``num_cpus``, ``num_gpus`` and
    ``memory`` (bytes) as themselves, any other name in ``resources=``."""
    options: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for name, amount in (resources or {}).items():
        if name == "memory":
            options[name] = int(amount)
        elif name in _RAY_OPTIONS:
            options[name] = amount
        else:
            custom[name] = amount
    if custom:
        options["resources"] = custom
    return options


# -- on the worker -----------------------------------------------------------------------------


def _wait_dead(handle: Any, patience: float = 10.0) -> None:
    """Return once a killed actor is gone (``ray.kill`` is asynchronous: a call sent right
    after it may still be served), or after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while (left := deadline - time.monotonic()) > 0:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=min(1.0, left))
        except ray.exceptions.GetTimeoutError:
            continue
        except Exception:  # RayActorError: it is dead (or the cluster is gone)
            return
        time.sleep(0.05)


def _run_here(
    function: Callable[..., Any], blob: bytes, context: tuple[Any, ...]
) -> tuple[Any, ...]:
    """Run one call in a Ray worker: the tool's context set, an async tool to completion;
    its result pickled here, so a result that cannot be is reported as such."""
    args, kwargs = _loads(blob)
    token = _current.set(ToolContext(*context))
    try:
        value = function(*args, **kwargs)
        if _awaitable(value):
            value = asyncio.run(_awaited(value))
    except Exception:
        raise  # Ray sends it back (and retries it when the tool has retries)
    except BaseException as exc:  # SystemExit and the like would take the worker down
        raise _RemoteError(type(exc).__name__, _safe_text(exc)) from None
    finally:
        _current.reset(token)
    return _pack(value)


async def _awaited(value: Any) -> Any:
    return await value


def _awaitable(value: Any) -> bool:
    try:
        return inspect.isawaitable(value)
    except Exception:
        return False


def _pack(value: Any) -> tuple[Any, ...]:
    try:
        return ("ok", _dumps(value))
    except Exception as exc:
        return ("unpicklable", type(value).__name__, _exception_text(exc))


class _SyncHost:
    """The actor of a sync tool: holds the function (a callable object keeps its state)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def call(self, blob: bytes, context: tuple[Any, ...]) -> tuple[Any, ...]:
        return _run_here(self.function, blob, context)


class _AsyncHost:
    """The actor of an async tool: its calls are coroutines on the actor's event loop."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    async def call(self, blob: bytes, context: tuple[Any, ...]) -> tuple[Any, ...]:
        args, kwargs = _loads(blob)
        token = _current.set(ToolContext(*context))
        try:
            value = self.function(*args, **kwargs)
            if _awaitable(value):
                value = await value
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException as exc:
            raise _RemoteError(type(exc).__name__, _safe_text(exc)) from None
        finally:
            _current.reset(token)
        return _pack(value)


# -- back in the driver ------------------------------------------------------------------------


def _failure(invocation: Invocation, text: str) -> ToolExecutionError:
    record, tool = invocation.record, invocation.tool
    return ToolExecutionError(
        f"task {record.id}: {tool.name} {text}", tool=tool.name, task_id=record.id
    )


def _unpack(invocation: Invocation, reply: Any) -> Any:
    """The call's result from its worker's reply."""
    if isinstance(reply, tuple) and reply and reply[0] == "ok":
        try:
            return _loads(reply[1])
        except Exception as exc:
            raise _failure(
                invocation,
                f"returned a result this process cannot unpickle ({_exception_text(exc)})",
            ) from exc
    if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == "unpicklable":
        raise _failure(
            invocation,
            f"returned a {reply[1]}, which cannot be sent back from Ray ({reply[2]}); return "
            "picklable data",
        )
    raise _failure(invocation, "sent back a reply the executor does not understand")


def _remote_exception(exc: ray.exceptions.RayTaskError) -> BaseException:
    """What the tool raised remotely, with Ray's traceback text as its cause (the task's
    message is then the tool's exception alone, as for a local call)."""
    cause: BaseException | None = getattr(exc, "cause", None)
    while isinstance(cause, ray.exceptions.RayTaskError):  # nested tasks
        cause = getattr(cause, "cause", None)
    if not isinstance(cause, BaseException):
        first = _safe_text(exc).strip().splitlines()
        cause = _RemoteError(
            getattr(exc, "function_name", None) or "RayTaskError", first[-1] if first else ""
        )
    with contextlib.suppress(Exception):
        if cause.__cause__ is None:
            cause.__cause__ = _RemoteTraceback(_safe_text(getattr(exc, "traceback_str", ""), 20000))
    return cause


def _ray_failure_text(tool: Tool, where: Where, exc: ray.exceptions.RayError) -> str:
    """A system failure (worker, node or actor died, object lost), after any retries."""
    first = _safe_text(exc, 400).strip().splitlines()
    detail = f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__
    if len(first) > 1:
        detail += " …"
    what = "actor" if where == "actor" else "task"
    tries = (
        f" after {tool.retries} retr{'y' if tool.retries == 1 else 'ies'}" if tool.retries else ""
    )
    return f"failed on Ray: its {what} did not complete{tries} ({detail})"
