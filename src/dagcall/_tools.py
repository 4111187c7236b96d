"""Tools: plain typed Python functions, with a pydantic schema built from their signature.

A tool call runs in one of three ways: an async function on the event loop; a sync function
in its own daemon thread (``isolation="thread"``, the default); or a sync or async function in
a fresh Python process per call (``isolation="process"``), which is the only way to stop a
call that does not cooperate, because Python cannot kill a thread.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import copy
import functools
import inspect
import keyword
import math
import os
import pickle
import signal
import struct
import sys
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from typing import (
    Annotated,
    Any,
    Literal,
    Optional,
    TypeVar,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
    overload,
)

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from ._context import ToolContext, _CallControl, _current
from ._errors import ToolArgumentError, ToolDefinitionError, ToolExecutionError

__all__ = ["Approver", "BaseTool", "Isolation", "Placement", "Tool", "tool"]

F = TypeVar("F", bound=Callable[..., Any])
#: Decides whether a side-effecting task may run; gets the task's record (its call and
#: resolved arguments).
Approver = Callable[[Any], bool | Awaitable[bool]]
#: Where a sync tool's calls run: a worker thread of this process, or a process of its own.
Isolation = Literal["thread", "process"]
#: Where an executor that can run calls elsewhere (``dagcall.ray.RayExecutor``) runs a tool's
#: calls: ``"auto"`` (remote when the tool asks for ``resources``, else the executor's
#: default), ``"local"`` (always in this process), ``"remote"`` (a remote task per call) or
#: ``"actor"`` (one long-lived remote actor per tool, for async and stateful tools).
Placement = Literal["auto", "local", "remote", "actor"]
_PLACEMENTS = ("auto", "local", "remote", "actor")

#: Longest tool name: the limit of the OpenAI and Anthropic function-calling APIs.
MAX_NAME_CHARS = 64
#: Longest exception text kept in a task's error message.
MAX_ERROR_CHARS = 2000
#: Seconds a process is given to exit after SIGKILL before it is reported abandoned.
_KILL_WAIT = 5.0


class BaseTool(abc.ABC):
    """What the run needs of a tool, whatever it is built from.

    A tool is a definition (its ``name``, ``description``, the JSON Schema of its arguments,
    and its policy: ``timeout``, ``max_concurrency``, ``side_effects``, ``cancel_grace``)
    and an async :meth:`invoke`.  :class:`Tool` (a Python function) is one kind,
    :class:`~dagcall.SchemaTool` (a JSON Schema and an async callable) another; tools that
    come from a server (MCP) are provided by a :class:`~dagcall.Toolset`.
    """

    name: str
    description: str
    timeout: float | None
    max_concurrency: int | None
    side_effects: bool
    cancel_grace: float
    #: Resources one call needs where it runs remotely (``num_cpus``, ``num_gpus``,
    #: ``memory`` in bytes, or a custom resource's name), or ``None``.
    resources: dict[str, float] | None = None
    #: How many times a remote executor retries a call that failed (its worker died, or it
    #: raised); the local executor does not retry.
    retries: int = 0
    placement: Placement = "auto"
    #: Whether equal calls may share one result: ``True`` (common calls run once, and the call
    #: cache across runs may answer them), ``False`` (every call must really happen: a clock,
    #: a poll, a random draw), ``None`` (the default: shared within a run when the tool has no
    #: side effects; see ``Optimizations.dedupe``).
    cacheable: bool | None = None
    #: How long a cached result stays fresh, in seconds (``None``: for the cache's life).
    cache_ttl: float | None = None

    def _set_policy(
        self,
        *,
        timeout: object,
        max_concurrency: object,
        side_effects: object,
        cancel_grace: object,
        resources: object = None,
        retries: object = 0,
        placement: object = "auto",
        cacheable: object = None,
        cache_ttl: object = None,
    ) -> None:
        """Check and set the policy fields (``self.name`` must be set)."""
        self.timeout = _seconds(self.name, "timeout", timeout, allow_none=True, allow_zero=False)
        self.cancel_grace = cast(
            float,
            _seconds(self.name, "cancel_grace", cancel_grace, allow_none=False, allow_zero=True),
        )
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int)
            or isinstance(max_concurrency, bool)
            or max_concurrency < 1
        ):
            raise ToolDefinitionError(
                f"tool {self.name!r}: max_concurrency must be an int of at least 1"
            )
        self.max_concurrency = max_concurrency
        if not isinstance(side_effects, bool):
            raise ToolDefinitionError(f"tool {self.name!r}: side_effects must be True or False")
        self.side_effects = side_effects
        self.resources = _resources(self.name, resources)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
            raise ToolDefinitionError(
                f"tool {self.name!r}: retries must be an int from 0 to 100, not "
                f"{_safe_text(retries, 40, use_repr=True)}"
            )
        self.retries = retries
        if placement not in _PLACEMENTS:
            raise ToolDefinitionError(
                f"tool {self.name!r}: placement must be one of {', '.join(_PLACEMENTS)}, not "
                f"{_safe_text(placement, 40, use_repr=True)}"
            )
        self.placement = cast(Placement, placement)
        if cacheable is not None and not isinstance(cacheable, bool):
            raise ToolDefinitionError(f"tool {self.name!r}: cacheable must be True, False or None")
        if cacheable and side_effects:
            raise ToolDefinitionError(
                f"tool {self.name!r}: a tool with side effects cannot be cacheable (each call "
                "must really happen)"
            )
        self.cacheable = cacheable
        self.cache_ttl = _seconds(
            self.name, "cache_ttl", cache_ttl, allow_none=True, allow_zero=False
        )

    @property
    @abc.abstractmethod
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the tool's arguments (an object schema)."""

    @property
    def parameter_names(self) -> list[str]:
        """The argument names, in the order positional arguments are bound to them."""
        return list(self.json_schema.get("properties", {}))

    @property
    def output_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the tool's result, or ``None`` when it is not known."""
        return None

    @property
    def result_fields(self) -> dict[str, str]:
        """The named fields of the tool's structured result, each with its type as the
        planner sees it (``{"city": "str", "population": "int"}``): what a plan may select
        with ``$N.field``.  Empty when the result has no declared fields."""
        return _schema_fields(self.output_schema)

    @abc.abstractmethod
    def render(self) -> str:
        """The tool as the planner sees it: its call signature, then its description."""

    @abc.abstractmethod
    def validate(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, task_id: int | None = None
    ) -> dict[str, Any]:
        """Bind a plan's positional and keyword arguments and validate them; the arguments
        by name, or :class:`~dagcall.ToolArgumentError`."""

    @abc.abstractmethod
    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call the tool with arguments :meth:`validate` returned."""


class Tool(BaseTool):
    """A function the planner may call, with its name, description and argument schema.

    Create one with :func:`tool`.  Calling the Tool object calls the function directly, so a
    decorated function stays usable as a function.

    Any function, bound method, ``functools.partial`` or callable object with named, typed
    parameters can be a tool; positional-only parameters work (the planner may pass them by
    position or by name), and so do parameter names pydantic reserves (``model_config``,
    ``schema``, ``_private`` ...).  What cannot work is refused here, with
    :class:`~dagcall.ToolDefinitionError`, rather than failing on every call: a name that is
    not an ASCII identifier (or is a Python keyword, ``join``, or longer than 64 characters),
    ``*args`` / ``**kwargs``, generator functions, types pydantic cannot validate, and a
    default value its own annotation rejects.

    Every failure of a call is recorded on its task, never raised out of the run: whatever
    the tool raises (``BaseException`` included: ``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit``, ``StopIteration``, a ``CancelledError`` of its own) becomes a
    :class:`~dagcall.ToolExecutionError` whose message is bounded and computed safely even
    when the exception's ``__str__`` raises.  Only the run cancelling the task, or its
    timeout, make a task cancelled or timed out.

    Stopping a call.  An async tool is cancelled.  A sync tool's thread cannot be killed: it
    is told to stop (``current_tool_context().cancelled``, ``check_cancelled()``) and given
    ``cancel_grace`` seconds; if it stops it is recorded as cancelled (or timed out), if it
    is still running it is recorded as *abandoned* (``TaskStatus.ABANDONED``, or a
    ``ToolTimeoutError`` saying so) because it may still complete its side effects.  With
    ``isolation="process"`` each call runs in a new Python process (started with
    ``sys.executable``; startup, about 0.1-0.3 s, counts in the timeout) that is sent SIGTERM
    and, after ``cancel_grace``, SIGKILL, with its process group: nothing it would have done
    afterwards happens.  The function must then be importable by the child (defined at a
    module's top level, or a picklable callable), and its arguments and result picklable.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        side_effects: bool = False,
        isolation: Isolation = "thread",
        cancel_grace: float = 0.5,
        resources: Mapping[str, float] | None = None,
        retries: int = 0,
        placement: Placement = "auto",
        cacheable: bool | None = None,
        cache_ttl: float | None = None,
    ) -> None:
        if isinstance(function, Tool):
            raise ToolDefinitionError(f"{function!r} is already a tool")
        if not callable(function):
            raise ToolDefinitionError(
                f"a tool must wrap a function, not {_safe_text(function, 80, use_repr=True)}"
            )
        self.function = function
        self.name: str = _tool_name(function, name)
        if description is not None and not isinstance(description, str):
            raise ToolDefinitionError(
                f"tool {self.name!r}: description must be a str, not {type(description).__name__}"
            )
        doc = description if description is not None else _doc(function)
        self.description = (doc or "").strip()
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
        if isolation not in ("thread", "process"):
            raise ToolDefinitionError(
                f"tool {self.name!r}: isolation must be 'thread' or 'process', not "
                f"{_safe_text(isolation, 40, use_repr=True)}"
            )
        self.isolation: Isolation = isolation
        targets = (_innermost(function), _hint_source(function))
        if any(inspect.isgeneratorfunction(t) or inspect.isasyncgenfunction(t) for t in targets):
            raise ToolDefinitionError(
                f"tool {self.name!r} is a generator function; the planner needs one result: "
                "return a list instead of yielding"
            )
        self.is_async = _is_async(function)
        try:
            self.signature = inspect.signature(function)
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: its signature cannot be read ({_exception_text(exc)}); "
                "wrap it in a def with named, typed parameters"
            ) from exc
        # Positional-only parameters may be given by name in a plan too; they are passed to
        # the function by position.
        self._positional = [
            p.name for p in self.signature.parameters.values() if p.kind is p.POSITIONAL_ONLY
        ]
        self._call_signature = self.signature.replace(
            parameters=[
                p.replace(kind=p.POSITIONAL_OR_KEYWORD) if p.kind is p.POSITIONAL_ONLY else p
                for p in self.signature.parameters.values()
            ]
        )
        self.args_model = self._build_model()
        self._head = self._render_head()
        if isolation == "process":
            if os.name != "posix" or not hasattr(os, "killpg"):
                raise ToolDefinitionError(
                    f"tool {self.name!r}: isolation='process' needs a POSIX system"
                )
            _check_sendable(self.name, function)
        functools.update_wrapper(self, cast(Any, function), updated=())

    # -- schema ----------------------------------------------------------------------------
    def _build_model(self) -> type[BaseModel]:
        try:
            hints = get_type_hints(_hint_source(self.function), include_extras=True)
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: cannot resolve its type hints ({_exception_text(exc)})"
            ) from exc
        self._hints = hints
        fields: dict[str, Any] = {}
        checked: dict[str, Any] = {}  # defaults to validate against their annotations
        self._field: dict[str, str] = {}  # parameter name -> pydantic field name
        self._model_defaults: set[str] = set()  # defaults that are pydantic Field(...)s
        for index, param in enumerate(self.signature.parameters.values()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolDefinitionError(
                    f"tool {self.name!r}: *args and **kwargs cannot be described to a planner; "
                    "give every parameter a name and a type"
                )
            if unicodedata.normalize("NFKC", param.name) != param.name:
                raise ToolDefinitionError(
                    f"tool {self.name!r}: parameter {param.name!r} is not in NFKC form, so a "
                    "plan (parsed as Python) could never name it; rename it"
                )
            annotation = hints.get(param.name, Any)
            # Every field gets a neutral internal name and the parameter's name as its alias,
            # so names pydantic reserves (model_*, schema, json, _private ...) work.
            internal = f"p{index}"
            self._field[param.name] = internal
            if param.default is param.empty:
                info = Field(alias=param.name)
            elif isinstance(param.default, FieldInfo):
                info = FieldInfo.merge_field_infos(param.default, Field(alias=param.name))
                self._model_defaults.add(param.name)
            elif param.default is Ellipsis:  # Field(default=...) would mean "required"
                info = Field(default_factory=_ellipsis, alias=param.name)
            elif _jsonable(param.default):
                info = Field(default=param.default, alias=param.name)
                checked[param.name] = (annotation, info)
            else:  # a default JSON cannot show is left out of the schema, not warned about
                info = Field(default_factory=functools.partial(_same, param.default))
                info = FieldInfo.merge_field_infos(info, Field(alias=param.name))
                checked[param.name] = (annotation, info)
            fields[internal] = (annotation, info)
        config = ConfigDict(coerce_numbers_to_str=True, extra="forbid")
        # ``x: int = None`` means "an int, or None": widen the annotation to say so.
        for name in self._bad_defaults(config, checked):
            widened = _optional(checked[name][0])
            fields[self._field[name]] = (widened, fields[self._field[name]][1])
            hints[name] = widened
        try:
            model: type[BaseModel] = create_model(f"{self.name}_args", __config__=config, **fields)
            model.model_json_schema()
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: its parameter types cannot be validated by pydantic "
                f"({_exception_text(exc)})"
            ) from exc
        return model

    def _bad_defaults(self, config: ConfigDict, checked: dict[str, Any]) -> list[str]:
        """Refuse a default its own annotation rejects (``x: int = "a"``): the planner is shown
        it, and a plan passing it explicitly would always fail.  A default of ``None`` is
        instead returned, for its annotation to be widened to allow ``None``."""
        if not checked:
            return []
        probe_config: ConfigDict = {**config, "validate_default": True}
        try:
            probe = create_model(
                f"{self.name}_defaults",
                __config__=probe_config,
                **{self._field[n]: spec for n, spec in checked.items()},
            )
            probe.model_validate({})
        except ValidationError as exc:
            by_field = {internal: name for name, internal in self._field.items()}
            bad: dict[str, list[str]] = {}
            for e in exc.errors(include_url=False):
                loc = [str(x) for x in e["loc"]]
                name = by_field.get(loc[0], loc[0]) if loc else "default"
                bad.setdefault(name, []).append(".".join([name, *loc[1:]]) + f": {e['msg']}")
            wrong = {
                n: why
                for n, why in bad.items()
                if n not in checked or checked[n][1].default is not None
            }
            if wrong:
                problems = "; ".join(p for why in wrong.values() for p in why)
                raise ToolDefinitionError(
                    f"tool {self.name!r}: a default value does not match its annotation "
                    f"({_bounded(problems)}); fix the default or widen the annotation"
                ) from None
            return list(bad)
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: its default values cannot be validated "
                f"({_exception_text(exc)})"
            ) from exc
        return []

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the tool's arguments (built once; each caller gets a copy)."""
        schema: dict[str, Any] | None = self.__dict__.get("_json_schema")
        if schema is None:
            schema = self.__dict__["_json_schema"] = self.args_model.model_json_schema()
        return copy.deepcopy(schema)

    @property
    def parameter_names(self) -> list[str]:
        """The function's parameter names, in order."""
        return list(self.signature.parameters)

    @functools.cached_property
    def output_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of what the function returns (from its return annotation), or
        ``None`` when it has none or its type has no JSON Schema."""
        if "return" not in self._hints:
            return None
        try:
            schema: dict[str, Any] = TypeAdapter(self._hints["return"]).json_schema()
        except Exception:  # an arbitrary class: rendered by its name instead
            return None
        return schema

    def _render_head(self) -> str:
        """The call signature, from the arguments' JSON Schema as for any tool, and the
        return annotation as written.  A parameter the schema cannot show as the function
        has it (a type without a JSON Schema, a default JSON cannot hold) keeps the whole
        signature as the function annotates it."""
        try:
            schema = self.json_schema
        except Exception:
            return self._annotated_head()
        properties = schema.get("properties", {})
        for p in self.signature.parameters.values():
            shown = properties.get(p.name)
            if not isinstance(shown, dict):
                return self._annotated_head()
            if p.default is not p.empty and "default" not in shown:
                return self._annotated_head()
        head = schema_signature(self.name, schema)
        if "return" in self._hints:
            head += f" -> {self._result_text()}"
        return head

    @functools.cached_property
    def result_fields(self) -> dict[str, str]:
        """The fields of a structured result (a pydantic model, dataclass or TypedDict), each
        with its type; empty for any other return type."""
        annotation = self._hints.get("return")
        if annotation is not None and is_typeddict(annotation):
            # pydantic refuses typing.TypedDict before Python 3.12: read its annotations
            try:
                return {k: _annotation_text(v) for k, v in get_type_hints(annotation).items()}
            except Exception:
                return {}
        return _schema_fields(self.output_schema)

    def _result_text(self) -> str:
        """The return type as the planner sees it: a structured result by its fields, so a
        plan can select one (``$1.city``); any other type as annotated."""
        return _fields_text(self.result_fields) or _annotation_text(self._hints["return"])

    def _annotated_head(self) -> str:
        params = []
        for p in self.signature.parameters.values():
            text = p.name
            if p.name in self._hints:
                text += f": {_annotation_text(self._hints[p.name])}"
            if p.default is not p.empty:
                default = p.default
                if isinstance(default, FieldInfo):
                    default = default.get_default(call_default_factory=False)
                text += f" = {_safe_text(default, 200, use_repr=True)}"
            params.append(text)
        head = f"{self.name}({', '.join(params)})"
        if "return" in self._hints:
            head += f" -> {self._result_text()}"
        return head

    def render(self) -> str:
        """The tool as the planner sees it: its call signature, then its description."""
        return self._head + (f"\n{self.description}" if self.description else "")

    # -- calling ---------------------------------------------------------------------------
    def validate(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, task_id: int | None = None
    ) -> dict[str, Any]:
        """Bind positional and keyword arguments to the signature and validate them."""
        try:
            bound = self._call_signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolArgumentError(
                f"{self.name}: {_exception_text(exc, with_type=False)}; signature is {self._head}",
                tool=self.name,
                task_id=task_id,
            ) from None
        try:
            validated = self.args_model.model_validate(dict(bound.arguments))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolArgumentError(
                f"{self.name}: invalid arguments ({_bounded(problems)})",
                tool=self.name,
                task_id=task_id,
            ) from None
        except Exception as exc:  # a validator that raised something other than ValueError
            raise ToolArgumentError(
                f"{self.name}: validating the arguments raised {_exception_text(exc)}",
                tool=self.name,
                task_id=task_id,
            ) from exc
        names = [n for n in self.signature.parameters if n in bound.arguments]
        names += [n for n in self._model_defaults if n not in bound.arguments]
        return {name: getattr(validated, self._field[name]) for name in names}

    def _split(self, arguments: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Arguments by name as the function takes them: positional-only ones by position."""
        kwargs = dict(arguments)
        args: list[Any] = []
        params = self.signature.parameters
        for i, name in enumerate(self._positional):
            if name in kwargs:
                args.append(kwargs.pop(name))
            elif any(n in kwargs for n in self._positional[i + 1 :]):
                args.append(params[name].default)  # a later one is given: fill the gap
            else:
                break
        return args, kwargs

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call the tool with validated arguments (by name).

        An async tool is awaited; a sync tool runs in a worker thread, or with
        ``isolation="process"`` in a process of its own.  Whatever the function raises is
        raised here (from a process, the child's exception when it can be sent back).  When
        the awaiting task is cancelled the call is told to stop and given ``cancel_grace``
        seconds (see the class docstring); the cancellation then propagates.
        """
        args, kwargs = self._split(arguments)
        ctx = _current.get()
        control = ctx._control if ctx is not None else _CallControl()
        if self.isolation == "process":
            return await _run_in_process(self, args, kwargs, ctx, control)
        if self.is_async:
            return await _run_as_task(
                cast(Callable[..., Awaitable[Any]], self.function),
                args,
                kwargs,
                name=f"dagcall-tool-{self.name}",
                control=control,
                grace=self.cancel_grace,
            )
        value = await _run_in_thread(
            self.function,
            args,
            kwargs,
            name=f"dagcall-tool-{self.name}",
            control=control,
            grace=self.cancel_grace,
        )
        try:
            awaitable = inspect.isawaitable(value)  # a sync function that returned a coroutine
        except Exception:  # a result whose __class__ (or its metaclass) raises is just data
            awaitable = False
        if awaitable:
            value = await value
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self._head if hasattr(self, '_head') else self.name}>"


# -- definition helpers ----------------------------------------------------------------------


def _tool_name(function: Callable[..., Any], name: object) -> str:
    if name is not None and not isinstance(name, str):
        raise ToolDefinitionError(f"a tool name must be a str, not {type(name).__name__}")
    if name is None:
        inner = _innermost(function) if isinstance(function, functools.partial) else function
        found = getattr(inner, "__name__", None)
        if not isinstance(found, str) or not found:
            raise ToolDefinitionError(
                f"{_safe_text(function, 80, use_repr=True)} has no __name__ to name the tool "
                "by; pass tool(name=...)"
            )
        if found == "<lambda>":
            raise ToolDefinitionError("a lambda has no name to call it by; pass tool(name=...)")
        name = found
    if not (name.isascii() and name.isidentifier()):
        raise ToolDefinitionError(
            f"tool name {name!r} must be a Python identifier of ASCII letters, digits and _ "
            "(not starting with a digit); pass tool(name=...)"
        )
    if keyword.iskeyword(name):
        raise ToolDefinitionError(
            f"tool name {name!r} is a Python keyword, so a plan line calling it cannot parse; "
            "pass tool(name=...)"
        )
    if name == "join":
        raise ToolDefinitionError("'join' is reserved for the end of a plan; rename the tool")
    if len(name) > MAX_NAME_CHARS:
        raise ToolDefinitionError(
            f"tool name {name[:20]!r}... is {len(name)} characters; function-calling APIs "
            f"allow at most {MAX_NAME_CHARS}"
        )
    return name


def _seconds(
    tool_name: str, what: str, value: object, *, allow_none: bool, allow_zero: bool
) -> float | None:
    if value is None and allow_none:
        return None
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):
            seconds = float(value)
    if (
        math.isnan(seconds)
        or seconds < 0
        or (seconds == 0 and not allow_zero)
        or (math.isinf(seconds) and what != "timeout")  # an infinite timeout: no limit
    ):
        bound = "at least 0" if allow_zero else "positive"
        raise ToolDefinitionError(
            f"tool {tool_name!r}: {what} must be a {bound} number of seconds, not "
            f"{_safe_text(value, 40, use_repr=True)}"
        )
    return seconds


def _resources(tool_name: str, value: object) -> dict[str, float] | None:
    """A tool's ``resources``: names to finite, non-negative amounts, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ToolDefinitionError(
            f"tool {tool_name!r}: resources must be a dict of names to amounts, not "
            f"{_safe_text(value, 60, use_repr=True)}"
        )
    checked: dict[str, float] = {}
    for key, amount in value.items():
        if not isinstance(key, str) or not key or len(key) > 100:
            raise ToolDefinitionError(
                f"tool {tool_name!r}: a resource's name must be a non-empty str, not "
                f"{_safe_text(key, 40, use_repr=True)}"
            )
        number = math.nan
        if isinstance(amount, int | float) and not isinstance(amount, bool):
            with contextlib.suppress(OverflowError):
                number = float(amount)
        if not math.isfinite(number) or number < 0:
            raise ToolDefinitionError(
                f"tool {tool_name!r}: resource {key!r} must be a finite amount of at least 0, "
                f"not {_safe_text(amount, 40, use_repr=True)}"
            )
        checked[key] = number
    return checked


