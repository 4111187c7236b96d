"""Tools: plain typed Python functions, with a pydantic schema built from their signature."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ._errors import ToolArgumentError, ToolDefinitionError

__all__ = ["Approver", "Tool", "tool"]

F = TypeVar("F", bound=Callable[..., Any])
#: Decides whether a side-effecting task may run; gets the task's record (its call and
#: resolved arguments).
Approver = Callable[[Any], bool | Awaitable[bool]]

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class Tool:
    """A function the planner may call, with its name, description and argument schema.

    Create one with :func:`tool`.  Calling the Tool object calls the function directly, so a
    decorated function stays usable as a function.
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
    ) -> None:
        if not callable(function):
            raise ToolDefinitionError(f"a tool must wrap a function, not {function!r}")
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", ""))
        if not self.name or not set(self.name) <= _NAME_OK or self.name[0].isdigit():
            raise ToolDefinitionError(
                f"tool name {self.name!r} must be a Python identifier (letters, digits, _)"
            )
        if self.name == "join":
            raise ToolDefinitionError("'join' is reserved for the end of a plan; rename the tool")
        doc = description if description is not None else inspect.getdoc(function)
        self.description = (doc or "").strip()
        if timeout is not None and timeout <= 0:
            raise ToolDefinitionError(f"tool {self.name!r}: timeout must be positive")
        if max_concurrency is not None and max_concurrency < 1:
            raise ToolDefinitionError(f"tool {self.name!r}: max_concurrency must be at least 1")
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.side_effects = side_effects
        self.is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - async callable objects
        )
        self.signature = inspect.signature(function)
        self.args_model = self._build_model()
        functools.update_wrapper(self, function)

    def _build_model(self) -> type[BaseModel]:
        try:
            hints = get_type_hints(self.function, include_extras=True)
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: cannot resolve its type hints ({exc})"
            ) from exc
        self._hints = hints
        fields: dict[str, Any] = {}
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolDefinitionError(
                    f"tool {self.name!r}: *args and **kwargs cannot be described to a planner; "
                    "give every parameter a name and a type"
                )
            annotation = hints.get(param.name, Any)
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, default)
        config = ConfigDict(coerce_numbers_to_str=True, extra="forbid")
        try:
            model: type[BaseModel] = create_model(f"{self.name}_args", __config__=config, **fields)
            model.model_json_schema()
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: its parameter types cannot be validated by pydantic ({exc})"
            ) from exc
        return model

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the tool's arguments."""
        return self.args_model.model_json_schema()

    def render(self) -> str:
        """The tool as the planner sees it: its call signature, then its description."""
        params = []
        for p in self.signature.parameters.values():
            text = p.name
            if p.name in self._hints:
                text += f": {_annotation_text(self._hints[p.name])}"
            if p.default is not p.empty:
                text += f" = {p.default!r}"
            params.append(text)
        head = f"{self.name}({', '.join(params)})"
        if "return" in self._hints:
            head += f" -> {_annotation_text(self._hints['return'])}"
        return head + (f"\n{self.description}" if self.description else "")

    def validate(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, task_id: int | None = None
    ) -> dict[str, Any]:
        """Bind positional and keyword arguments to the signature and validate them."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolArgumentError(
                f"{self.name}: {exc}; signature is {self.name}{self.signature}",
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
                f"{self.name}: invalid arguments ({problems})", tool=self.name, task_id=task_id
            ) from None
        return {name: getattr(validated, name) for name in bound.arguments}

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call the tool with validated arguments; a sync tool runs in a worker thread."""
        if self.is_async:
            return await cast(Callable[..., Awaitable[Any]], self.function)(**arguments)
        return await _run_in_thread(self.function, arguments, name=f"dagcall-tool-{self.name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name}{self.signature}>"


def _annotation_text(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return inspect.formatannotation(annotation).replace("typing.", "")


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _run_in_thread(
    function: Callable[..., Any], arguments: Mapping[str, Any], *, name: str
) -> Any:
    """Run a blocking function in its own daemon thread.

    Unlike the loop's default executor, a daemon thread that never returns cannot keep
    ``asyncio.run`` or the interpreter from exiting: a timed-out sync tool is abandoned, not
    waited for.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            value = ctx.run(function, **arguments)
        except BaseException as exc:  # delivered to the awaiting task
            ok, value = False, exc
        else:
            ok = True
        # If the loop has closed, nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_deliver, fut, ok, value)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await fut


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
) -> Tool | Callable[[F], Tool]:
    """Make a sync or async function a tool.

    Use bare (``@tool``) or with options (``@tool(name=..., timeout=5, max_concurrency=2)``).
    The name and description default to the function's name and docstring; the argument
    schema comes from the type hints through pydantic.  ``timeout`` (seconds) bounds each
    call; ``max_concurrency`` bounds how many calls of this tool run at once;
    ``side_effects=True`` marks a tool that changes the world (sends, writes, pays): it runs
    only with the run's approval (``Compiler(approve=...)``, ``dagcall ask --yes``).
    """

    def make(fn: F) -> Tool:
        return Tool(
            fn,
            name=name,
            description=description,
            timeout=timeout,
            max_concurrency=max_concurrency,
            side_effects=side_effects,
        )

    return make(function) if function is not None else make
