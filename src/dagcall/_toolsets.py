"""Tools defined by a JSON Schema, and toolsets: tools that come from somewhere (a server).

A :class:`SchemaTool` is a name, a description, the JSON Schema of its arguments and an async
callable taking the validated arguments as a dict: what a remote tool (MCP) is.  A
:class:`Toolset` provides tools when it is opened (``await toolset.open()`` returns them) and
releases what it holds when closed (``await toolset.aclose()``).  :class:`Toolbox` is how a
compiler holds its tools: the ones it was given, and those of its toolsets once opened.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from jsonschema import validators  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]
from pydantic_core import to_jsonable_python

from ._context import _CallControl, _current
from ._errors import DagcallError, ToolArgumentError, ToolDefinitionError, UsageError
from ._tools import (
    BaseTool,
    Placement,
    Tool,
    _bounded,
    _exception_text,
    _is_async,
    _run_as_task,
    _safe_text,
    _tool_name,
    schema_signature,
)

__all__ = ["DelegatingTool", "SchemaTool", "Toolbox", "Toolset", "as_tool"]

log = logging.getLogger("dagcall")

#: What ``Compiler(tools=...)`` and a toolset's ``open()`` may give for one tool.
ToolLike = BaseTool | Callable[..., Any]


class SchemaTool(BaseTool):
    """A tool defined by the JSON Schema of its arguments and an async callable.

    ``invoke`` is awaited with the validated arguments as a dict (JSON values: lists, dicts,
    strings, numbers, booleans, None); what it returns is the task's result.  Arguments are
    validated against ``json_schema`` (an ``object`` schema, any draft ``jsonschema``
    supports; 2020-12 when it does not say) after being converted to JSON values (tuples
    become lists, pydantic models dicts); a plan's positional arguments are bound to the
    schema's ``properties`` in their order.  Names the schema does not list are refused unless
    it allows ``additionalProperties``.  Defaults in the schema are shown to the planner but
    not filled in: the callable gets only the arguments the plan gave.

    The policy options are those of :func:`~dagcall.tool`; a call that is cancelled is
    cancelled like an async function tool's (given ``cancel_grace`` seconds, then recorded
    abandoned).  ``output_schema``, when given, is shown to the planner as the return type.
    """

    def __init__(
        self,
        name: str,
        description: str,
        json_schema: Mapping[str, Any],
        invoke: Callable[[dict[str, Any]], Awaitable[Any]],
        *,
        output_schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        side_effects: bool = False,
        cancel_grace: float = 0.5,
        resources: Mapping[str, float] | None = None,
        retries: int = 0,
        placement: Placement = "auto",
        cacheable: bool | None = None,
        cache_ttl: float | None = None,
    ) -> None:
        self.name = _tool_name(invoke, name)
        if not isinstance(description, str):
            raise ToolDefinitionError(
                f"tool {self.name!r}: description must be a str, not {type(description).__name__}"
            )
        self.description = description.strip()
        self._set_policy(
            timeout=timeout,
            max_concurrency=max_concurrency,
            side_effects=side_effects,
            cancel_grace=cancel_grace,
            resources=resources,
            retries=retries,
            placement=placement,
            cacheable=cacheable,
            cache_ttl=cache_ttl,
        )
        if not callable(invoke) or not _is_async(invoke):
            raise ToolDefinitionError(
                f"tool {self.name!r}: invoke must be an async function taking the arguments "
                "as a dict (wrap a blocking one with asyncio.to_thread)"
            )
        self._invoke = invoke
        self._schema = _object_schema(self.name, json_schema)
        self._validator = validators.validator_for(
            self._schema, default=validators.Draft202012Validator
        )(self._schema)
        self._output = dict(output_schema) if output_schema is not None else None
        properties = self._schema.get("properties", {})
        self._names = list(properties)
        extra = self._schema.get("additionalProperties", False)
        self._extra_allowed = extra is not False
        self._head = schema_signature(self.name, self._schema, self._output)
        notes = [
            f"  {n}: {' '.join(p['description'].split())}"
            for n, p in properties.items()
            if isinstance(p, dict) and isinstance(p.get("description"), str) and p["description"]
        ]
        self._notes = "\n".join(notes)

    @property
    def json_schema(self) -> dict[str, Any]:
        return copy.deepcopy(self._schema)

    @property
    def parameter_names(self) -> list[str]:
        return list(self._names)

    @property
    def output_schema(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._output)

    def render(self) -> str:
        text = self._head
        if self.description:
            text += f"\n{self.description}"
        if self._notes:
            text += f"\nArguments:\n{self._notes}"
        return text

    def validate(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, task_id: int | None = None
    ) -> dict[str, Any]:
        def failure(text: str) -> ToolArgumentError:
            return ToolArgumentError(f"{self.name}: {text}", tool=self.name, task_id=task_id)

        if len(args) > len(self._names):
            raise failure(
                f"takes {len(self._names)} positional arguments but {len(args)} were given; "
                f"signature is {self._head}"
            )
        arguments: dict[str, Any] = dict(zip(self._names, args, strict=False))
        for key, value in kwargs.items():
            if key in arguments:
                raise failure(
                    f"got multiple values for argument {key!r}; signature is {self._head}"
                )
            if key not in self._names and not self._extra_allowed:
                raise failure(
                    f"got an unexpected keyword argument {_safe_text(key, 80, use_repr=True)}; "
                    f"signature is {self._head}"
                )
            arguments[key] = value
        try:
            instance = to_jsonable_python(arguments)
        except Exception as exc:
            raise failure(
                f"an argument is not a JSON value ({_exception_text(exc)}); this tool takes "
                "JSON arguments only"
            ) from None
        try:
            errors = sorted(
                self._validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path]
            )
        except Exception as exc:  # an unresolvable $ref, say
            raise failure(f"validating the arguments raised {_exception_text(exc)}") from exc
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors
            )
            raise failure(f"invalid arguments ({_bounded(problems)})")
        return dict(instance)

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        ctx = _current.get()
        control = ctx._control if ctx is not None else _CallControl()
        return await _run_as_task(
            self._invoke,
            [dict(arguments)],
            {},
            name=f"dagcall-tool-{self.name}",
            control=control,
            grace=self.cancel_grace,
        )

    def __repr__(self) -> str:
        return f"<SchemaTool {self._head}>"


def _object_schema(name: str, schema: object) -> dict[str, Any]:
    """A checked, private copy of an arguments schema."""
    if not isinstance(schema, Mapping):
        raise ToolDefinitionError(
            f"tool {name!r}: json_schema must be a dict, not {type(schema).__name__}"
        )
    checked = copy.deepcopy(dict(schema))
    if checked.get("type", "object") != "object":
        raise ToolDefinitionError(
            f"tool {name!r}: json_schema must describe an object (type 'object'), not "
            f"{_safe_text(checked.get('type'), 40, use_repr=True)}"
        )
    properties = checked.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(k, str) for k in properties):
        raise ToolDefinitionError(f"tool {name!r}: json_schema 'properties' must be a dict")
    try:
        validators.validator_for(checked, default=validators.Draft202012Validator).check_schema(
            checked
        )
    except SchemaError as exc:
        raise ToolDefinitionError(
            f"tool {name!r}: json_schema is not a valid JSON Schema ({_bounded(exc.message, 300)})"
        ) from None
    return checked


# -- rendering a JSON Schema as a Python-like signature ------------------------------------


class DelegatingTool(BaseTool):
    """A tool with another tool's definition, policy, rendering and validation, whose calls
    go to it; subclass and override :meth:`invoke` to wrap each call (add latency, log, route
    elsewhere) without re-making the tool from its function."""

    def __init__(self, inner: BaseTool) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.timeout = inner.timeout
        self.max_concurrency = inner.max_concurrency
        self.side_effects = inner.side_effects
        self.cancel_grace = inner.cancel_grace
        self.resources = inner.resources
        self.retries = inner.retries
        self.placement = inner.placement
        self.cacheable = inner.cacheable
        self.cache_ttl = inner.cache_ttl

    @property
    def json_schema(self) -> dict[str, Any]:
        return self.inner.json_schema

    @property
    def parameter_names(self) -> list[str]:
        return self.inner.parameter_names

    def render(self) -> str:
        return self.inner.render()

    def validate(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, task_id: int | None = None
    ) -> dict[str, Any]:
        return self.inner.validate(args, kwargs, task_id=task_id)

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        return await self.inner.invoke(arguments)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.inner!r}>"


# -- toolsets --------------------------------------------------------------------------------


@runtime_checkable
class Toolset(Protocol):
    """Tools that need setting up: ``open()`` returns them, ``aclose()`` releases them.

    A compiler opens each of its toolsets once, before its first run needs them, shares the
    tools among its concurrent runs, and closes them with the compiler.  ``open()`` returns
    :class:`~dagcall.BaseTool` objects (such as :class:`SchemaTool`) or typed functions.
    """

    async def open(self) -> Sequence[ToolLike]: ...

    async def aclose(self) -> None: ...


def is_toolset(item: object) -> bool:
    """Whether ``item`` is a toolset (a class with those methods is a class, not a toolset)."""
    return not isinstance(item, type | BaseTool) and isinstance(item, Toolset)


def as_tool(item: object) -> BaseTool:
    """``item`` as a tool: a tool as it is, a function wrapped in :class:`~dagcall.Tool`."""
    return item if isinstance(item, BaseTool) else Tool(item)  # type: ignore[arg-type]


def _label(toolset: object) -> str:
    return f"toolset {_safe_text(toolset, 80, use_repr=True)}"


class Toolbox:
    """A compiler's tools: the ones it was given, and its toolsets' once they are open.

    ``tools`` is one dict for the toolbox's lifetime: opening adds the toolsets' tools to it,
    closing removes them.  A name given twice, by any two sources, is a
    :class:`~dagcall.UsageError` naming both.
    """

    def __init__(self, items: Iterable[object]) -> None:
        self.tools: dict[str, BaseTool] = {}
        self._source: dict[str, str] = {}
        self.toolsets: list[Toolset] = []
        for item in items:
            if is_toolset(item):
                if not any(item is ts for ts in self.toolsets):
                    self.toolsets.append(item)  # type: ignore[arg-type]
            else:
                self._add(as_tool(item), "")
        self._opened: list[str] = []  # names the toolsets added
        self._is_open = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_open(self) -> bool:
        """Whether every tool is there (true at once when there are no toolsets)."""
        return self._is_open or not self.toolsets

    def _add(self, t: BaseTool, source: str) -> None:
        if t.name in self.tools:
            first = self._source[t.name]
            if not first and not source:
                raise UsageError(f"two tools are named {t.name!r}; give one another name")
            where = " and ".join(s or "the tools given" for s in (first, source))
            raise UsageError(f"two tools are named {t.name!r}, from {where}; rename one")
        self.tools[t.name] = t
        self._source[t.name] = source

    async def open(self) -> dict[str, BaseTool]:
        """Open the toolsets (once; concurrent callers wait for the same opening) and return
        all the tools.  A toolset failing to open closes the ones already opened."""
        if not self.toolsets:
            return self.tools
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            if self._is_open:
                if self._loop is not loop:
                    raise UsageError(
                        "the toolsets were opened in another event loop; use one loop for a "
                        "compiler with toolsets ('async with compiler:'), or close it first"
                    )
                return self.tools
            # All at once: a server that takes seconds to start delays the others not at all.
            openings = [asyncio.ensure_future(_open_one(ts)) for ts in self.toolsets]
            try:
                outcomes = await asyncio.gather(*openings, return_exceptions=True)
            except BaseException:  # cancelled meanwhile: close what did open, then go
                for opening in openings:
                    opening.cancel()
                await asyncio.wait(openings)
                done = [o for o in openings if not o.cancelled() and o.exception() is None]
                pairs = zip(self.toolsets, openings, strict=True)
                await _close_all([ts for ts, o in pairs if o in done])
                raise
            opened = [
                ts
                for ts, got in zip(self.toolsets, outcomes, strict=True)
                if not isinstance(got, BaseException)
            ]
            try:
                for ts, got in zip(self.toolsets, outcomes, strict=True):
                    if isinstance(got, BaseException):
                        raise got
                    for item in got:
                        t = as_tool(item)
                        self._add(t, _label(ts))
                        self._opened.append(t.name)
            except BaseException:
                self._forget()
                await _close_all(opened)
                raise
            self._is_open, self._loop = True, loop
        return self.tools

    def _forget(self) -> None:
        for name in self._opened:
            self.tools.pop(name, None)
            self._source.pop(name, None)
        self._opened = []

    async def aclose(self) -> None:
        """Close the toolsets (in reverse order) and drop their tools; idempotent.  The first
        failure of a toolset's ``aclose()`` is raised once all have been closed."""
        if not self._is_open:
            return
        self._is_open, self._loop = False, None
        self._forget()
        await _close_all(self.toolsets, raise_first=True)


async def _open_one(ts: Toolset) -> list[ToolLike]:
    """Open one toolset: its tools, or the error that says why it could not be opened."""
    try:
        provided = await ts.open()
    except DagcallError:
        raise
    except Exception as exc:
        raise UsageError(f"{_label(ts)} could not be opened: {_exception_text(exc)}") from exc
    try:
        return list(provided)
    except TypeError:
        await _close_all([ts])
        raise ToolDefinitionError(
            f"{_label(ts)}: open() must return a sequence of tools, not {type(provided).__name__}"
        ) from None


async def _close_all(toolsets: Sequence[Toolset], *, raise_first: bool = False) -> None:
    first: BaseException | None = None
    for ts in reversed(toolsets):
        try:
            await ts.aclose()
        except Exception as exc:
            log.warning("dagcall: %s failed to close: %s", _label(ts), _exception_text(exc))
            if first is None:
                first = exc
    if raise_first and first is not None:
        raise UsageError(f"a toolset failed to close: {_exception_text(first)}") from first