def _innermost(function: Any) -> Any:
    """The function under any ``functools.partial`` layers."""
    while isinstance(function, functools.partial):
        function = function.func
    return function


def _hint_source(function: Any) -> Any:
    """What to read the type hints of ``function``'s parameters from."""
    target = _innermost(function)
    if inspect.isclass(target):
        return target.__init__
    if (
        inspect.isfunction(target)
        or inspect.ismethod(target)
        or inspect.isbuiltin(target)
        or inspect.ismethoddescriptor(target)
    ):
        return target
    call = getattr(type(target), "__call__", None)  # noqa: B004 - a callable object
    return call if call is not None else target


def _is_async(function: Any) -> bool:
    target = _innermost(function)
    if inspect.iscoroutinefunction(target):
        return True
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target):
        return False
    return inspect.iscoroutinefunction(getattr(target, "__call__", None))  # noqa: B004


def _doc(function: Any) -> str | None:
    target = _innermost(function) if isinstance(function, functools.partial) else function
    try:
        return inspect.getdoc(target)
    except Exception:
        return None


def _check_sendable(name: str, function: Any) -> None:
    """Refuse, at definition, a function a child process could not get."""
    how = "define it at the top level of a module (or pass a picklable callable)"
    if inspect.isfunction(function):
        qualname = function.__qualname__
        if "<lambda>" in qualname or "<locals>" in qualname:
            raise ToolDefinitionError(
                f"tool {name!r}: isolation='process' needs a function its process can import, "
                f"and {qualname} is a lambda or is defined inside a function; {how}"
            )
        if function.__module__ == "__main__" and not function.__globals__.get("__file__"):
            raise ToolDefinitionError(
                f"tool {name!r}: isolation='process' needs a function its process can import, "
                "and this one was defined interactively; put it in a module"
            )
        return
    try:
        pickle.dumps(function, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise ToolDefinitionError(
            f"tool {name!r}: isolation='process' needs a picklable function, and this one is "
            f"not ({_exception_text(exc)}); {how}"
        ) from exc


def _ellipsis() -> Any:
    return ...


def _same(value: Any) -> Any:
    return value


def _jsonable(value: Any) -> bool:
    """Whether pydantic can show ``value`` as a JSON Schema default."""
    try:
        to_jsonable_python(value)
    except Exception:
        return False
    return True


def _optional(annotation: Any) -> Any:
    """``annotation | None``, keeping ``Annotated`` metadata (a Field's description) outside."""
    if get_origin(annotation) is Annotated:
        inner, *meta = get_args(annotation)
        return Annotated[(_optional(inner), *meta)]
    try:
        return annotation | None
    except TypeError:
        return Optional[annotation]  # noqa: UP045 - for types without __or__


def _annotation_text(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if get_origin(annotation) is Annotated:  # the type, not pydantic's metadata
        return _annotation_text(get_args(annotation)[0])
    if isinstance(annotation, type):
        return annotation.__name__
    try:
        return inspect.formatannotation(annotation).replace("typing.", "")
    except Exception:
        return _safe_text(annotation, 100, use_repr=True)


# -- signatures from schemas ---------------------------------------------------------------


#: JSON Schema types and string formats as the Python types the planner writes.
_TYPE_TEXT = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "None",
    "object": "dict",
    "array": "list",
}
_FORMAT_TEXT = {"date-time": "datetime", "date": "date", "time": "time", "uuid": "UUID"}


def _python_literal(value: object) -> str:
    return _safe_text(value, 200, use_repr=True)


def _type_text(schema: object) -> str:
    """A JSON Schema as a Python annotation: ``int``, ``list[str]``, ``Literal['a', 'b']``."""
    if schema is True or not isinstance(schema, dict) or not schema:
        return "Any"
    if "const" in schema:
        return f"Literal[{_python_literal(schema['const'])}]"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "Literal[" + ", ".join(_python_literal(v) for v in schema["enum"]) + "]"
    if isinstance(schema.get("$ref"), str):
        return schema["$ref"].rsplit("/", 1)[-1] or "Any"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return " | ".join(dict.fromkeys(_type_text(s) for s in schema[key]))
    kind = schema.get("type")
    if isinstance(kind, list) and kind:
        return " | ".join(dict.fromkeys(_type_text({**schema, "type": k}) for k in kind))
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, dict):  # items {} is any item: list and list[Any] alike
            return f"list[{_type_text(items)}]"
        return "list"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"dict[str, {_type_text(extra)}]"
        return "dict[str, Any]" if extra is True else "dict"
    if kind == "string" and isinstance(schema.get("format"), str):
        return _FORMAT_TEXT.get(schema["format"], "str")
    return _TYPE_TEXT.get(kind, "Any") if isinstance(kind, str) else "Any"


