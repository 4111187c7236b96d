"""``dagcall serve``: the installed program serving a tools file, called with the official
``openai`` SDK, refusing what has no token, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

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
    openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    program = shutil.which("dagcall")
    if program is None:
        pytest.skip("the dagcall program is not installed (pip install -e .)")
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
