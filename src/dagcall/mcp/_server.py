"""dagcall as an MCP server: one tool, ``ask(question)``, answered by a compiler.

MCP clients (editors, desktop assistants, other agents) then get dagcall's parallel plans
over the compiler's tools.  The result's text is the answer; its structured content the
answer and a summary of the run (tasks with their tool, call, status and times; the model
calls; the wall time).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel

from .._errors import DagcallError, UsageError
from .._tools import _exception_text, _safe_text

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp.types import CallToolResult

    from .._compiler import Compiler
    from .._result import RunResult

__all__ = ["AskResult", "build_server", "run_summary", "serve"]

ASK_DESCRIPTION = (
    "Answer a question by planning the tool calls it needs, running independent calls in "
    "parallel, and joining their results. The tools: {tools}."
)


class TaskSummary(BaseModel):
    id: int
    tool: str
    call: str
    status: str
    round: int
    started_at: float | None
    ended_at: float | None
    duration: float | None
    error: str | None = None


class LLMCallSummary(BaseModel):
    role: str
    model: str
    round: int
    input_tokens: int
    output_tokens: int
    started_at: float
    ended_at: float


class AskResult(BaseModel):
    """The structured content of ``ask``: the answer and what the run did (times in
    seconds since the run started)."""

    answer: str
    stop_reason: str
    wall_time: float
    rounds: int
    tasks: list[TaskSummary]
    llm_calls: list[LLMCallSummary]


def run_summary(result: RunResult) -> AskResult:
    """A run as ``ask`` reports it."""
    tasks = [
        TaskSummary(
            id=t.id,
            tool=t.tool,
            call=_safe_text(t.call, 500),
            status=str(getattr(t.status, "value", t.status)),
            round=t.round,
            started_at=t.started_at,
            ended_at=t.ended_at,
            duration=t.duration,
            error=None if t.error is None else _safe_text(t.error.message, 1000),
        )
        for t in result.tasks
    ]
    calls = [
        LLMCallSummary(
            role=str(c.role),
            model=c.model,
            round=c.round,
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            started_at=c.started_at,
            ended_at=c.ended_at,
        )
        for c in result.usage
    ]
    return AskResult(
        answer=result.answer,
        stop_reason=result.stop_reason,
        wall_time=result.wall_time,
        rounds=len(result.rounds),
        tasks=tasks,
        llm_calls=calls,
    )


def build_server(
    compiler: Compiler,
    *,
    name: str = "dagcall",
    instructions: str | None = None,
    timeout: float | None = None,
) -> MCPServer[Any]:
    """An MCP server (the SDK's ``MCPServer``) with one tool, ``ask(question)``.

    The compiler's toolsets are opened when the server starts and closed when it stops;
    concurrent ``ask`` calls run concurrently.  ``timeout`` is each run's budget in seconds.
    A run that fails (a budget, a model error) is an ``isError`` result with its message.
    """
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.types import CallToolResult, TextContent, ToolAnnotations
    except ImportError:
        raise UsageError("an MCP server needs the mcp SDK: pip install 'dagcall[mcp]'") from None

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        async with compiler:
            yield None

    server: MCPServer[Any] = MCPServer(
        name,
        instructions=instructions,
        lifespan=lifespan,
        subscriptions=False,
    )

    async def ask(question: str) -> CallToolResult:
        try:
            result = await compiler.arun(question, timeout=timeout)
        except DagcallError as exc:
            text = f"{type(exc).__name__}: {exc.message}"
            return CallToolResult(content=[TextContent(text=text)], is_error=True)
        except Exception as exc:
            text = f"the run failed: {_exception_text(exc)}"
            return CallToolResult(content=[TextContent(text=text)], is_error=True)
        summary = run_summary(result)
        return CallToolResult(
            content=[TextContent(text=result.answer)],
            structured_content=summary.model_dump(mode="json"),
        )

    # Real objects, not this module's postponed (string) annotations: the SDK reads them.
    ask.__annotations__ = {"question": str, "return": Annotated[CallToolResult, AskResult]}
    names = ", ".join(compiler.tools)
    if compiler.toolbox.toolsets:
        sets = f"those of {len(compiler.toolbox.toolsets)} toolsets (MCP servers)"
        names = f"{names} and {sets}" if names else sets
    server.add_tool(
        ask,
        name="ask",
        description=ASK_DESCRIPTION.format(tools=names),
        annotations=ToolAnnotations(
            title="Ask dagcall",
            read_only_hint=not any(t.side_effects for t in compiler.tools.values()),
            open_world_hint=True,
        ),
    )
    return server


def serve(
    compiler: Compiler,
    *,
    name: str = "dagcall",
    instructions: str | None = None,
    timeout: float | None = None,
    transport: Literal["stdio", "streamable-http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Serve :func:`build_server` until the client goes away (stdio: stdin closes) or the
    process is interrupted.  Blocks; call it without a running event loop."""
    server = build_server(compiler, name=name, instructions=instructions, timeout=timeout)
    if transport == "stdio":
        server.run("stdio")
    elif transport == "streamable-http":
        server.run("streamable-http", host=host, port=port)
    else:
        raise UsageError(
            f"serve: transport must be 'stdio' or 'streamable-http', not {transport!r}"
        )
