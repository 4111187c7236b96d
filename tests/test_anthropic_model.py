"""AnthropicModel against a fake Anthropic Messages API on 127.0.0.1."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from anthropic_server import FakeAnthropicServer, overloaded
from dagcall import Compiler, ModelConnectionError, ModelHTTPError, ModelStreamError, UsageError
from dagcall import tool as make_tool
from dagcall.models import Message, TokenUsage, resolve_model
from dagcall.models._anthropic import AnthropicModel
from openai_server import Stream, rate_limited, server_error

SECRET = "sk-ant-test-SECRET-0123456789"  # noqa: S105 - a fake key
MESSAGES = [
    Message("system", "You are terse."),
    Message("system", "Answer in English."),
    Message("user", "Say hello."),
    Message("user", "Please."),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


def make(server: FakeAnthropicServer, **kw: Any) -> AnthropicModel:
    kw.setdefault("max_retries", 1)
    return AnthropicModel("claude-fake", base_url=server.base_url, api_key=SECRET, **kw)


async def collect(model: AnthropicModel, **kw: Any) -> tuple[list[str], list[TokenUsage]]:
    texts: list[str] = []
    usages: list[TokenUsage] = []
    async for event in model.stream(MESSAGES, **kw):
        if isinstance(event, TokenUsage):
            usages.append(event)
        else:
            texts.append(event)
    return texts, usages


async def test_streams_text_and_usage(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["Hel", "lo, ", "world"], usage=(31, 4)))
    texts, usages = await collect(make(anthropic_server))
    assert len(texts) >= 2
    assert "".join(texts) == "Hello, world"
    assert usages == [TokenUsage(31, 4)]


async def test_request_body(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["ok"], usage=(5, 1)))
    await collect(make(anthropic_server, temperature=0.2), stop=["END", " "], max_tokens=50)
    (request,) = anthropic_server.requests
    assert request.path == "/v1/messages"
    assert SECRET in (request.headers.get("x-api-key") or request.headers["authorization"])
    body = request.body
    assert body["model"] == "claude-fake"
    assert body["stream"] is True
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.2
    assert body["system"] == "You are terse.\n\nAnswer in English."
    assert body["messages"] == [{"role": "user", "content": "Say hello.\n\nPlease."}]
    assert body["stop_sequences"] == ["END"]  # blank stop sequences are not sent


async def test_stop_sequences_apply_locally(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["1. a()\n2. join()\n<END_", "OF_PLAN>\nmore"], usage=(9, 9)))
    texts, _ = await collect(make(anthropic_server), stop=["<END_OF_PLAN>"])
    assert "".join(texts) == "1. a()\n2. join()\n"


async def test_rate_limit_is_retried(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(rate_limited("0"), Stream(["fine"], usage=(3, 1)))
    texts, _ = await collect(make(anthropic_server))
    assert "".join(texts) == "fine"
    assert len(anthropic_server.requests) == 2


@pytest.mark.parametrize(
    ("behaviours", "status", "words"),
    [
        ([server_error(500)] * 2, 500, "provider error"),
        ([overloaded()] * 2, 529, "overloaded"),
        ([rate_limited("0")] * 2, 429, "rate limited"),
    ],
)
async def test_persistent_status_errors(
    anthropic_server: FakeAnthropicServer, behaviours: list[Any], status: int, words: str
) -> None:
    anthropic_server.script(*behaviours)
    with pytest.raises(ModelHTTPError) as info:
        await collect(make(anthropic_server))
    assert info.value.status_code == status
    assert words in info.value.message
    assert SECRET not in info.value.message


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = AnthropicModel(
        "claude-fake", base_url=f"http://127.0.0.1:{port}", api_key=SECRET, max_retries=0
    )
    with pytest.raises(ModelConnectionError, match="could not reach"):
        await collect(model)


@pytest.mark.parametrize(
    ("stream", "words"),
    [
        (Stream(["Hel", "lo", "!"], cut_after=2), "was cut after 5 characters"),
        (Stream(["Hel", "lo"], malformed_after=1), "ended without message_stop after 3"),
        (Stream(["Hel", "lo"], error_after=1), "after 3 characters"),
        (Stream(["Hel", "lo"], end_after=1), "ended without message_stop after 3"),
    ],
)
async def test_faults_mid_stream(
    anthropic_server: FakeAnthropicServer, stream: Stream, words: str
) -> None:
    anthropic_server.script(stream)
    received: list[str] = []

    async def read() -> None:
        async for event in make(anthropic_server).stream(MESSAGES):
            if isinstance(event, str):
                received.append(event)

    with pytest.raises(ModelStreamError) as info:
        await read()
    assert words in info.value.message
    assert "".join(received) == "".join(stream.chunks)[: len("".join(received))]
    assert received


def test_key_handling(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    model = AnthropicModel("claude-x")
    assert model.name == "anthropic:claude-x"
    assert SECRET not in repr(model)
    assert isinstance(resolve_model("anthropic:claude-x"), AnthropicModel)


async def test_compiler_runs_over_anthropic(anthropic_server: FakeAnthropicServer) -> None:
    @make_tool
    def add(x: float, y: float) -> float:
        """Add."""
        return x + y

    anthropic_server.script(
        Stream(["1. add(1, ", "2)\n2. join()\n"], usage=(300, 12)),
        Stream(["Thought: ok\n", "Action: Finish(3)"], usage=(150, 8)),
    )
    result = await Compiler(model=make(anthropic_server), tools=[add]).arun("1 + 2?")
    assert result.answer == "3"
    assert result.task(1).output == 3.0
    assert [(c.input_tokens, c.output_tokens) for c in result.usage] == [(300, 12), (150, 8)]
