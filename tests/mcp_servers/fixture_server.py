"""An MCP server for dagcall's tests, built with the SDK's own server class (MCPServer).

Run over stdio: ``python fixture_server.py``; over streamable HTTP on 127.0.0.1:
``python fixture_server.py --http PORT`` (endpoint ``http://127.0.0.1:PORT/mcp``).
``--name NAME`` names the server (and the ``whoami`` tool's answer); ``--page-size N`` lists
the tools N at a time; ``--fail-start`` exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from typing import Any

if __name__ == "__main__" and "--fail-start" in sys.argv:  # before the (slow) SDK import
    sys.exit("fixture server: refusing to start")

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, ListToolsResult, TextContent, ToolAnnotations
from pydantic import BaseModel

READ_ONLY = ToolAnnotations(readOnlyHint=True, idempotentHint=True)


class Weather(BaseModel):
    city: str
    temperature: float
    conditions: str


class PagedServer(MCPServer):
    """An MCPServer that lists its tools a few at a time (``tools/list`` pagination)."""

    page_size = 0

    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        tools = await self.list_tools()
        if not self.page_size:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + self.page_size
        return ListToolsResult(
            tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None
        )


def build(name: str, page_size: int = 0) -> MCPServer:
    server = PagedServer(name, subscriptions=False)
    server.page_size = page_size

    @server.tool(annotations=READ_ONLY, structured_output=False)
    async def sleep(seconds: float, label: str = "") -> str:
        """Sleep for some seconds, then say so."""
        await asyncio.sleep(seconds)
        return f"slept {seconds} {label}".strip()

    @server.tool(annotations=READ_ONLY)
    def weather(city: str) -> Weather:
        """The weather in a city."""
        return Weather(city=city, temperature=21.5 if city == "Paris" else 12.0, conditions="sunny")

    @server.tool(structured_output=False)
    def describe(report: dict[str, Any]) -> str:
        """Describe a weather report (a dict)."""
        return f"{report['city']}: {report['temperature']} degrees, {report['conditions']}"

    @server.tool(structured_output=False)
    def refuse(reason: str) -> CallToolResult:
        """Always answers with an error result (isError)."""
        return CallToolResult(content=[TextContent(text=f"refused: {reason}")], is_error=True)

    @server.tool(structured_output=False)
    def oops(reason: str) -> str:
        """Raises a ToolError, which the SDK sends as an isError result."""
        raise ToolError(f"oops: {reason}")

    @server.tool(structured_output=False)
    async def hang() -> str:
        """Never answers."""
        await asyncio.sleep(3600)
        return "never"

    @server.tool(structured_output=False)
    def crash() -> str:
        """Kills the server process."""
        print("fixture server: crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)

    @server.tool(
        annotations=ToolAnnotations(destructiveHint=True, readOnlyHint=False),
        structured_output=False,
    )
    def delete_item(item: str) -> str:
        """Deletes an item."""
        return f"deleted {item}"

    @server.tool(structured_output=False)
    def picture() -> list[Any]:
        """A caption and an image."""
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()
        return [
            TextContent(text="a caption"),
            ImageContent(data=png, mime_type="image/png"),
            TextContent(text="second line"),
        ]

    @server.tool(name="get-env", structured_output=False)
    def get_env(variable: str) -> str:
        """The value of an environment variable in the server, or <unset>."""
        return os.environ.get(variable, "<unset>")

    @server.tool(structured_output=False)
    def get_header(header: str, ctx: Context) -> str:
        """The value of a header of the HTTP request, or <none>."""
        headers = ctx.headers or {}
        return headers.get(header.lower(), "<none>")

    @server.tool(structured_output=False)
    def pid() -> str:
        """The server's process id."""
        return str(os.getpid())

    @server.tool(structured_output=False)
    def whoami() -> str:
        """The server's name."""
        return name

    @server.tool(structured_output=False)
    def noop() -> str:
        """Does nothing."""
        return "ok"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="fixture")
    parser.add_argument("--http", type=int, default=None, metavar="PORT")
    parser.add_argument("--fail-start", action="store_true", help="exit before serving")
    parser.add_argument("--page-size", type=int, default=0, help="list the tools in pages")
    options = parser.parse_args()
    server = build(options.name, options.page_size)
    if options.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=options.http)


if __name__ == "__main__":
    main()