#: A structured result shows at most this many of its fields in a tool's signature.
MAX_SHOWN_FIELDS = 12


def _schema_fields(schema: object) -> dict[str, str]:
    """An object schema's named properties with their types (``{"city": "str"}``); empty
    for any other schema."""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        return {}
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    return {str(k): _type_text(v) for k, v in props.items()}


def _fields_text(fields: Mapping[str, str]) -> str:
    """Fields as ``{city: str, population: int}`` (the first :data:`MAX_SHOWN_FIELDS`, then
    ``...``); ``""`` for none."""
    if not fields:
        return ""
    shown = [f"{n}: {t}" for n, t in list(fields.items())[:MAX_SHOWN_FIELDS]]
    if len(fields) > MAX_SHOWN_FIELDS:
        shown.append("...")
    return "{" + ", ".join(shown) + "}"


def schema_signature(
    name: str, schema: Mapping[str, Any], output: Mapping[str, Any] | None = None
) -> str:
    """A tool's call signature as the planner sees it, from the JSON Schema of its arguments
    (and of its result): ``search(query: str, limit: int = 5) -> list[str]``.  An argument the
    schema does not require and gives no default for is shown as ``= None`` (it may be left
    out), so the planner never takes an optional argument for a required one.  A result that
    is an object with named properties shows them (``-> {city: str, population: int}``), so
    a plan can select one of them (``$1.city``)."""
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    params = []
    for prop, sub in schema.get("properties", {}).items():
        text = f"{prop}: {_type_text(sub)}"
        if isinstance(sub, dict) and "default" in sub:
            text += f" = {_python_literal(sub['default'])}"
        elif prop not in needed:
            text += " = None"
        params.append(text)
    head = f"{name}({', '.join(params)})"
    if output is not None:
        head += f" -> {_fields_text(_schema_fields(output)) or _type_text(output)}"
    return head


