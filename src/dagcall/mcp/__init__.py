"""MCP (Model Context Protocol) for dagcall: servers' tools as a toolset, and dagcall as a server.

:class:`MCPToolset` gives a compiler the tools of one MCP server, started over stdio or
reached over streamable HTTP; :func:`load_config` reads the ``{"mcpServers": {...}}`` file MCP
clients use, :func:`from_spec` one ``--mcp`` argument.  :func:`build_server` and :func:`serve`
make a compiler an MCP server with one tool, ``ask(question)``.  The ``mcp`` extra installs
the SDK (``pip install 'dagcall[mcp]'``).
"""

from ._client import DEFAULT_ENV_VARS, MCPTool, MCPToolset, content_text, tool_name
from ._config import from_spec, load_config
from ._server import AskResult, build_server, run_summary, serve

__all__ = [
    "DEFAULT_ENV_VARS",
    "AskResult",
    "MCPTool",
    "MCPToolset",
    "build_server",
    "content_text",
    "from_spec",
    "load_config",
    "run_summary",
    "serve",
    "tool_name",
]
