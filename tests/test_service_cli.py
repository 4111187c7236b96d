"""``dagcall serve``: the installed program serving a tools file, called with the official
``openai`` SDK, refusing what has no token, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

import httpx2
from openai import AuthenticationError, OpenAI

from openai_server import FakeOpenAIServer, Stream

TOOLS = '''
from dagcall import tool

@tool
def lookup(name: str) -> float:
    """Look a number up."""
    return {"a": 2.0, "b": 3.0}[name]
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_an_openai_client_and_stops_on_sigterm(
    openai_server: FakeOpenAIServer, tmp_path: Path, dagcall_program: str
) -> None:
    program = dagcall_program
    tools = tmp_path / "tools.py"
    tools.write_text(TOOLS)
    openai_server.script(
        Stream(['1. lookup("a")\n', '2. lookup("b")\n', "3. join()\n"]),
        Stream(["Action: Finish(2 and 3)"]),
    )
    port = _free_port()
    env = {**os.environ, "DAGCALL_TOKEN": "s3cret", "DAGCALL_DATA_DIR": str(tmp_path / "data")}
    args = ["serve", "--tools", str(tools), "-m", f"openai:test@{openai_server.base_url}"]
    process = subprocess.Popen(
        [program, *args, "--port", str(port), "--store", str(tmp_path / "runs.sqlite3")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "dagcall serve did not start"
            time.sleep(0.1)
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        client = OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        reply = client.chat.completions.create(
            model="dagcall", messages=[{"role": "user", "content": "What are a and b?"}]
        )
        assert reply.choices[0].message.content == "2 and 3"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    # uvicorn shuts down, then re-raises the signal it caught (so the exit says SIGTERM)
    assert process.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err


def test_serve_otel_traces_each_run_with_its_id(
    openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """The service's --otel hook, in process: each run is traced, tagged with its run id."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from starlette.testclient import TestClient

    from dagcall import Compiler, ScriptedModel, tool
    from dagcall.service import create_app
    from dagcall.telemetry import Tracing

    @tool
    def lookup(name: str) -> float:
        """Look a number up."""
        return {"a": 2.0}[name]

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def observe(handler: Any, run_id: str) -> Any:
        attributes = {"dagcall.run_id": run_id}
        return Tracing(on_event=handler, tracer_provider=provider, attributes=attributes).handle

    model = ScriptedModel(['1. lookup("a")\n2. join()', "Action: Finish(2)"])
    app = create_app(Compiler(model=model, tools=[lookup]), observe=observe)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "dagcall", "messages": [{"role": "user", "content": "a?"}]},
        )
    assert reply.status_code == 200, reply.text
    run_id = reply.json()["dagcall"]["run_id"]
    (agent,) = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent dagcall"]
    assert agent.attributes is not None
    assert agent.attributes["dagcall.run_id"] == run_id
