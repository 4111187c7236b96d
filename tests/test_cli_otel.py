"""``dagcall ask --otel``: the installed program exports the run's spans over OTLP/HTTP to
where the standard ``OTEL_*`` variables point (a receiver on 127.0.0.1 started by the test)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")
trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

from openai_server import FakeOpenAIServer, Stream  # noqa: E402

TOOLS = '''
from dagcall import tool

@tool
def lookup(name: str) -> float:
    """Look a number up."""
    return {"a": 2.0, "b": 3.0}[name]
'''


class Receiver(ThreadingHTTPServer):
    bodies: list[bytes]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_ask_otel_exports_the_runs_span_tree(
    openai_server: FakeOpenAIServer, receiver: Receiver, tmp_path: Path, dagcall_program: str
) -> None:
    program = dagcall_program
    tools = tmp_path / "tools.py"
    tools.write_text(TOOLS)
    openai_server.script(
        Stream(['1. lookup("a")\n', '2. lookup("b")\n', "3. join()\n"]),
        Stream(["Action: Finish(2 and 3)"]),
    )
    port = receiver.server_address[1]
    env = {
        **os.environ,
        "DAGCALL_DATA_DIR": str(tmp_path / "data"),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        "OTEL_SERVICE_NAME": "dagcall-test",
    }
    model = f"openai:test@{openai_server.base_url}"
    done = subprocess.run(
        [
            program,
            "ask",
            "What are a and b?",
            "--tools",
            str(tools),
            "-m",
            model,
            "--otel",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"answer": "2 and 3"' in done.stdout  # stdout is the run's JSON, nothing else
    spans = []
    for body in receiver.bodies:
        request = trace_service.ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            assert service["service.name"] == "dagcall-test"
            for scope in resource.scope_spans:
                spans += list(scope.spans)
    names = sorted(s.name for s in spans)
    assert names == sorted(
        [
            "invoke_agent dagcall",
            "plan dagcall",
            "chat test",
            "chat test",
            "execute_tool lookup",
            "execute_tool lookup",
        ]
    ), names
    (agent,) = [s for s in spans if s.name == "invoke_agent dagcall"]
    assert all(s.trace_id == agent.trace_id for s in spans)
    assert all(s.parent_span_id for s in spans if s is not agent)