# -- safe text of arbitrary objects ----------------------------------------------------------


def _bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = str.__str__(text)  # a plain str, whatever subclass came in
    if len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


def _safe_text(value: object, limit: int = MAX_ERROR_CHARS, *, use_repr: bool = False) -> str:
    """``str(value)`` (or ``repr``), bounded, and never raising: a broken ``__str__`` gives a
    placeholder naming the failure."""
    try:
        text = repr(value) if use_repr else str(value)
        return _bounded(text, limit)
    except BaseException as exc:  # hostile __str__/__repr__
        how = "repr" if use_repr else "str"
        return f"<{type(value).__name__} object; its {how}() raised {type(exc).__name__}>"


class _RemoteError(Exception):
    """An exception from a tool's process that could not be sent back as itself."""

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(text)
        self.type_name = type_name
        self.text = text

    def __str__(self) -> str:
        return self.text


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a tool's process (its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _unwrap_exception(exc: BaseException) -> BaseException:
    """What a tool really raised: ``StopIteration`` raised in a coroutine reaches its awaiter as
    ``RuntimeError("coroutine raised StopIteration")`` (PEP 479)."""
    if (
        type(exc) is RuntimeError
        and isinstance(exc.__cause__, StopIteration | StopAsyncIteration)
        and "raised Stop" in _safe_text(exc, 100)
    ):
        return exc.__cause__
    return exc


