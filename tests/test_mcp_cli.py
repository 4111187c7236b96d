"""MCP on the command line: ``dagcall ask --mcp / --mcp-config`` over a real MCP server the
test starts, and ``dagcall mcp-serve`` run as the installed program and called with the SDK's
own client; the model is a real OpenAI-compatible server on 127.0.0.1 (the fake one)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters

from dagcall.cli import main
from openai_server import FakeOpenAIServer, Stream

SERVER = Path(__file__).parent / "mcp_servers" / "fixture_server.py"
PLAN = ['1. weather("Paris")\n', "2. describe($1)\n", "3. join()\n"]
ANSWER = ["Thought: described.\n", "Action: Finish(Paris: 21.5 degrees, sunny)"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGCALL_MODEL", raising=False)


def model_flag(server: FakeOpenAIServer) -> str:
    return f"openai:test@{server.base_url}"


def test_ask_with_an_mcp_server_on_the_command_line(
    openai_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_server.script(Stream(PLAN), Stream(ANSWER))
    spec = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}"
    code = main(
        ["ask", "Weather in Paris?", "--mcp", spec, "-m", model_flag(openai_server), "--json"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    weather, described = result["tasks"]
    assert weather["output"] == {"city": "Paris", "temperature": 21.5, "conditions": "sunny"}
    assert described["output"] == "Paris: 21.5 degrees, sunny"  # $1 passed the dict itself
    assert result["answer"] == "Paris: 21.5 degrees, sunny"
    planner_prompt = openai_server.requests[0].body["messages"][0]["content"]
    assert "weather(city: str)" in planner_prompt  # the server's tools reached the planner


def test_ask_with_an_mcp_config_file(
    openai_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    openai_server.script(
        Stream(['1. fx_weather("Paris")\n', "2. fx_describe($1)\n", "3. join()\n"]),
        Stream(ANSWER),
    )
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "fixture": {
                        "command": sys.executable,
                        "args": [str(SERVER)],
                        "prefix": "fx_",
                    }
                }
            }
        )
    )
    args = ["ask", "q", "--mcp-config", str(config), "-m", model_flag(openai_server), "--json"]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [t["tool"] for t in json.loads(out)["tasks"]] == ["fx_weather", "fx_describe"]


def test_a_bad_mcp_server_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "ask",
            "q",
            "--mcp",
            f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))} --fail-start",
            "-m",
            "openai:x@http://127.0.0.1:9/v1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ")
    assert "could not be opened" in err
    assert "refusing to start" in err  # the server's own stderr, quoted
    assert len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {"x": {"comand": "typo"}}}')
    assert main(["ask", "q", "--mcp-config", str(bad), "-m", "openai:x@http://127.0.0.1:9/v1"]) == 2
    assert "comand" in capsys.readouterr().err


async def test_mcp_serve_is_an_mcp_server_an_mcp_client_can_ask(
    openai_server: FakeOpenAIServer, dagcall_program: str
) -> None:
    program = dagcall_program
    openai_server.script(Stream(PLAN), Stream(ANSWER))
    params = StdioServerParameters(
        command=program,
        args=[
            "mcp-serve",
            "--mcp",
            f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}",
            "-m",
            model_flag(openai_server),
            "--timeout",
            "60",
        ],
    )
    async with Client(params, cache=None) as client:
        listed = await client.list_tools()
        assert [t.name for t in listed.tools] == ["ask"]
        reply = await client.call_tool("ask", {"question": "What is the weather in Paris?"})
    assert not reply.is_error, reply.content
    summary = reply.structured_content
    assert summary is not None
    assert summary["answer"] == "Paris: 21.5 degrees, sunny"
    assert [t["tool"] for t in summary["tasks"]] == ["weather", "describe"]
    assert all(t["status"] == "done" for t in summary["tasks"])
