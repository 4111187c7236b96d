"""LangChain tools as dagcall tools: any ``langchain_core`` ``BaseTool`` (a ``@tool`` function,
a ``StructuredTool``, a toolkit's tools) planned over and run in parallel like a function tool.

``LangChainToolset(tools)`` is a toolset for ``Compiler(tools=[...])``; :func:`from_langchain`
converts the tools at once.  Each becomes a :class:`~dagcall.SchemaTool` with the LangChain
tool's name, description and the JSON Schema LangChain gives models for it (arguments the model
does not give, such as injected ones, are left out); calls go through ``ainvoke``, so LangChain's
own validation, callbacks and error handling apply.  A ``ToolException`` (or any error) fails
the task with its message.  The ``langchain`` extra installs ``langchain-core``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._errors import ToolExecutionError, UsageError
from ._toolsets import SchemaTool

__all__ = ["LangChainToolset", "from_langchain"]


def _require() -> Any:
    try:
        import langchain_core.tools
    except ImportError:
        raise UsageError(
            "LangChain tools need langchain-core, which is not installed: "
            "pip install 'dagcall[langchain]'"
        ) from None
    return langchain_core.tools


def _tools_of(source: object) -> list[Any]:
    """The LangChain tools in ``source``: one tool, a toolkit (``get_tools()``), or an
    iterable of either."""
    lc = _require()
    if isinstance(source, lc.BaseTool):
        return [source]
    get_tools = getattr(source, "get_tools", None)
    if callable(get_tools) and not isinstance(source, str | bytes):
        return _tools_of(list(get_tools()))
    if isinstance(source, Iterable) and not isinstance(source, str | bytes):
        found: list[Any] = []
        for item in source:
            found += _tools_of(item)
        return found
    raise UsageError(
        f"not a LangChain tool, toolkit or list of them: {type(source).__name__} "
        "(give langchain_core BaseTool objects)"
    )


def from_langchain(
    tools: object,
    *,
    prefix: str = "",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    side_effects: bool = False,
) -> list[SchemaTool]:
    """dagcall tools for LangChain ``tools`` (a tool, a toolkit, or a list of them).

    ``prefix`` is put before each name; ``timeout``, ``max_concurrency`` and ``side_effects``
    (calls then need approval) are the policy of each, as for :func:`~dagcall.tool`.
    """
    from langchain_core.utils.function_calling import convert_to_openai_tool

    converted: list[SchemaTool] = []
    for lc_tool in _tools_of(tools):
        spec = convert_to_openai_tool(lc_tool)["function"]
        schema = spec.get("parameters") or {"type": "object", "properties": {}}
        converted.append(
            SchemaTool(
                f"{prefix}{lc_tool.name}",
                spec.get("description") or lc_tool.description or "",
                schema,
                _invoker(lc_tool),
                timeout=timeout,
                max_concurrency=max_concurrency,
                side_effects=side_effects,
            )
        )
    return converted


def _invoker(lc_tool: Any) -> Any:
    lc = _require()

    async def invoke(arguments: dict[str, Any]) -> Any:
        try:
            return await lc_tool.ainvoke(arguments)
        except lc.ToolException as exc:
            raise ToolExecutionError(f"{lc_tool.name}: {exc}", tool=lc_tool.name) from None

    return invoke


class LangChainToolset:
    """LangChain tools as a toolset: ``Compiler(tools=[LangChainToolset(tools), ...])``.

    Nothing is opened or held: the tools are converted when the compiler first needs them
    (see :func:`from_langchain` for the options).
    """

    def __init__(self, tools: object, **options: Any) -> None:
        self.source = tools
        self.options = options
        self._label = ", ".join(t.name for t in _tools_of(tools))

    async def open(self) -> Sequence[SchemaTool]:
        return from_langchain(self.source, **self.options)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LangChainToolset({self._label})"