def _exception_text(exc: BaseException, *, with_type: bool = True) -> str:
    """``Type: message`` of an exception, bounded and never raising."""
    type_name = exc.type_name if isinstance(exc, _RemoteError) else type(exc).__name__
    text = _safe_text(exc)
    if not with_type:
        return text
    return f"{type_name}: {text}" if text else type_name


# -- running on the loop ---------------------------------------------------------------------


async def _run_as_task(
    function: Callable[..., Awaitable[Any]],
    args: list[Any],
    kwargs: Mapping[str, Any],
    *,
    name: str,
    control: _CallControl,
    grace: float,
) -> Any:
    """Await an async tool in a task of its own.

    So that a tool which swallows its cancellation cannot hold its run past a timeout: it is
    cancelled, given ``grace`` seconds to end, and otherwise left running (``control.outcome
    = "abandoned"``).  Whatever it raises is carried back as a value and raised here, never
    raised inside a task, where ``SystemExit`` and ``KeyboardInterrupt`` stop the event loop.
    """

    async def guarded() -> tuple[bool, Any]:
        try:
            return True, await function(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # carried back, raised by the awaiting task
            return False, exc

    inner = asyncio.get_running_loop().create_task(guarded(), name=name)
    try:
        ok, value = await asyncio.shield(inner)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or not task.cancelling():
            raise  # the tool cancelled itself: its own failure
        control.cancel()
        inner.cancel()
        try:
            for _ in range(3):  # a tool that honours cancellation ends within a step or two
                if inner.done():
                    break
                await asyncio.sleep(0)
            if grace > 0 and not inner.done():
                await asyncio.wait({inner}, timeout=grace)
        finally:
            if inner.done():
                control.stopped("stopped")
            else:
                control.stopped(
                    "abandoned",
                    f"its coroutine ignored cancellation for {grace:g} s and is still running, "
                    "so it may yet complete its side effects",
                )
        raise
    if ok:
        return value
    raise value


# -- running in a thread ---------------------------------------------------------------------


class _ThreadCall:
    """One call in a worker thread: its outcome, and futures woken when it ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.finished = threading.Event()
        self.outcome: tuple[bool, Any] = (False, None)
        self._waiters: list[asyncio.Future[None]] = []

    def deliver(self, ok: bool, value: Any) -> None:  # in the worker thread
        self.outcome = (ok, value)
        self.finished.set()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        if self.finished.is_set():
            return
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        await waiter


async def _run_in_thread(
    function: Callable[..., Any],
    args: list[Any],
    kwargs: Mapping[str, Any],
    *,
    name: str,
    control: _CallControl,
    grace: float,
) -> Any:
    """Run a blocking function in its own daemon thread.

    Unlike the loop's default executor, a daemon thread that never returns cannot keep
    ``asyncio.run`` or the interpreter from exiting.  Whatever the function raises, any
    ``BaseException``, is carried back and raised here (never set on a future, where
    ``StopIteration`` cannot go and ``SystemExit`` would stop the event loop).  When the
    awaiting task is cancelled, the call is told to stop (``control``) and waited for up to
    ``grace`` seconds; ``control.outcome`` then says whether it stopped or was abandoned.
    """
    call = _ThreadCall(asyncio.get_running_loop())
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            value = ctx.run(function, *args, **kwargs)
        except BaseException as exc:  # every failure is delivered
            call.deliver(False, exc)
        else:
            call.deliver(True, value)

    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        await call.wait()
    except asyncio.CancelledError:
        control.cancel()
        try:
            if grace > 0 and not call.finished.is_set():
                async with asyncio.timeout(grace):
                    await call.wait()
        except TimeoutError:
            pass
        finally:
            if call.finished.is_set():
                control.stopped("stopped")
            else:
                control.stopped(
                    "abandoned",
                    "its worker thread is still running and may yet complete its side effects "
                    "(Python cannot kill a thread: poll current_tool_context().cancelled, or "
                    "use isolation='process')",
                )
        raise
    ok, value = call.outcome
    if ok:
        return value
    raise value


# -- running in a process --------------------------------------------------------------------

# The child's whole program: only the standard library, so a call does not pay for importing
# dagcall unless the tool's own module does.  Messages are length-prefixed pickles: the parent
# sends a header (sys.path, how to import the function) then the call; the child sends one
# reply on the pipe whose fd is its argument.  Its stdin stays open as a lifeline: EOF means
# the parent is gone, and the child exits.
_CHILD = r"""
import os, pickle, struct, sys, threading, traceback

def _text(value, limit=2000):
    try:
        text = str.__str__(str(value))
    except BaseException as exc:
        return "<%s object; its str() raised %s>" % (type(value).__name__, type(exc).__name__)
    if len(text) > limit:
        text = text[:limit] + "... [%d more characters]" % (len(text) - limit)
    return text

def _read(fd, n):
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("the parent closed the pipe")
        data += chunk
    return data

def _receive(fd):
    (size,) = struct.unpack("!Q", _read(fd, 8))
    return _read(fd, size)

def _load_module(name, path, as_main):
    import importlib, importlib.util, runpy, types
    if as_main:
        if "__mp_main__" in sys.modules:
            return sys.modules["__mp_main__"]
        module = types.ModuleType("__mp_main__")
        os.environ["DAGCALL_IMPORTING_MAIN"] = path
        try:
            module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
        finally:
            del os.environ["DAGCALL_IMPORTING_MAIN"]
        sys.modules["__main__"] = sys.modules["__mp_main__"] = module
        return module
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if path is None or exc.name != name:
            raise
    # A module its parent loaded from a file by path, under a name no finder knows.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

def _function(how):
    if how[0] == "pickled":
        return pickle.loads(how[1])
    _, module_name, qualname, path = how
    obj = _load_module(module_name, path, module_name == "__main__")
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if type(obj).__module__ == "dagcall._tools" and type(obj).__name__ == "Tool":
        obj = obj.function
    return obj

def main():
    out = int(sys.argv[1])
    os.set_inheritable(out, False)
    lifeline = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

    def send(message):
        try:
            blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:
            blob = pickle.dumps(("setup", "its reply could not be encoded: " + _text(exc)))
        view = memoryview(struct.pack("!Q", len(blob)) + blob)
        while view:
            view = view[os.write(out, view):]

    try:
        header = pickle.loads(_receive(lifeline))
        sys.path[:] = header["sys_path"]
        if header["main"] is not None:
            _load_module("__main__", header["main"], True)
        call = pickle.loads(_receive(lifeline))
        function = _function(call["function"])
        args, kwargs = pickle.loads(call["arguments"])
    except BaseException as exc:
        send(("setup", "%s: %s" % (type(exc).__name__, _text(exc))))
        os._exit(0)

    def watch():
        try:
            while os.read(lifeline, 65536):
                pass
        except OSError:
            pass
        os._exit(70)

    threading.Thread(target=watch, daemon=True).start()
    context = sys.modules.get("dagcall._context")
    if context is not None:
        context._current.set(context.ToolContext(*call["context"]))
    try:
        value = function(*args, **kwargs)
        if type(value).__name__ == "coroutine":
            import asyncio
            value = asyncio.run(value)
    except BaseException as exc:
        try:
            tb = "".join(traceback.format_exception(exc))
        except BaseException:
            tb = ""
        try:
            blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(blob)
        except BaseException:
            blob = None
        send(("raised", type(exc).__name__, _text(exc), _text(tb, 20000), blob))
    else:
        try:
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:
            send(("unpicklable", type(value).__name__, "%s: %s" % (type(exc).__name__, _text(exc))))
        else:
            send(("ok", blob))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(0)

main()
"""


def _framed(blob: bytes) -> bytes:
    return struct.pack("!Q", len(blob)) + blob


def _function_reference(function: Any) -> tuple[Any, ...]:
    """How the child gets the function: imported by module and name, or unpickled."""
    if inspect.isfunction(function):
        # The file goes along for a module loaded by path, which no finder could import.
        path = function.__globals__.get("__file__")
        return ("import", function.__module__, function.__qualname__, path)
    return ("pickled", pickle.dumps(function, protocol=pickle.HIGHEST_PROTOCOL))


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, sig)
        else:  # pragma: no cover - not POSIX
            proc.send_signal(sig)


async def _stop_process(
    proc: asyncio.subprocess.Process, grace: float, control: _CallControl
) -> None:
    """SIGTERM the call's process group, SIGKILL after ``grace``, and reap the process."""
    if proc.returncode is not None:
        control.stopped("stopped")  # it had already ended by itself
        return
    how = "SIGTERM"
    try:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await proc.wait()
    finally:  # also when cancelled again while waiting: never leave it running
        if proc.returncode is None:
            _signal_group(proc, signal.SIGKILL)
            how = "SIGKILL"
        control.stopped("terminated", f"its process was terminated ({how})")
    if proc.returncode is None:
        try:
            async with asyncio.timeout(_KILL_WAIT):
                await proc.wait()
        except TimeoutError:
            control.stopped(
                "abandoned",
                f"its process {proc.pid} survived SIGKILL for {_KILL_WAIT:g} s and may still "
                "be running",
            )


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "closed its reply pipe without replying"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (exit code {returncode}) before it replied"
    return f"exited with code {returncode} before it replied"


async def _run_in_process(
    tool: Tool,
    args: list[Any],
    kwargs: dict[str, Any],
    ctx: ToolContext | None,
    control: _CallControl,
) -> Any:
    """Run one call in a fresh Python process and return (or raise) what it did there."""
    task = f"task {ctx.task_id}: " if ctx is not None else ""
    task_id = ctx.task_id if ctx is not None else None

    def failure(text: str) -> ToolExecutionError:
        return ToolExecutionError(f"{task}{tool.name} {text}", tool=tool.name, task_id=task_id)

    importing = os.environ.get("DAGCALL_IMPORTING_MAIN")
    if importing:  # we are a tool's process, re-running its script to import the function
        raise failure(
            f"was called while its process was importing {importing}: the script runs "
            "dagcall at import time; guard that with 'if __name__ == \"__main__\":' (as "
            "multiprocessing requires), or the process would start another, forever"
        )
    if not sys.executable:
        raise failure("cannot start a process: sys.executable is not set")

    try:
        arguments = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        function = _function_reference(tool.function)
    except Exception as exc:
        raise failure(
            f"cannot be sent to its process: {_exception_text(exc)} (isolation='process' "
            "needs picklable arguments)"
        ) from exc
    main_file = None
    main = sys.modules.get("__main__")
    if (function[0] == "pickled" and b"__main__" in function[1]) or b"__main__" in arguments:
        main_file = getattr(main, "__file__", None)
    header = {"sys_path": list(sys.path), "main": main_file}
    context = (
        (ctx.task_id, ctx.tool, ctx.round, ctx.t0) if ctx is not None else (0, tool.name, 0, 0.0)
    )
    call = {"function": function, "arguments": arguments, "context": context}
    payload = _framed(pickle.dumps(header)) + _framed(pickle.dumps(call))

    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    reader = asyncio.StreamReader(limit=2**20)
    transport: asyncio.BaseTransport | None = None
    proc: asyncio.subprocess.Process | None = None
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CHILD,
                str(write_fd),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                process_group=0,
            )
        finally:
            os.close(write_fd)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        read_fd = -1
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
        except BaseException:
            pipe.close()
            raise
        if proc.stdin is not None:
            with contextlib.suppress(ConnectionError):  # it died at once: its exit code says
                proc.stdin.write(payload)
                await proc.stdin.drain()
        reply = await reader.read()
        returncode = await proc.wait()
    except asyncio.CancelledError:
        control.cancel()
        if proc is not None:
            await _stop_process(proc, tool.cancel_grace, control)
        raise
    finally:
        if read_fd >= 0:
            os.close(read_fd)
        if transport is not None:
            transport.close()
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.returncode is None:  # an unexpected error here: do not leave it behind
                _signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_KILL_WAIT):
                        await proc.wait()
    return _reply(reply, returncode, failure)


