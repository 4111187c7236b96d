"""MCP servers as toolsets (dagcall.mcp.MCPToolset), against real servers the tests start.

The fixture server (tests/mcp_servers/fixture_server.py, the SDK's MCPServer) runs over stdio
and over streamable HTTP on 127.0.0.1; the reference ``mcp-server-time`` from PyPI over
stdio.  Starting a server costs about 2.5 s here (the SDK's import), so the stdio and HTTP
servers are shared by the module: the tests run on one module-wide event loop and build
their compilers from the shared toolsets' tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from dagcall import (
    ApprovalError,
    Compiler,
    Message,
    ScriptedModel,
    TaskStatus,
    ToolExecutionError,
    ToolTimeoutError,
    UsageError,
)
from dagcall.mcp import MCPTool, MCPToolset, content_text, from_spec, load_config, tool_name

#: The shared servers' sessions live on one event loop for the whole module.
LOOP = pytest.mark.asyncio(loop_scope="module")

SERVERS = Path(__file__).parent / "mcp_servers"
FIXTURE = str(SERVERS / "fixture_server.py")
FINISH = "Thought: done.\nAction: Finish(the answer)"
SECRET = "DAGCALL_MCP_TEST_SECRET"  # noqa: S105 - a variable name


def plan(*lines: str) -> str:
    return "\n".join(lines) + "\n<END_OF_PLAN>"


def compiler(tools: Sequence[Any], *replies: str, **options: Any) -> Compiler:
    return Compiler(model=ScriptedModel(list(replies)), tools=tools, **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_http_server(port: int, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, FIXTURE, "--http", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTP fixture server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the HTTP fixture server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    proc = start_http_server(port)
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stdio_tools() -> AsyncIterator[MCPToolset]:
    os.environ[SECRET] = "must not leak"
    ts = MCPToolset(
        command=sys.executable,
        args=[FIXTURE, "--name", "fixture", "--page-size", "5"],  # 14 tools in 3 pages
        name="fixture",
        env={"DAGCALL_GIVEN": "given"},
        timeout=1.5,
    )
    try:
        await ts.open()
        yield ts
    finally:
        os.environ.pop(SECRET, None)
        await ts.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http_tools(http_url: str) -> AsyncIterator[MCPToolset]:
    ts = MCPToolset(url=http_url, name="fixture-http", headers={"X-Test": "1"}, timeout=1.5)
    await ts.open()
    yield ts
    await ts.aclose()


@pytest.fixture(params=["stdio", "http"])
def shared(request: pytest.FixtureRequest) -> MCPToolset:
    """The stdio server's toolset, then the HTTP server's."""
    return request.getfixturevalue(f"{request.param}_tools")  # type: ignore[no-any-return]


def by_name(ts: MCPToolset) -> dict[str, MCPTool]:
    return {t.name: t for t in ts.tools}


# -- listing ----------------------------------------------------------------------------------


@LOOP
async def test_tools_are_listed_with_schemas_annotations_and_safe_names(
    shared: MCPToolset,
) -> None:
    tools = by_name(shared)
    assert len(tools) == 14  # every page of the stdio server's listing
    assert {"sleep", "weather", "describe", "refuse", "hang", "crash", "get_env"} <= set(tools)
    sleep = tools["sleep"]
    assert sleep.render().splitlines() == [
        "sleep(seconds: float, label: str = '')",
        "Sleep for some seconds, then say so.",
    ]
    assert sleep.json_schema["required"] == ["seconds"]
    assert (sleep.read_only, sleep.idempotent, sleep.side_effects) == (True, True, False)
    assert sleep.timeout == 1.5
    weather = tools["weather"]
    head = weather.render().splitlines()[0]  # the structured result by its fields
    assert head.startswith("weather(city: str) -> {")
    assert all(f"{f}: " in head for f in ("city", "temperature", "conditions"))
    assert weather._output is not None
    assert set(weather._output["properties"]) == {"city", "temperature", "conditions"}
    delete = tools["delete_item"]
    assert (delete.destructive, delete.side_effects, delete.read_only) == (True, True, False)
    assert delete.annotations == {"readOnlyHint": False, "destructiveHint": True}
    # No annotations: not read-only, and no side effects assumed (see docs/mcp.md).
    assert (tools["describe"].read_only, tools["describe"].side_effects) == (False, False)
    assert tools["get_env"].mcp_name == "get-env"
    assert tools["get_env"].server == shared.name
    assert shared.name in repr(shared)


def test_tool_names_become_plan_identifiers() -> None:
    assert tool_name("", "get-weather") == "get_weather"
    assert tool_name("gh_", "repos.list") == "gh_repos_list"
    assert tool_name("", "3d") == "t_3d"
    assert tool_name("", "join") == "join_"
    assert tool_name("", "class") == "class_"
    assert len(tool_name("", "x" * 100)) == 64


def test_reprs_are_short_and_keep_credentials_out() -> None:
    ts = MCPToolset(command="/usr/local/bin/mcp-server-time", args=["--local-timezone", "UTC"])
    assert repr(ts) == "MCPToolset('mcp-server-time' stdio: mcp-server-time --local-timezone UTC)"
    remote = MCPToolset(url="https://user:pw@example.com/mcp?token=x", name="remote")
    assert repr(remote) == "MCPToolset('remote' http: https://example.com/mcp)"
    assert MCPToolset(command="python", args=["-m", "mcp_server_time"]).name == "mcp_server_time"
    assert MCPToolset(command="npx", args=["-y", "@scope/server-x@1.2"]).name == "server-x"
    assert MCPToolset(url="http://127.0.0.1:9/mcp").name == "127.0.0.1:9"


# -- calling ----------------------------------------------------------------------------------


@LOOP
async def test_calls_to_one_server_run_in_parallel(shared: MCPToolset) -> None:
    c = compiler(
        shared.tools,
        plan("1. sleep(0.5)", "2. sleep(0.5)", "3. sleep(0.5)", "4. join()"),
        FINISH,
    )
    started = time.perf_counter()
    result = await c.arun("q")
    elapsed = time.perf_counter() - started
    assert [t.output for t in result.tasks] == ["slept 0.5"] * 3
    assert elapsed < 1.2, elapsed
    assert max(t.started_at or 0 for t in result.tasks) < min(t.ended_at or 0 for t in result.tasks)


@LOOP
async def test_concurrent_runs_share_the_session(shared: MCPToolset) -> None:
    def reply(messages: Sequence[Message]) -> str:
        return FINISH if "Round 1:" in messages[-1].content else plan('1. sleep(0.5, "x")')

    c = Compiler(model=ScriptedModel(reply), tools=shared.tools)
    started = time.perf_counter()
    results = await asyncio.gather(*(c.arun("q") for _ in range(4)))
    assert time.perf_counter() - started < 1.5
    assert [r.tasks[0].output for r in results] == ["slept 0.5 x"] * 4


@LOOP
async def test_structured_content_is_a_dict_passed_on_by_reference(shared: MCPToolset) -> None:
    c = compiler(shared.tools, plan('1. weather("Paris")', "2. describe($1)", "3. join()"), FINISH)
    result = await c.arun("q")
    t1, t2 = result.tasks
    assert t1.output == {"city": "Paris", "temperature": 21.5, "conditions": "sunny"}
    assert t2.resolved_args == {"report": t1.output}
    assert t2.output == "Paris: 21.5 degrees, sunny"


@LOOP
async def test_error_results_fail_their_task_with_the_servers_message(shared: MCPToolset) -> None:
    c = compiler(
        shared.tools,
        plan('1. refuse("not today")', '2. oops("broken")', '3. sleep(0, "fine")', "4. join()"),
        FINISH,
    )
    result = await c.arun("q")
    assert result.answer == "the answer"
    t1, t2, t3 = result.tasks
    assert t1.status is TaskStatus.FAILED
    assert isinstance(t1.error, ToolExecutionError)
    assert t1.error.message == (
        f"refuse: MCP server {shared.name!r} returned an error: refused: not today"
    )
    assert t1.error.task_id == 1
    assert isinstance(t2.error, ToolExecutionError)
    assert "oops: broken" in t2.error.message
    assert t3.output == "slept 0.0 fine"
    assert "refused: not today" in t1.observation


@LOOP
async def test_arguments_are_validated_before_the_call(shared: MCPToolset) -> None:
    c = compiler(shared.tools, plan('1. sleep("long")', "2. join()"), FINISH)
    (task,) = (await c.arun("q")).tasks
    assert task.status is TaskStatus.FAILED
    assert "seconds: 'long' is not of type 'number'" in str(task.error)


@LOOP
async def test_a_hanging_server_times_out_and_the_run_finishes(shared: MCPToolset) -> None:
    c = compiler(shared.tools, plan("1. hang()", "2. noop()", "3. join()"), FINISH)
    started = time.perf_counter()
    result = await c.arun("q")
    assert time.perf_counter() - started < 3
    hang, noop = result.tasks
    assert isinstance(hang.error, ToolTimeoutError)
    assert "hang did not finish within 1.5 s" in hang.error.message
    assert noop.output == "ok"
    # The session is still good.
    again = await compiler(shared.tools, plan("1. noop()"), FINISH).arun("q")
    assert again.tasks[0].output == "ok"


@LOOP
async def test_content_blocks_become_text(shared: MCPToolset) -> None:
    result = await compiler(shared.tools, plan("1. picture()"), FINISH).arun("q")
    assert result.tasks[0].output == "a caption\n[image: image/png, 16 bytes]\nsecond line"


def test_content_text_summarises_every_kind_of_block() -> None:
    from mcp.types import (
        AudioContent,
        BlobResourceContents,
        EmbeddedResource,
        ResourceLink,
        TextContent,
        TextResourceContents,
    )

    blocks = [
        TextContent(text="one"),
        AudioContent(data="AAAA", mime_type="audio/wav"),
        ResourceLink(uri="file:///a.txt", name="a"),
        EmbeddedResource(resource=TextResourceContents(uri="file:///b", text="inline")),
        EmbeddedResource(
            resource=BlobResourceContents(uri="file:///c", blob="AAAA", mime_type="x/y")
        ),
    ]
    assert content_text(blocks) == (
        "one\n[audio: audio/wav, 3 bytes]\n[resource link: file:///a.txt (a)]\ninline\n"
        "[resource: file:///c, x/y, 3 bytes]"
    )


@LOOP
async def test_destructive_tools_need_approval(shared: MCPToolset) -> None:
    result = await compiler(shared.tools, plan('1. delete_item("x")'), FINISH).arun("q")
    assert isinstance(result.tasks[0].error, ApprovalError)
    c = compiler(shared.tools, plan('1. delete_item("x")'), FINISH, approve=lambda task: True)
    assert (await c.arun("q")).tasks[0].output == "deleted x"


@LOOP
async def test_a_stdio_server_gets_only_the_allowed_environment(stdio_tools: MCPToolset) -> None:
    c = compiler(
        stdio_tools.tools,
        plan(f'1. get_env("{SECRET}")', '2. get_env("DAGCALL_GIVEN")', '3. get_env("PATH")'),
        FINISH,
    )
    secret, given, path = (t.output for t in (await c.arun("q")).tasks)
    assert secret == "<unset>"  # noqa: S105
    assert given == "given"
    assert path == os.environ["PATH"]


@LOOP
async def test_an_http_server_gets_the_headers(http_tools: MCPToolset) -> None:
    c = compiler(http_tools.tools, plan('1. get_header("X-Test")'), FINISH)
    assert (await c.arun("q")).tasks[0].output == "1"


# -- several servers ---------------------------------------------------------------------------


@LOOP
async def test_two_servers_with_prefixes_and_a_clear_clash(http_url: str) -> None:
    first = MCPToolset(url=http_url, name="one", prefix="a_")
    second = MCPToolset(url=http_url, name="two", prefix="b_", include=["whoami", "sleep"])
    c = compiler(
        [first, second],
        plan("1. a_sleep(0.3)", "2. b_sleep(0.3)", "3. b_whoami()", "4. join()"),
        FINISH,
    )
    async with c:
        assert sorted(n for n in c.tools if n.startswith("b_")) == ["b_sleep", "b_whoami"]
        assert "a_get_env" in c.tools
        result = await c.arun("q")
        assert [t.status for t in result.tasks] == [TaskStatus.DONE] * 3
    assert not first.is_open
    assert not second.is_open
    clash = Compiler(
        model=ScriptedModel([]),
        tools=[MCPToolset(url=http_url, name="one"), MCPToolset(url=http_url, name="two")],
    )
    with pytest.raises(UsageError) as info:
        await clash.toolbox.open()
    message = info.value.message
    assert re.search(r"two tools are named '\w+', from toolset MCPToolset\('one' http", message)
    assert "MCPToolset('two' http" in message
    assert all(not ts.is_open for ts in clash.toolbox.toolsets)  # type: ignore[attr-defined]


@LOOP
async def test_a_toolset_is_opened_by_one_owner_at_a_time(http_tools: MCPToolset) -> None:
    with pytest.raises(UsageError, match="already open"):
        await http_tools.open()


# -- crashes and failures to start --------------------------------------------------------------


@LOOP
async def test_a_crashing_stdio_server_fails_its_tasks_and_is_restarted() -> None:
    ts = MCPToolset(command=sys.executable, args=[FIXTURE], name="crashy", timeout=10)
    c = compiler(
        [ts],
        plan("1. pid()", "2. join()"),
        FINISH,
        plan("1. crash()", "2. sleep(2)", "3. join()"),
        FINISH,
        plan("1. pid()", "2. pid()", "3. join()"),
        FINISH,
        plan("1. pid()", "2. join()"),
        FINISH,
    )
    async with c:
        first_pid = int((await c.arun("q")).tasks[0].output)
        started = time.perf_counter()
        crashed = await c.arun("q")
        assert time.perf_counter() - started < 2  # the in-flight sleep(2) failed at once
        assert crashed.answer == "the answer"
        for task in crashed.tasks:
            assert isinstance(task.error, ToolExecutionError)
            assert task.error.message.startswith(
                f"{task.tool}: MCP server 'crashy' exited or closed its connection"
            )
            assert "fixture server: crashing on purpose" in task.error.message
        again = await c.arun("q")
        pids = {int(t.output) for t in again.tasks}
        assert len(pids) == 1  # two concurrent calls shared one restart
        (second_pid,) = pids
        assert second_pid != first_pid
        assert ts.reconnects == 1
        # A server that dies between runs is restarted before the next call.
        os.kill(second_pid, signal.SIGKILL)
        await asyncio.sleep(0.3)
        third_pid = int((await c.arun("q")).tasks[0].output)
        assert third_pid not in (first_pid, second_pid)
        assert ts.reconnects == 2
    with pytest.raises(ProcessLookupError):
        os.kill(third_pid, 0)  # closing the compiler stopped the process


@LOOP
async def test_a_crashing_http_server_fails_its_tasks_and_is_reconnected() -> None:
    port = free_port()
    proc = start_http_server(port)
    ts = MCPToolset(url=f"http://127.0.0.1:{port}/mcp", name="remote", timeout=10)
    try:
        async with ts:
            tools = ts.tools
            c = compiler(tools, plan("1. crash()", "2. sleep(2)", "3. join()"), FINISH)
            crashed = await c.arun("q")
            for task in crashed.tasks:
                assert isinstance(task.error, ToolExecutionError)
                assert f"{task.tool}: MCP server 'remote' disconnected" in task.error.message
            proc.wait(5)
            down = await compiler(tools, plan("1. noop()"), FINISH).arun("q")
            assert "restarting it failed" in str(down.tasks[0].error)
            assert "ConnectError" in str(down.tasks[0].error)
            proc = start_http_server(port)
            await asyncio.sleep(1.1)  # past the reconnection cool-down
            back = await compiler(tools, plan("1. noop()"), FINISH).arun("q")
            assert back.tasks[0].output == "ok"
    finally:
        stop(proc)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (
            {"command": "dagcall-no-such-mcp-server"},
            "could not be opened: FileNotFoundError",
        ),
        (
            {"command": sys.executable, "args": [FIXTURE, "--fail-start"]},
            "the server exited or closed its output before answering; its stderr ends: "
            "'fixture server: refusing to start'",
        ),
        (
            {"command": sys.executable, "args": ["-c", "print('not json'); import sys"]},
            "could not be opened",
        ),
        (
            {
                "command": sys.executable,
                "args": ["-c", "import sys; sys.stdin.read()"],
                "connect_timeout": 0.5,
            },
            "the server did not answer within 0.5 s",
        ),
        ({"url": f"http://127.0.0.1:{free_port()}/mcp"}, "ConnectError"),
    ],
    ids=["no-command", "exits", "garbage", "silent", "unreachable"],
)
@LOOP
async def test_a_server_that_cannot_be_opened_is_a_usage_error_naming_it(
    options: dict[str, Any], needle: str
) -> None:
    ts = MCPToolset(name="broken", **options)
    c = Compiler(model=ScriptedModel([]), tools=[ts])
    started = time.perf_counter()
    with pytest.raises(UsageError) as info:
        await c.arun("q")
    assert time.perf_counter() - started < 5
    assert info.value.message.startswith("MCPToolset('broken' ")
    assert needle in info.value.message
    assert not ts.is_open


# -- the reference time server from PyPI --------------------------------------------------------


def offset_hours(zone: str) -> float:
    offset = datetime.now(ZoneInfo(zone)).utcoffset()
    assert offset is not None
    return offset.total_seconds() / 3600


@LOOP
async def test_mcp_server_time_answers_a_parallel_plan() -> None:
    def reply(messages: Sequence[Message]) -> str:
        prompt = messages[-1].content
        if "Round 1:" not in prompt:
            return plan(
                '1. get_current_time("Europe/Paris")',
                '2. get_current_time("Asia/Tokyo")',
                '3. convert_time("Europe/Paris", "12:00", "Asia/Tokyo")',
                "4. join()",
            )
        found = re.search(r'"time_difference":\s*"([^"]+)"', prompt)
        return f"Thought: converted.\nAction: Finish(Tokyo is {found[1] if found else '?'})"

    ts = MCPToolset(command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone=UTC"])
    c = Compiler(model=ScriptedModel(reply), tools=[ts])
    async with c:
        assert set(c.tools) == {"get_current_time", "convert_time"}
        assert all(t.read_only for t in ts.tools)
        result = await c.arun("What time is it in Paris and Tokyo, and their difference?")
    paris, tokyo, converted = result.tasks
    assert all(t.status is TaskStatus.DONE for t in result.tasks)
    assert isinstance(paris.output, dict)
    assert paris.output["timezone"] == "Europe/Paris"
    assert tokyo.output["timezone"] == "Asia/Tokyo"
    assert {"datetime", "day_of_week", "is_dst"} <= set(tokyo.output)
    difference = offset_hours("Asia/Tokyo") - offset_hours("Europe/Paris")
    assert converted.output["target"]["timezone"] == "Asia/Tokyo"
    assert converted.output["time_difference"] == f"{difference:+.1f}h"
    assert result.answer == f"Tokyo is {difference:+.1f}h"
    assert max(paris.started_at or 0, tokyo.started_at or 0) < min(
        paris.ended_at or 0, tokyo.ended_at or 0
    )


# -- configuration --------------------------------------------------------------------------------


def test_load_config_reads_the_mcp_clients_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGCALL_TEST_TOKEN", "s3cret")
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {
                        "command": "uvx",
                        "args": ["mcp-server-time", "--local-timezone", "UTC"],
                        "env": {"TZ": "UTC"},
                    },
                    "search": {
                        "type": "streamable-http",
                        "url": "https://example.com/mcp",
                        "headers": {"Authorization": "Bearer ${env:DAGCALL_TEST_TOKEN}"},
                        "prefix": "search_",
                        "timeout": 5,
                        "autoApprove": ["x"],
                    },
                    "vscode": {"type": "http", "url": "http://127.0.0.1:1/mcp"},
                    "local": {"type": "stdio", "command": "python", "args": ["server.py"]},
                    "off": {"command": "nothing", "disabled": True},
                }
            }
        )
    )
    time_, search, vscode, local = load_config(path, timeout=9)
    assert (time_.name, time_.command, time_.args) == (
        "time",
        "uvx",
        ["mcp-server-time", "--local-timezone", "UTC"],
    )
    assert time_.env == {"TZ": "UTC"}
    assert time_.timeout == 9
    assert (search.transport, search.url, search.prefix, search.timeout) == (
        "http",
        "https://example.com/mcp",
        "search_",
        5,
    )
    assert search.headers == {"Authorization": "Bearer s3cret"}
    assert "s3cret" not in repr(search)
    assert vscode.transport == "http"
    assert local.args == ["server.py"]
    (server,) = load_config({"servers": {"s": {"command": "x"}}})
    assert server.name == "s"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([], 'must be a JSON object with an "mcpServers" object'),
        ({"servers_": {}}, 'has no "mcpServers" object'),
        ({"mcpServers": []}, '"mcpServers" must be an object of servers by name'),
        ({"mcpServers": {"a": "uvx x"}}, "server 'a': must be an object"),
        ({"mcpServers": {"a": {}}}, "server 'a': needs \"command\""),
        ({"mcpServers": {"a": {"comand": "x"}}}, "server 'a': unknown key 'comand'"),
        ({"mcpServers": {"a": {"command": ""}}}, "server 'a': \"command\" must be a non-empty"),
        ({"mcpServers": {"a": {"command": "x", "args": "y"}}}, '"args" must be a list of str'),
        ({"mcpServers": {"a": {"command": "x", "env": {"A": 1}}}}, '"env" must be an object'),
        ({"mcpServers": {"a": {"command": "x", "url": "http://h"}}}, 'both "command" and'),
        ({"mcpServers": {"a": {"command": "x", "headers": {}}}}, '"headers" is for an HTTP'),
        ({"mcpServers": {"a": {"url": "http://h", "args": []}}}, '"args" is for a stdio'),
        ({"mcpServers": {"a": {"url": "ftp://h"}}}, "server 'a': url must be an http://"),
        ({"mcpServers": {"a": {"type": "sse", "url": "http://h"}}}, "SSE transport is not"),
        ({"mcpServers": {"a": {"type": "ws", "url": "http://h"}}}, "unknown \"type\" 'ws'"),
        ({"mcpServers": {"a": {"type": "stdio", "url": "http://h"}}}, 'has no "command"'),
        ({"mcpServers": {"a": {"command": "x", "timeout": -1}}}, '"timeout" must be a positive'),
        ({"mcpServers": {"a": {"command": "x", "disabled": "no"}}}, '"disabled" must be true'),
        (
            {"mcpServers": {"a": {"command": "x", "env": {"K": "${DAGCALL_UNSET_VAR}"}}}},
            '"env.K" uses ${DAGCALL_UNSET_VAR}, which is not set',
        ),
    ],
)
def test_malformed_configurations_name_the_server_and_the_key(data: Any, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        load_config(data)
    assert needle in info.value.message


def test_unreadable_config_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the MCP configuration"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {')
    with pytest.raises(UsageError, match=r"is not valid JSON: .* line 1"):
        load_config(bad)


def test_from_spec_takes_a_url_or_a_command_line() -> None:
    remote = from_spec("https://example.com/mcp", prefix="r_")
    assert (remote.transport, remote.url, remote.prefix) == (
        "http",
        "https://example.com/mcp",
        "r_",
    )
    local = from_spec("uvx mcp-server-time --local-timezone 'Europe/Paris'")
    assert (local.command, local.args) == (
        "uvx",
        ["mcp-server-time", "--local-timezone", "Europe/Paris"],
    )
    assert local.name == "mcp-server-time"
    for bad in ("", "   ", "unterminated 'quote"):
        with pytest.raises(UsageError):
            from_spec(bad)


def test_bad_toolset_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="either command"):
        MCPToolset()
    with pytest.raises(UsageError, match="either command"):
        MCPToolset(command="x", url="http://h")
    with pytest.raises(UsageError, match="timeout must be a positive"):
        MCPToolset(command="x", timeout=0)
    with pytest.raises(UsageError, match="max_concurrency"):
        MCPToolset(command="x", max_concurrency=0)
    with pytest.raises(UsageError, match="env must map str to str"):
        MCPToolset(command="x", env={"A": 1})  # type: ignore[dict-item]
