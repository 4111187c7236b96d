"""MCP servers as a toolset: their tools, listed and called over one session per server.

A :class:`MCPToolset` starts (stdio) or connects to (streamable HTTP) one MCP server when it
is opened, lists the server's tools as :class:`MCPTool` objects (schema tools whose calls go
to the server) and closes the session, and stops the process, when it is closed.

The session lives in a background asyncio task of its own that enters and exits the SDK's
``async with`` (its transports hold anyio cancel scopes and task groups, which must be entered
and left by one task); calls are made from the run's tasks over that one session, where the
SDK multiplexes concurrent requests by id.  A session that breaks (the process exited, the
HTTP server went away) fails the calls that were waiting on it, and the next call opens a new
one, once, for all the callers that find it broken at the same time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import keyword
import logging
import os
import re
import shlex
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO, cast

from .._errors import DagcallError, ToolDefinitionError, ToolExecutionError, UsageError
from .._tools import MAX_NAME_CHARS, _exception_text, _safe_text
from .._toolsets import SchemaTool

if TYPE_CHECKING:
    from types import TracebackType

    from mcp import Client
    from mcp.types import CallToolResult, Tool

__all__ = ["DEFAULT_ENV_VARS", "MCPTool", "MCPToolset"]

log = logging.getLogger("dagcall")

#: Variables of ``os.environ`` a stdio server gets besides those the SDK always passes
#: (``mcp.client.stdio.DEFAULT_INHERITED_ENV_VARS``: HOME, LOGNAME, PATH, SHELL, TERM, USER
#: on POSIX) and the ones given with ``env=``: the locale and time zone, and temp dirs.
DEFAULT_ENV_VARS: tuple[str, ...] = (
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
)

#: How many ``tools/list`` pages are read before giving up on a server that never ends.
MAX_LIST_PAGES = 1000

#: After a failed reconnection, calls fail at once with its error for this many seconds
#: rather than each starting the server again.
RECONNECT_COOLDOWN = 1.0

#: The characters of a server's stderr quoted in an error that says it exited.
STDERR_TAIL_CHARS = 600

Transport = Literal["stdio", "http"]


class MCPTool(SchemaTool):
    """A tool of an MCP server: a :class:`~dagcall.SchemaTool` whose calls go to the server.

    ``mcp_name`` is the tool's name on the server (``name`` is the one the planner calls it
    by: prefixed, and with characters a plan cannot spell replaced by ``_``); ``server`` the
    server's name.  The server's annotations are kept: ``read_only`` (``readOnlyHint``),
    ``idempotent`` (``idempotentHint``, or read-only), ``open_world`` (``openWorldHint``),
    ``destructive`` (``destructiveHint`` given as true), and ``annotations``, all of them as
    the server sent them.  ``side_effects`` (a call needs approval) is true when the server
    says the tool is destructive and not read-only, unless the toolset overrides it.
    """

    server: str
    mcp_name: str
    title: str | None
    read_only: bool
    idempotent: bool
    open_world: bool | None
    destructive: bool
    annotations: dict[str, Any]

    def __repr__(self) -> str:
        return f"<MCPTool {self.name!r} of MCP server {self.server!r}>"


class MCPToolset:
    """The tools of one MCP server, over stdio or streamable HTTP.

    Exactly one of ``command`` (stdio: the server is started as ``command *args`` by
    :meth:`open` and stopped by :meth:`aclose`) and ``url`` (streamable HTTP) is given;
    :meth:`stdio` and :meth:`http` say the same more briefly.

    ``name`` names the server in errors and tool sources (by default the command's or the
    URL's); ``prefix`` is put before each tool's name (``prefix="time_"``), so that two
    servers' tools cannot clash; ``include`` / ``exclude`` keep or drop tools by their name on
    the server.  ``timeout`` is every tool's timeout in seconds (``None``: the compiler's
    ``tool_timeout``); ``connect_timeout`` bounds starting, connecting and listing the tools;
    ``max_concurrency`` bounds the calls in flight to this server (``None``: no bound, they
    all go over the one session at once).  ``side_effects``: ``None`` takes it from each
    tool's annotations (``destructiveHint`` true and ``readOnlyHint`` not true), ``True`` /
    ``False`` sets it for every tool.

    stdio: the server's environment is only ``PATH``, ``HOME`` and the few other variables
    the SDK passes (``mcp.client.stdio.get_default_environment``), those of
    :data:`DEFAULT_ENV_VARS` and ``inherit_env`` that are set in ``os.environ``, and ``env``
    (which wins).  ``cwd`` is its working directory.  Its stderr is kept in a temporary file
    (quoted when it exits) unless ``stderr`` is a file to send it to.

    HTTP: ``headers`` are sent with every request (``{"Authorization": "Bearer ..."}``).
    """

    def __init__(
        self,
        *,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        inherit_env: Iterable[str] = (),
        stderr: IO[str] | None = None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        prefix: str = "",
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        timeout: float | None = 30.0,
        connect_timeout: float = 30.0,
        max_concurrency: int | None = None,
        side_effects: bool | None = None,
    ) -> None:
        if (command is None) == (url is None):
            raise UsageError("MCPToolset: give either command= (stdio) or url= (HTTP), not both")
        self.transport: Transport = "stdio" if command is not None else "http"
        if command is not None:
            if not isinstance(command, str) or not command.strip():
                raise UsageError("MCPToolset: command must be a non-empty str")
            if isinstance(args, str) or not all(isinstance(a, str) for a in args):
                raise UsageError("MCPToolset: args must be a list of str")
            if url is None and headers:
                raise UsageError("MCPToolset: headers= is for an HTTP server (url=)")
        if url is not None:
            if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in (
                "http",
                "https",
            ):
                raise UsageError(f"MCPToolset: url must be an http:// or https:// URL, not {url!r}")
            if args or env or cwd is not None:
                raise UsageError("MCPToolset: args=, env= and cwd= are for a stdio server")
        self.command = command
        self.args = list(args)
        self.env = _str_mapping("env", env)
        self.cwd = cwd
        self.inherit_env = tuple(inherit_env)
        self.stderr = stderr
        self.url = url
        self.headers = _str_mapping("headers", headers)
        self.name = name if name is not None else _default_name(command, self.args, url)
        if not isinstance(self.name, str) or not self.name:
            raise UsageError("MCPToolset: name must be a non-empty str")
        if not isinstance(prefix, str):
            raise UsageError("MCPToolset: prefix must be a str")
        self.prefix = prefix
        self.include = None if include is None else frozenset(include)
        self.exclude = frozenset(exclude)
        for label, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise UsageError(f"MCPToolset: {label} must be a positive number of seconds")
        self.timeout = None if timeout is None else float(timeout)
        self.connect_timeout = float(connect_timeout)
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise UsageError("MCPToolset: max_concurrency must be an int of at least 1")
        self.max_concurrency = max_concurrency
        if side_effects is not None and not isinstance(side_effects, bool):
            raise UsageError("MCPToolset: side_effects must be None, True or False")
        self.side_effects = side_effects
        self._conn: _Connection | None = None
        self._tools: list[MCPTool] = []
        self._lock: asyncio.Lock | None = None
        self._limit: asyncio.Semaphore | None = None
        self._failed: tuple[float, DagcallError] | None = None
        self.reconnects = 0  # how many times a broken session was replaced

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def stdio(cls, command: str, args: Sequence[str] = (), **options: Any) -> MCPToolset:
        """A server started as ``command *args`` (``args`` may be omitted: ``command`` is
        then split like a shell would split it)."""
        if not args:
            parts = shlex.split(command)
            if not parts:
                raise UsageError("MCPToolset.stdio: the command is empty")
            command, args = parts[0], parts[1:]
        return cls(command=command, args=args, **options)

    @classmethod
    def http(cls, url: str, **options: Any) -> MCPToolset:
        """A server at a streamable HTTP endpoint (``https://host/mcp``)."""
        return cls(url=url, **options)

    @property
    def target(self) -> str:
        """The command line or the URL (without credentials or query)."""
        if self.command is not None:
            return shlex.join([self.command, *self.args])
        parts = urllib.parse.urlsplit(self.url or "")
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def __repr__(self) -> str:
        target = self.target
        if self.command is not None:  # the program's name, not its whole path
            target = shlex.join([Path(self.command).name, *self.args])
        return f"MCPToolset({self.name!r} {self.transport}: {_safe_text(target, 60)})"

    # -- the toolset protocol -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def tools(self) -> list[MCPTool]:
        """The tools as listed when the toolset was opened (empty while it is closed)."""
        return list(self._tools)

    async def open(self) -> list[MCPTool]:
        """Start or connect to the server and list its tools; a
        :class:`~dagcall.UsageError` naming the server and the cause when that fails or takes
        longer than ``connect_timeout``."""
        if self._conn is not None:
            raise UsageError(
                f"{self!r} is already open; a toolset belongs to one compiler at a time "
                "(make another MCPToolset for a second one)"
            )
        await _require_sdk()
        self._lock = asyncio.Lock()
        self._limit = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
        self._failed = None
        conn = _Connection(self)
        listed = await conn.start()
        try:
            tools = self._make_tools(listed)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._tools = conn, tools
        return list(tools)

    async def aclose(self) -> None:
        """Close the session and stop the server process; idempotent."""
        conn, self._conn, self._tools = self._conn, None, []
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> MCPToolset:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- tools ----------------------------------------------------------------------------------

    def _make_tools(self, listed: Sequence[Tool]) -> list[MCPTool]:
        tools: list[MCPTool] = []
        seen: dict[str, str] = {}
        for spec in listed:
            if self.include is not None and spec.name not in self.include:
                continue
            if spec.name in self.exclude:
                continue
            name = tool_name(self.prefix, spec.name)
            if name in seen:
                raise UsageError(
                    f"MCP server {self.name!r}: its tools {seen[name]!r} and {spec.name!r} are "
                    f"both called {name!r} here; exclude one (exclude=[...])"
                )
            seen[name] = spec.name
            tools.append(self._make_tool(name, spec))
        return tools

    def _make_tool(self, name: str, spec: Tool) -> MCPTool:
        notes = spec.annotations
        read_only = bool(notes and notes.read_only_hint is True)
        destructive = bool(notes and notes.destructive_hint is True)
        side_effects = self.side_effects
        if side_effects is None:
            side_effects = destructive and not read_only
        mcp_name = spec.name

        async def invoke(arguments: dict[str, Any]) -> Any:
            return await self._call(mcp_name, name, arguments)

        try:
            t = MCPTool(
                name,
                spec.description or spec.title or "",
                spec.input_schema,
                invoke,
                output_schema=spec.output_schema,
                timeout=self.timeout,
                side_effects=side_effects,
            )
        except ToolDefinitionError as exc:
            raise UsageError(
                f"MCP server {self.name!r}: its tool {spec.name!r} cannot be used: {exc.message} "
                "(exclude=[...] leaves it out)"
            ) from None
        t.server = self.name
        t.mcp_name = mcp_name
        t.title = spec.title or (notes.title if notes else None)
        t.read_only = read_only
        t.idempotent = read_only or bool(notes and notes.idempotent_hint is True)
        t.open_world = notes.open_world_hint if notes else None
        t.destructive = destructive
        t.annotations = (
            notes.model_dump(by_alias=True, exclude_none=True, mode="json") if notes else {}
        )
        return t

    # -- calls ------------------------------------------------------------------------------------

    async def _call(self, mcp_name: str, name: str, arguments: dict[str, Any]) -> Any:
        from mcp import MCPError
        from mcp.types import CONNECTION_CLOSED

        conn = await self._connection(name)
        limit = self._limit
        try:
            async with contextlib.AsyncExitStack() as stack:
                if limit is not None:
                    await stack.enter_async_context(limit)
                result = await conn.client.call_tool(mcp_name, arguments)
        except MCPError as exc:
            if conn.closing:
                raise ToolExecutionError(
                    f"{name}: {self!r} was closed while the call was in flight", tool=name
                ) from None
            if exc.code == CONNECTION_CLOSED or conn.broken is not None:
                raise self._disconnected(conn, name, exc) from None
            raise ToolExecutionError(
                f"{name}: MCP server {self.name!r} refused the call: {_mcp_error_text(exc)}",
                tool=name,
            ) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if conn.broken is not None or _is_disconnection(exc):
                raise self._disconnected(conn, name, exc) from None
            raise ToolExecutionError(
                f"{name}: calling MCP server {self.name!r} failed: {_exception_text(exc)}",
                tool=name,
            ) from exc
        return self._result(name, result)

    def _result(self, name: str, result: CallToolResult) -> Any:
        if result.is_error:
            text = content_text(result.content) or "(no message)"
            raise ToolExecutionError(
                f"{name}: MCP server {self.name!r} returned an error: {text}", tool=name
            )
        if result.structured_content is not None:
            return result.structured_content
        return content_text(result.content)

    def _disconnected(self, conn: _Connection, name: str, exc: BaseException) -> ToolExecutionError:
        conn.mark_broken(exc)
        return ToolExecutionError(
            f"{name}: MCP server {self.name!r} {conn.describe_end()}", tool=name
        )

    async def _connection(self, name: str) -> _Connection:
        """The live session, or a new one when it broke (one reconnection shared by all the
        callers that found it broken)."""
        conn, lock = self._conn, self._lock
        if conn is None or lock is None:
            raise ToolExecutionError(
                f"{name}: {self!r} is closed; open it (a compiler opens its toolsets itself)",
                tool=name,
            )
        if conn.broken is None and conn.ended():  # it went away between calls
            conn.mark_broken(ConnectionError("the server closed its end of the connection"))
        if conn.broken is None:
            return conn
        async with lock:
            current = self._conn
            if current is None:
                raise ToolExecutionError(f"{name}: {self!r} was closed", tool=name)
            if current is not conn and current.broken is None:
                return current  # another caller reconnected while this one waited
            if self._failed is not None and time.monotonic() - self._failed[0] < RECONNECT_COOLDOWN:
                raise ToolExecutionError(f"{name}: {self._failed[1].message}", tool=name)
            log.info("dagcall: %r broke (%s); reconnecting", self, current.describe_end())
            fresh = _Connection(self)
            try:
                await fresh.start()
            except DagcallError as exc:
                self._failed = (time.monotonic(), exc)
                raise ToolExecutionError(
                    f"{name}: MCP server {self.name!r} {current.describe_end()}, and restarting "
                    f"it failed: {exc.message}",
                    tool=name,
                ) from None
            if self._conn is not current:  # closed while restarting: do not keep the new one
                await fresh.close()
                raise ToolExecutionError(f"{name}: {self!r} was closed", tool=name)
            self._failed = None
            self._conn = fresh
            self.reconnects += 1
        await current.close()
        return fresh


# -- the session's own task -----------------------------------------------------------------------


class _Connection:
    """One session with the server, held open by a background task that owns its
    ``async with`` (so that the SDK's cancel scopes are entered and left in one task)."""

    def __init__(self, toolset: MCPToolset) -> None:
        self.toolset = toolset
        self._client: Client | None = None
        self.broken: BaseException | None = None  # why the session ended, once it has
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[list[Tool]] = asyncio.get_running_loop().create_future()
        # Retrieved here, so an opening nobody waits for any more logs nothing.
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._task: asyncio.Task[None] | None = None
        self._errlog: IO[str] | None = None
        self._read: Any = None
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the MCP session is not open")
        return self._client

    async def start(self) -> list[Tool]:
        """Connect and list the tools, within the toolset's connect timeout."""
        ts = self.toolset
        if ts.transport == "stdio" and ts.stderr is None:
            self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._task = asyncio.get_running_loop().create_task(
            self._hold(), name=f"dagcall-mcp-{ts.name}"
        )
        try:
            async with asyncio.timeout(ts.connect_timeout):
                return await asyncio.shield(self._ready)
        except TimeoutError:
            note = await self._failed_start()
            raise UsageError(
                f"{ts!r} could not be opened: the server did not answer within "
                f"{ts.connect_timeout:g} s{note}"
            ) from None
        except asyncio.CancelledError:
            await self.close()
            raise
        except DagcallError as exc:
            note = await self._failed_start()
            raise UsageError(f"{ts!r} could not be opened: {exc.message}{note}") from None
        except Exception as exc:
            note = await self._failed_start()
            cause = _cause_text(exc)
            if ts.transport == "stdio" and cause == "connection closed":
                cause = "the server exited or closed its output before answering"
            raise UsageError(f"{ts!r} could not be opened: {cause}{note}") from None

    async def _failed_start(self) -> str:
        """Close what was started, and say what the server's stderr ended with."""
        self._closing = True
        self._stop.set()
        if self._task is not None and not self._ready.done():
            self._task.cancel()
        if self._task is not None:
            await _wait_for(self._task)  # the process is stopped: its stderr is complete
        note = self._stderr_note()
        await self.close()
        return note

    async def _hold(self) -> None:
        try:
            async with self._make_client() as client:
                listed = await _list_tools(client)
                self._client = client
                if not self._ready.done():
                    self._ready.set_result(listed)
                await self._stop.wait()
        except BaseException as exc:
            if self.broken is None and not self._closing:
                self.broken = exc
            if not self._ready.done():
                cancelled = isinstance(exc, asyncio.CancelledError)
                self._ready.set_exception(ConnectionError("cancelled") if cancelled else exc)
            if isinstance(exc, asyncio.CancelledError) and not self._closing:
                raise
            if not isinstance(exc, Exception | asyncio.CancelledError):
                raise  # KeyboardInterrupt, SystemExit
            if not self._closing:
                log.info("dagcall: %r: session ended: %s", self.toolset, _cause_text(exc))
        else:
            if self.broken is None and not self._closing:
                self.broken = ConnectionError("the session ended")

    def _make_client(self) -> Client:
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client

        ts = self.toolset
        if ts.command is not None:
            names = dict.fromkeys([*DEFAULT_ENV_VARS, *ts.inherit_env])
            env = {k: os.environ[k] for k in names if k in os.environ}
            env.update(ts.env)
            params = StdioServerParameters(
                command=ts.command,
                args=ts.args,
                env=env,
                cwd=None if ts.cwd is None else Path(ts.cwd),
            )
            errlog = ts.stderr if ts.stderr is not None else self._errlog
            transport = stdio_client(params, errlog=cast(TextIO, errlog or sys.stderr))
        else:
            transport = _http_transport(ts)
        return Client(self._watched(transport), cache=None)

    @contextlib.asynccontextmanager
    async def _watched(self, transport: Any) -> AsyncIterator[Any]:
        """The transport, with its read stream kept to see the server's end of it close."""
        async with transport as streams:
            self._read = streams[0]
            yield streams

    def ended(self) -> bool:
        """Whether the server's side of the stream has closed (its process exited, say):
        what the SDK's memory stream says, where it says it."""
        statistics = getattr(self._read, "statistics", None)
        if not callable(statistics):
            return False
        try:
            return bool(statistics().open_send_streams == 0)
        except Exception:
            return False

    def mark_broken(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        self._stop.set()  # let the holding task close the transport (and reap the process)

    def describe_end(self) -> str:
        ts = self.toolset
        cause = _cause_text(self.broken) if self.broken is not None else "the session ended"
        if ts.transport == "stdio":
            return f"exited or closed its connection ({cause}){self._stderr_note()}"
        return f"disconnected ({cause})"

    def _stderr_note(self) -> str:
        tail = self._stderr_tail()
        return f"; its stderr ends: {tail!r}" if tail else ""

    def _stderr_tail(self) -> str:
        if self._errlog is None or self._errlog.closed:
            return ""
        try:
            fd = self._errlog.fileno()
            size = os.fstat(fd).st_size
            start = max(0, size - 4 * STDERR_TAIL_CHARS)
            data = os.pread(fd, size - start, start).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in data.splitlines() if line.strip()]
        text = " | ".join(lines[-3:])
        return text[-STDERR_TAIL_CHARS:]

    async def close(self) -> None:
        """End the session and wait for the holding task (which stops the process)."""
        self._closing = True
        self._stop.set()
        task = self._task
        if task is None:
            return
        if not self._ready.done():
            task.cancel()  # still connecting
        # The SDK bounds the stdio shutdown (stdin closed, 2 s, SIGTERM, 2 s, SIGKILL).
        await _wait_for(task)
        if self._errlog is not None and not self._errlog.closed:
            self._errlog.close()


async def _wait_for(task: asyncio.Task[None]) -> None:
    """Wait for the holding task to end, whatever it ends with; a cancellation of the
    waiting task itself is raised (the holding task then ends on its own)."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            raise
    except Exception:  # noqa: S110 - what ended the session is recorded by the task
        pass


def _http_transport(ts: MCPToolset) -> Any:
    """The streamable HTTP transport with the toolset's headers (an httpx2 client it owns)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    url = ts.url or ""

    @contextlib.asynccontextmanager
    async def transport() -> Any:
        # As the SDK's own client for the transport: the toolset's headers, and a long read
        # timeout for the server's event stream (a tool call's own limit is its timeout).
        http = httpx2.AsyncClient(
            headers=dict(ts.headers),
            timeout=httpx2.Timeout(ts.connect_timeout, read=SSE_READ_TIMEOUT),
        )
        async with http, streamable_http_client(url, http_client=http) as streams:
            yield streams

    return transport()


#: Seconds the HTTP transport waits for the next event of a server's stream (the SDK's value).
SSE_READ_TIMEOUT = 300.0


async def _list_tools(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise UsageError(f"the server's tool list did not end after {MAX_LIST_PAGES} pages")


# -- helpers ---------------------------------------------------------------------------------


async def _require_sdk() -> None:
    """Import the SDK (a second or two, the first time) in a thread, not on the loop."""
    try:
        await asyncio.to_thread(importlib.import_module, "mcp.client.stdio")
        await asyncio.to_thread(importlib.import_module, "mcp.client.streamable_http")
    except ImportError:
        raise UsageError("MCP servers need the mcp SDK: pip install 'dagcall[mcp]'") from None


_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


def tool_name(prefix: str, mcp_name: str) -> str:
    """The name the planner calls an MCP tool by: ``prefix + mcp_name`` with every character
    a Python identifier cannot hold replaced by ``_`` (``get-weather`` → ``get_weather``),
    ``t_`` before a leading digit, ``_`` after a Python keyword or ``join``."""
    name = _NOT_NAME.sub("_", prefix + mcp_name) or "tool"
    if name[0].isdigit():
        name = "t_" + name
    if keyword.iskeyword(name) or name == "join":
        name += "_"
    return name[:MAX_NAME_CHARS]


def content_text(blocks: Iterable[Any]) -> str:
    """MCP content blocks as one text: text blocks as they are, one per line; others
    summarised (``[image: image/png, 1234 bytes]``)."""
    parts: list[str] = []
    for block in blocks:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {block.mime_type}, {_b64_size(block.data)} bytes]")
        elif kind == "resource_link":
            label = f" ({block.name})" if getattr(block, "name", None) else ""
            parts.append(f"[resource link: {block.uri}{label}]")
        elif kind == "resource":
            res = block.resource
            text = getattr(res, "text", None)
            if isinstance(text, str):
                parts.append(text)
            else:
                mime = f"{res.mime_type}, " if getattr(res, "mime_type", None) else ""
                parts.append(f"[resource: {res.uri}, {mime}{_b64_size(res.blob)} bytes]")
        else:
            parts.append(f"[{_safe_text(kind, 40)} content]")
    return "\n".join(parts)


def _b64_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (ValueError, TypeError):
        return len(data) * 3 // 4


def _mcp_error_text(exc: Any) -> str:
    text = _safe_text(exc.message, 500)
    return f"{text} (code {exc.code})"


def _cause_text(exc: BaseException) -> str:
    """What ended a session, from the exception (group) the SDK raised."""
    leaf = _leaf(exc)
    from mcp import MCPError

    if isinstance(leaf, MCPError):
        from mcp.types import CONNECTION_CLOSED

        return "connection closed" if leaf.code == CONNECTION_CLOSED else _mcp_error_text(leaf)
    if isinstance(leaf, asyncio.CancelledError):
        return "cancelled"
    return _exception_text(leaf)


def _leaf(exc: BaseException) -> BaseException:
    """The first exception of a (nested) exception group that is not a cancellation."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def _is_disconnection(exc: BaseException) -> bool:
    import anyio
    import httpx2

    leaf = _leaf(exc)
    return isinstance(
        leaf,
        anyio.ClosedResourceError
        | anyio.BrokenResourceError
        | anyio.EndOfStream
        | ConnectionError
        | httpx2.TransportError,
    )


def _str_mapping(label: str, value: Mapping[str, str] | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(f"MCPToolset: {label} must map str to str")
    return dict(value)


def _default_name(command: str | None, args: Sequence[str], url: str | None) -> str:
    """A short name for a server: the module, script or package it runs, or the URL's host."""
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        return parts.netloc.rpartition("@")[2] or url
    base = Path(command or "mcp").name
    rest = list(args)
    if base.startswith("python") or base in ("uv", "uvx", "npx", "pipx", "bunx", "pnpm", "node"):
        for i, arg in enumerate(rest):
            if arg == "-m" and i + 1 < len(rest):
                return rest[i + 1]
            if arg == "-c":
                return base
            if arg in ("run", "exec", "dlx", "-y", "--yes") or arg.startswith("-"):
                continue
            name = Path(arg).name
            if name.endswith((".py", ".js", ".mjs", ".ts")):
                name = name.rsplit(".", 1)[0]
            if name.startswith("@") or "@" in name[1:]:
                name = name.lstrip("@").split("@")[0]
            return name or base
    return base