def _reply(reply: bytes, returncode: int, failure: Callable[[str], ToolExecutionError]) -> Any:
    """Decode the child's reply: its result, or raise its exception or what went wrong."""
    try:
        (size,) = struct.unpack("!Q", reply[:8])
        if size != len(reply) - 8:
            raise ValueError("truncated")
        message = pickle.loads(reply[8:])  # noqa: S301 - our own child's reply
    except Exception:
        raise failure(f"failed: its process {_exit_text(returncode)}") from None
    kind = message[0]
    if kind == "ok":
        try:
            return pickle.loads(message[1])  # noqa: S301 - our own child's reply
        except Exception as exc:
            raise failure(
                f"returned a result its caller cannot unpickle ({_exception_text(exc)})"
            ) from exc
    if kind == "raised":
        _, type_name, text, tb, blob = message
        raised: object = None
        if blob is not None:
            with contextlib.suppress(Exception):
                raised = pickle.loads(blob)  # noqa: S301 - our own child's reply
        if not isinstance(raised, BaseException):
            raised = _RemoteError(type_name, text)
        raise raised from _RemoteTraceback(tb)
    if kind == "unpicklable":
        _, type_name, text = message
        raise failure(
            f"returned a {type_name}, which cannot be sent back from its process ({text}); "
            "return picklable data"
        )
    raise failure(f"could not be started in its process: {message[1]}")


