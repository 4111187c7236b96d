"""AnthropicModel over real HTTP streaming to a fake Anthropic Messages API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
import pytest

from anthropic_server import (
    FakeAnthropicServer,
    MessageStream,
    Stall,
    Status,
    Stream,
    overloaded,
    server_error,
)
from dagcall import (
    Compiler,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelStreamError,
    TaskStatus,
    UsageError,
    tool,
)
from dagcall._tokens import estimate_tokens
from dagcall.models import Message, TokenUsage, complete, resolve_model
from dagcall.models._anthropic import AnthropicModel
from dagcall.models._http import ProviderError
from dagcall.pricing import run_cost

SECRET = "sk-ant-test-SECRET-0123456789abcdef"  # noqa: S105 - a fake key
MESSAGES = [
    Message("system", "You are terse."),
    Message("user", "Say hello."),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CONFIG_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


def make_model(server: FakeAnthropicServer, **kwargs: Any) -> AnthropicModel:
    kwargs.setdefault("max_retries", 1)
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("api_key", SECRET)
    return AnthropicModel("claude-fake", base_url=server.base_url, **kwargs)


async def collect(
    model: AnthropicModel,
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


async def test_usage_comes_from_message_start_and_message_delta(
    anthropic_server: FakeAnthropicServer,
) -> None:
    anthropic_server.script(Stream(["Hello", " there"], usage=(37, 5)))
    events: list[str | TokenUsage] = []
    await collect(make_model(anthropic_server), events)
    assert events[-1] == TokenUsage(input_tokens=37, output_tokens=5)
    assert sum(isinstance(e, TokenUsage) for e in events) == 1


async def test_cache_reads_and_writes_count_as_input(
    anthropic_server: FakeAnthropicServer,
) -> None:
    anthropic_server.script(MessageStream(["ok"], usage=(12, 3), cache_read=900, cache_creation=40))
    _, usages = await collect(make_model(anthropic_server))
    assert usages == [TokenUsage(12 + 900 + 40, 3, cached_input_tokens=900, cache_write_tokens=40)]


async def test_request_body(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["ok"], usage=(1, 1)))
    messages = [
        Message("system", "You are terse."),
        Message("user", "Say hello."),
        Message("system", "Answer in English."),
        Message("user", "Please."),
        Message("assistant", "Hello."),
        Message("assistant", "Anything else?"),
        Message("user", "   "),  # blank: the API refuses empty messages
        Message("user", "Again."),
    ]
    stops = ["\nObservation:", "END", "", "\n\n"]
    await collect(make_model(anthropic_server), messages=messages, stop=stops, max_tokens=50)

    (request,) = anthropic_server.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["anthropic-version"]
    body = request.body
    assert body["model"] == "claude-fake"
    assert body["stream"] is True
    assert body["max_tokens"] == 50
    # Prompt-cache breakpoints after the system prompt and after the last message.
    cache = {"type": "ephemeral"}
    assert body["system"] == [
        {"type": "text", "text": "You are terse.\n\nAnswer in English.", "cache_control": cache}
    ]
    assert body["messages"] == [
        {"role": "user", "content": "Say hello.\n\nPlease."},
        {"role": "assistant", "content": "Hello.\n\nAnything else?"},
        {"role": "user", "content": [{"type": "text", "text": "Again.", "cache_control": cache}]},
    ]
    # Empty and whitespace-only stop sequences are not sent (the API refuses the latter).
    assert body["stop_sequences"] == ["\nObservation:", "END"]
    assert "temperature" not in body  # refused by the API version the SDK speaks


async def test_defaults_and_a_conversation_that_starts_with_the_assistant(
    anthropic_server: FakeAnthropicServer,
) -> None:
    anthropic_server.script(Stream(["ok"]), Stream(["ok"]))
    messages = [Message("assistant", "Earlier reply."), Message("user", "Go on.")]
    await collect(make_model(anthropic_server), messages=messages)
    await collect(make_model(anthropic_server, max_tokens=128), messages=messages[:1])
    first, second = anthropic_server.bodies
    assert first["max_tokens"] == 4096
    assert "system" not in first
    assert "stop_sequences" not in first
    assert first["messages"][0]["role"] == "user"
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user"]
    assert second["max_tokens"] == 128
    assert [m["role"] for m in second["messages"]] == ["user", "assistant"]


async def test_temperature_is_sent_only_when_set(anthropic_server: FakeAnthropicServer) -> None:
    # The fake refuses sampling parameters as API version 2026-10-21 does.
    anthropic_server.script(Stream(["never sent"]))
    with pytest.raises(ModelHTTPError) as info:
        await collect(make_model(anthropic_server, temperature=0.0))
    assert anthropic_server.bodies[0]["temperature"] == 0.0
    assert info.value.status_code == 400
    assert "temperature=None" in str(info.value)
    assert len(anthropic_server.requests) == 1  # a 400 is not retried


async def test_grammar_is_accepted_and_ignored(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["fine"], usage=(3, 1)))
    texts, _ = await collect(make_model(anthropic_server), grammar='root ::= "fine"')
    assert texts == ["fine"]
    assert "grammar" not in json.dumps(anthropic_server.bodies[0])


async def test_stop_sequence_honoured_by_the_server(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["1. a()\n2. join()\n<END_", "OF_PLAN>\nmore"], usage=(9, 12)))
    texts, usages = await collect(make_model(anthropic_server), stop=["<END_OF_PLAN>"])
    assert "".join(texts) == "1. a()\n2. join()\n"
    assert usages == [TokenUsage(9, 12)]


async def test_stop_applied_locally_when_the_server_ignores_it(
    anthropic_server: FakeAnthropicServer,
) -> None:
    # The stop sequence is split across deltas and many slow deltas follow it: the model must
    # cut the text and stop reading at once instead of waiting for them.
    tail = ["more "] * 20
    anthropic_server.script(
        MessageStream(
            ["Thought: 4", "2.\nObs", "ervation: x", *tail],
            usage=(5, 30),
            delay=0.1,
            ignore_stop=True,
        )
    )
    start = time.perf_counter()
    texts, usages = await collect(make_model(anthropic_server), stop=["\nObservation"])
    assert time.perf_counter() - start < 1.5
    assert "".join(texts) == "Thought: 42."
    # Closed before message_delta: input from message_start, output estimated.
    assert usages == [
        TokenUsage(5, estimate_tokens("Thought: 42.\nObservation: x"), estimated=True)
    ]


async def test_whitespace_stop_sequences_apply_locally(
    anthropic_server: FakeAnthropicServer,
) -> None:
    anthropic_server.script(Stream(["first para", "graph\n", "\nsecond"]))
    texts, _ = await collect(make_model(anthropic_server), stop=["\n\n"])
    assert "stop_sequences" not in anthropic_server.bodies[0]
    assert "".join(texts) == "first paragraph"


# -- retries and errors ---------------------------------------------------------------------------


async def test_persistent_server_error(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(server_error(), server_error())
    model = make_model(anthropic_server, max_retries=1)
    with pytest.raises(ModelHTTPError) as info:
        await collect(model)
    err = info.value
    assert err.status_code == 500
    assert err.model == model.name
    assert model.name in str(err)
    assert anthropic_server.base_url in str(err)
    assert "provider error" in str(err)
    assert "req_fake0123456789" in str(err)  # the request id, for a support ticket
    cause = err.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, anthropic.InternalServerError)
    assert len(anthropic_server.requests) == 2
    assert SECRET not in str(err)


async def test_overloaded(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(overloaded(), overloaded())
    with pytest.raises(ModelHTTPError) as info:
        await collect(make_model(anthropic_server, max_retries=1))
    assert info.value.status_code == 529
    assert "overloaded" in str(info.value)
    assert "after 1 retry" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, anthropic.OverloadedError)
    assert len(anthropic_server.requests) == 2


async def test_unknown_model(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Status(404, "model: claude-fake"))
    with pytest.raises(ModelHTTPError, match="no model 'claude-fake'") as info:
        await collect(make_model(anthropic_server))
    assert info.value.status_code == 404


async def test_server_that_hangs_up_before_answering(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stall(0.0))
    with pytest.raises(ModelConnectionError, match="could not reach"):
        await collect(make_model(anthropic_server, max_retries=0))


async def test_malformed_event(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["Hi", " there", "!"], malformed_after=1))
    events: list[str | TokenUsage] = []
    with pytest.raises(ModelStreamError) as info:
        await collect(make_model(anthropic_server), events)
    assert events == ["Hi"]
    assert "malformed" in str(info.value)
    assert "2 characters" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, json.JSONDecodeError)


async def test_error_event_mid_stream(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["Hel", "lo", "!"], error_after=2))
    events: list[str | TokenUsage] = []
    with pytest.raises(ModelStreamError) as info:
        await collect(make_model(anthropic_server), events)
    assert events == ["Hel", "lo"]
    message = str(info.value)
    assert "overloaded_error mid-stream after 5 characters" in message
    assert "try again later" in message
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, anthropic.APIStatusError)
    assert len(anthropic_server.requests) == 1


async def test_other_error_event_mid_stream(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(MessageStream(["Hel"], error_after=1, error_type="api_error"))
    with pytest.raises(ModelStreamError, match="api_error mid-stream after 3 characters"):
        await collect(make_model(anthropic_server))


async def test_nothing_scripted_is_a_model_error(anthropic_server: FakeAnthropicServer) -> None:
    # The fake answers 400, which must surface as a dagcall error.
    with pytest.raises(ModelError):
        await collect(make_model(anthropic_server))


# -- construction ---------------------------------------------------------------------------------


def test_missing_api_key_without_base_url() -> None:
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY") as info:
        AnthropicModel("claude-sonnet-4-5")
    assert "base_url" in str(info.value)


async def test_no_key_is_needed_with_base_url(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["ok"]))
    model = AnthropicModel("claude-fake", base_url=anthropic_server.base_url)
    await collect(model)
    assert anthropic_server.requests[0].headers["authorization"] == "Bearer not-needed"


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    model = AnthropicModel("claude-sonnet-4-5")
    assert model.name == "anthropic:claude-sonnet-4-5"
    assert SECRET not in repr(model)
    assert SECRET not in str(vars(model).get("name"))


def test_api_key_never_shown() -> None:
    model = AnthropicModel("m", base_url="http://user:pw@127.0.0.1:9", api_key=SECRET)
    assert SECRET not in repr(model)
    assert SECRET not in model.name
    assert "pw" not in model.name
    assert model.name == "anthropic:m@http://***@127.0.0.1:9"


async def test_resolve_model_builds_a_working_model(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(Stream(["res", "olved"], usage=(4, 2)))
    model = resolve_model(f"anthropic:claude-x@{anthropic_server.base_url}")
    assert isinstance(model, AnthropicModel)
    assert model.name == f"anthropic:claude-x@{anthropic_server.base_url}"
    result = await complete(model, MESSAGES)
    assert result.text == "resolved"
    assert anthropic_server.bodies[0]["model"] == "claude-x"
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        resolve_model("anthropic:claude-x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"max_retries": True},
        {"timeout": 0},
        {"max_tokens": 0},
        {"temperature": 1.5},
        {"temperature": "0"},
        {"model": " "},
        {"base_url": ""},
        {"base_url": "127.0.0.1:8000"},
        {"base_url": "ftp://127.0.0.1:8000"},
        {"base_url": "http://127.0.0.1:99999"},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"model": "m", "base_url": "http://127.0.0.1:9", **kwargs}
    with pytest.raises(UsageError):
        AnthropicModel(**args)


async def test_bad_calls_are_usage_errors_before_any_request(
    anthropic_server: FakeAnthropicServer,
) -> None:
    model = make_model(anthropic_server)
    with pytest.raises(UsageError, match="role"):
        await collect(model, messages=[Message("robot", "x")])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="tool_call_id"):
        await collect(model, messages=[Message("tool", "x")])
    with pytest.raises(UsageError, match="max_tokens"):
        await collect(model, max_tokens=0)
    assert anthropic_server.requests == []


# -- a whole run --------------------------------------------------------------------------------


@tool
async def add(x: float, y: float) -> float:
    """Add two numbers."""
    await asyncio.sleep(0.01)
    return x + y


async def test_a_compiler_run_over_anthropic(anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(
        overloaded(),
        Stream(["Thought: one call.\n1. add(1", ", 2)\n", "2. join()\n"], usage=(412, 31)),
        Stream(["Thought: ok\n", "Action: Finish(3)"], usage=(230, 12)),
    )
    model = make_model(anthropic_server, max_retries=2)
    result = await Compiler(model=model, tools=[add]).arun("What is 1 + 2?")
    assert result.answer == "3"
    assert [t.status for t in result.tasks] == [TaskStatus.DONE]
    assert result.task(1).output == 3.0
    assert [(c.input_tokens, c.output_tokens, c.estimated) for c in result.usage] == [
        (412, 31, False),
        (230, 12, False),
    ]
    bodies = anthropic_server.bodies
    assert len(bodies) == 3  # the 529, its retry, the joiner
    planner = bodies[1]
    assert planner["stop_sequences"] == ["<END_OF_PLAN>"]
    assert planner["system"]
    question = {"type": "text", "text": "Question: What is 1 + 2?"}
    assert planner["messages"] == [
        {"role": "user", "content": [{**question, "cache_control": {"type": "ephemeral"}}]}
    ]
    assert bodies[2]["messages"][0]["role"] == "user"


async def test_prompt_cache_can_be_turned_off_and_its_reads_are_recorded(
    anthropic_server: FakeAnthropicServer,
) -> None:
    anthropic_server.script(Stream(["ok"], usage=(3, 1)))
    await collect(make_model(anthropic_server, prompt_cache=False), messages=MESSAGES)
    body = anthropic_server.requests[0].body
    assert "cache_control" not in json.dumps(body)

    # A run records the cache's reads and writes per call, and prices them.
    anthropic_server.script(
        MessageStream(["1. add(1, 2)\n2. join()"], usage=(10, 9), cache_creation=1500),
        MessageStream(
            ["Thought: done\nAction: Finish(3)"], usage=(40, 6), cache_read=1500, cache_creation=30
        ),
    )
    model = AnthropicModel("claude-3-5-haiku", base_url=anthropic_server.base_url, api_key="k")
    result = await Compiler(model=model, tools=[add]).arun("What is 1 + 2?")
    assert [(c.cached_input_tokens, c.cache_write_tokens) for c in result.usage] == [
        (0, 1500),
        (1500, 30),
    ]
    assert [c.input_tokens for c in result.usage] == [1510, 1570]
    cost = run_cost(result)
    # Haiku: input $0.80/M, cache writes 1.25x that, cache reads 0.1x, output $4/M.
    expected = (10 * 0.8 + 1500 * 1.0 + 40 * 0.8 + 1500 * 0.08 + 30 * 1.0 + 15 * 4.0) / 1e6
    assert cost == pytest.approx(expected)
