"""OpenAIModel against a fake OpenAI-compatible server on 127.0.0.1 (no real API is reached)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from dagcall._errors import (
    ModelError,
    ModelStreamError,
    UsageError,
)
from dagcall._tokens import estimate_tokens
from dagcall.models import Message, TokenUsage, complete, resolve_model
from dagcall.models._http import ProviderError
from dagcall.models._openai import OpenAIModel
from openai_server import (
    ChatStream,
    FakeOpenAIServer,
    Stream,
)

SECRET = "sk-test-SECRET-0123456789abcdef"  # noqa: S105 - a fake key
MESSAGES = [
    Message("system", "You are terse."),
    Message("user", "Say hello."),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


def make_model(server: FakeOpenAIServer, **kwargs: Any) -> OpenAIModel:
    kwargs.setdefault("max_retries", 1)
    kwargs.setdefault("timeout", 5.0)
    return OpenAIModel("fake-model", base_url=server.base_url, **kwargs)


async def collect(
    model: OpenAIModel,
    events: list[str | TokenUsage] | None = None,
    messages: list[Message] = MESSAGES,
    **kwargs: Any,
) -> tuple[list[str], list[TokenUsage]]:
    """Run a stream; ``events`` (if given) keeps what arrived even when the stream raises."""
    events = [] if events is None else events
    async for event in model.stream(messages, **kwargs):
        events.append(event)
    return (
        [e for e in events if isinstance(e, str)],
        [e for e in events if isinstance(e, TokenUsage)],
    )


# -- streaming ------------------------------------------------------------------------------------


async def test_usage_comes_from_the_usage_chunk(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Stream(["Hello", " there"], usage=(37, 5)))
    events: list[str | TokenUsage] = []
    await collect(make_model(openai_server), events)
    assert events[-1] == TokenUsage(input_tokens=37, output_tokens=5)
    assert sum(isinstance(e, TokenUsage) for e in events) == 1


async def test_prompt_cache_reads_are_reported(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(
        ChatStream(["Hi"], usage=(2048, 5), cached_tokens=1920),
        ChatStream(["Hi"], usage=(10, 5), cached_tokens=99),  # more than the prompt: ignored
    )
    events: list[str | TokenUsage] = []
    await collect(make_model(openai_server), events)
    assert events[-1] == TokenUsage(input_tokens=2048, output_tokens=5, cached_input_tokens=1920)
    events.clear()
    await collect(make_model(openai_server), events)
    assert events[-1] == TokenUsage(input_tokens=10, output_tokens=5)


async def test_usage_is_estimated_without_a_usage_chunk(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Stream(["Hello", ", ", "world"], usage=None))
    _, usages = await collect(make_model(openai_server))
    assert usages == [
        TokenUsage(
            input_tokens=estimate_tokens(m.content for m in MESSAGES),
            output_tokens=estimate_tokens("Hello, world"),
            estimated=True,
        )
    ]


async def test_stream_usage_false_omits_stream_options(openai_server: FakeOpenAIServer) -> None:
    # The server would report usage, but only when asked to: the model estimates instead.
    openai_server.script(Stream(["Hi"], usage=(99, 99)))
    _, usages = await collect(make_model(openai_server, stream_usage=False))
    assert "stream_options" not in openai_server.bodies[0]
    assert usages == [TokenUsage(estimate_tokens(m.content for m in MESSAGES), 1, estimated=True)]


async def test_request_body(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Stream(["ok"], usage=(1, 1)))
    model = make_model(openai_server, api_key=SECRET, extra_body={"top_k": 5})
    messages = [*MESSAGES, Message("assistant", "Hello."), Message("user", "Again.")]
    stops = ["\nObservation:", "END", "###", "<|eot|>", "STOP5", "STOP6"]
    await collect(model, messages=messages, stop=stops, max_tokens=50)

    (request,) = openai_server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    body = request.body
    assert body["model"] == "fake-model"
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in messages]
    assert body["stream"] is True
    assert body["stop"] == stops[:4]
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.0
    assert body["top_k"] == 5


async def test_request_body_without_stop_or_temperature(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Stream(["ok"]))
    await collect(make_model(openai_server, temperature=None), stop=["", ""])
    body = openai_server.bodies[0]
    assert "stop" not in body
    assert "temperature" not in body
    assert "max_tokens" not in body
    assert openai_server.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_stop_applied_locally_when_server_ignores_it(
    openai_server: FakeOpenAIServer,
) -> None:
    # The stop sequence is split across chunks, and many slow chunks follow it: the model
    # must cut the text and stop reading at once instead of waiting for them.
    tail = ["more "] * 20
    openai_server.script(
        Stream(["Thought: 4", "2.\nObs", "ervation: x", *tail], usage=(5, 30), delay=0.1)
    )
    start = time.perf_counter()
    texts, usages = await collect(make_model(openai_server), stop=["\nObservation"])
    assert time.perf_counter() - start < 1.5
    assert "".join(texts) == "Thought: 42."
    # Closed early, so no usage chunk arrived: the output is estimated from what was read.
    assert usages == [
        TokenUsage(
            estimate_tokens(m.content for m in MESSAGES),
            estimate_tokens("Thought: 42.\nObservation: x"),
            estimated=True,
        )
    ]


async def test_stop_sequences_beyond_four_still_apply_locally(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(Stream(["alpha ", "beta ", "FIFTH gamma"]))
    stops = ["S1", "S2", "S3", "S4", "FIFTH"]
    texts, _ = await collect(make_model(openai_server), stop=stops)
    assert openai_server.bodies[0]["stop"] == ["S1", "S2", "S3", "S4"]
    assert "".join(texts) == "alpha beta "


# -- retries and errors ---------------------------------------------------------------------------


async def test_malformed_chunk(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Stream(["Hi", " there", "!"], malformed_after=1))
    events: list[str | TokenUsage] = []
    with pytest.raises(ModelStreamError) as info:
        await collect(make_model(openai_server), events)
    assert events == ["Hi"]
    assert "malformed" in str(info.value)
    assert "2 characters" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, json.JSONDecodeError)


async def test_errors_are_model_errors(openai_server: FakeOpenAIServer) -> None:
    # Nothing scripted: the fake answers 400, which must surface as a dagcall error.
    with pytest.raises(ModelError):
        await collect(make_model(openai_server))


# -- construction ---------------------------------------------------------------------------------


async def test_resolve_model_builds_a_working_model(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Stream(["res", "olved"], usage=(4, 2)))
    model = resolve_model(f"openai:foo@{openai_server.base_url}")
    assert isinstance(model, OpenAIModel)
    assert model.name == f"openai:foo@{openai_server.base_url}"
    result = await complete(model, MESSAGES)
    assert result.text == "resolved"
    assert result.usage == TokenUsage(4, 2)
    assert openai_server.bodies[0]["model"] == "foo"


def test_missing_api_key_without_base_url() -> None:
    with pytest.raises(UsageError, match="OPENAI_API_KEY") as info:
        OpenAIModel("gpt-4o-mini")
    assert "base_url" in str(info.value)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        resolve_model("openai:gpt-4o-mini")


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    model = OpenAIModel("gpt-4o-mini")
    assert model.name == "openai:gpt-4o-mini"
    assert SECRET not in repr(model)
    assert SECRET not in model.name


def test_api_key_never_shown() -> None:
    model = OpenAIModel("m", base_url="http://user:pw@127.0.0.1:9/v1", api_key=SECRET)
    assert SECRET not in repr(model)
    assert SECRET not in model.name
    assert "pw" not in model.name
    assert model.name == "openai:m@http://***@127.0.0.1:9/v1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"timeout": 0},
        {"model": " "},
        {"base_url": ""},
        {"base_url": "127.0.0.1:8000/v1"},
        {"base_url": "ftp://127.0.0.1:8000/v1"},
        {"base_url": "http://127.0.0.1:99999/v1"},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"model": "m", "base_url": "http://127.0.0.1:9/v1", **kwargs}
    with pytest.raises(UsageError):
        OpenAIModel(**args)


async def test_unknown_message_role_is_a_usage_error(openai_server: FakeOpenAIServer) -> None:
    model = make_model(openai_server)
    with pytest.raises(UsageError, match="role"):
        await collect(model, messages=[Message("robot", "x")])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="tool_call_id"):
        await collect(model, messages=[Message("tool", "x")])
    assert openai_server.requests == []