# -- the decorator ---------------------------------------------------------------------------


@overload
def tool(function: F, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    side_effects: bool = False,
    isolation: Isolation = "thread",
    cancel_grace: float = 0.5,
    resources: Mapping[str, float] | None = None,
    retries: int = 0,
    placement: Placement = "auto",
    cacheable: bool | None = None,
    cache_ttl: float | None = None,
) -> Callable[[F], Tool]: ...


def tool(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    side_effects: bool = False,
    isolation: Isolation = "thread",
    cancel_grace: float = 0.5,
    resources: Mapping[str, float] | None = None,
    retries: int = 0,
    placement: Placement = "auto",
    cacheable: bool | None = None,
    cache_ttl: float | None = None,
) -> Tool | Callable[[F], Tool]:
    """Make a sync or async function a tool.

    Use bare (``@tool``) or with options (``@tool(name=..., timeout=5, max_concurrency=2)``).
    The name and description default to the function's name and docstring; the argument
    schema comes from the type hints through pydantic.  ``timeout`` (seconds; ``math.inf``
    for none, ``None`` for the run's ``tool_timeout``) bounds each call; ``max_concurrency``
    bounds how many calls of this tool run at once; ``side_effects=True`` marks a tool that
    changes the world (sends, writes, pays): it runs only with the run's approval
    (``Compiler(approve=...)``, ``dagcall ask --yes``).

    ``isolation="process"`` runs each call in a new Python process that is terminated
    (SIGTERM, then SIGKILL after ``cancel_grace`` seconds) when its task is cancelled or
    times out, so a call that is stopped provably does nothing more; the function must be
    defined at a module's top level (or be a picklable callable) and its arguments and
    result picklable.  With the default ``isolation="thread"`` a sync tool that is stopped
    is told so through ``current_tool_context().cancelled`` and given ``cancel_grace``
    seconds; if its thread is still running then, the task is recorded as abandoned (it may
    still complete its side effects).  See :class:`Tool` for what is refused at definition.

    For executors that run calls elsewhere (``dagcall.ray.RayExecutor``): ``resources``
    (``{"num_cpus": 1, "num_gpus": 0.5, "my_resource": 1}``) is what one call needs,
    ``retries`` how many times a failed call is tried again, and ``placement`` where its
    calls run (see :data:`Placement`).  ``cacheable=True`` marks a tool whose equal calls may
    share one result, within a run and across runs through a call cache; ``cacheable=False``
    one whose every call must really happen (a clock, a poll); by default (``None``) equal
    calls of a tool without side effects share one result within a run.  ``cache_ttl`` bounds
    how long a cached result lives.
    """

    def make(fn: F) -> Tool:
        return Tool(
            fn,
            name=name,
            description=description,
            timeout=timeout,
            max_concurrency=max_concurrency,
            side_effects=side_effects,
            isolation=isolation,
            cancel_grace=cancel_grace,
            resources=resources,
            retries=retries,
            placement=placement,
            cacheable=cacheable,
            cache_ttl=cache_ttl,
        )

    return make(function) if function is not None else make
