"""What every HTTP provider model does alike, asserted once and run against each fake server.

Provider-specific behaviour (request bodies, the wire shape of messages, 404/529 advice,
error events) stays in tests/test_openai_model.py and tests/test_anthropic_model.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from dagcall._errors import ModelConnectionError, ModelHTTPError, ModelStreamError, UsageError
from dagcall.models import (
    AnthropicModel,
    Message,
    OpenAIModel,
    TokenUsage,
    ToolCall,
    complete,
    complete_with_tools,
)
from dagcall.models._http import ProviderError
from dagcall.models._provider import HTTPModel
from fake_http import FakeHTTPServer, Stall, Status, Stream, rate_limited, server_error

SECRET = "sk-test-SECRET-0123456789abcdef"  # noqa: S105 - a fake key
MESSAGES = [Message("system", "You are terse."), Message("user", "Say hello.")]
TOOLS = [{"name": "look", "description": "Look up.", "parameters": {"type": "object"}}]


@dataclass
class Provider:
    name: str
    server: FakeHTTPServer
    model_class: type[OpenAIModel] | type[AnthropicModel]
    sdk: ModuleType
    key_env: str
    finish_marker: str
    url_suffix: str  # what base_url adds to the server root
    cut_cause: type[BaseException]  # what the SDK raises when the body is cut

    def sdk_client(self, **kwargs: Any) -> Any:
        """The provider's own SDK client (AsyncOpenAI or AsyncAnthropic)."""
        make = openai.AsyncOpenAI if self.name == "openai" else anthropic.AsyncAnthropic
        return make(**kwargs)

    def model(self, **kwargs: Any) -> HTTPModel:
        kwargs.setdefault("max_retries", 1)
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("api_key", SECRET)
        kwargs.setdefault("base_url", self.server.base_url)
        return self.model_class("fake-model", **kwargs)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest) -> Provider:
    if request.param == "openai":
        server = request.getfixturevalue("openai_server")
        return Provider(
            "openai",
            server,
            OpenAIModel,
            openai,
            "OPENAI_API_KEY",
            "a finish_reason",
            "/v1",
            openai.APIConnectionError,
        )
    server = request.getfixturevalue("anthropic_server")
    return Provider(
        "anthropic",
        server,
        AnthropicModel,
        anthropic,
        "ANTHROPIC_API_KEY",
        "message_stop",
        "",
        httpx2.TransportError,  # the SDK lets the transport's error through mid-stream
    )


async def collect(
    model: HTTPModel, events: list[str | TokenUsage] | None = None, **kwargs: Any
) -> tuple[list[str], list[TokenUsage]]:
    events = [] if events is None else events
    async for event in model.stream(MESSAGES, **kwargs):
        events.append(event)
    return (
        [e for e in events if isinstance(e, str)],
        [e for e in events if isinstance(e, TokenUsage)],
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- streaming ------------------------------------------------------------------------------------


async def test_text_streams_in_several_deltas(provider: Provider) -> None:
    provider.server.script(Stream(["Hel", "lo, ", "wor", "ld!"], usage=(21, 4)))
    texts, usages = await collect(provider.model())
    assert len(texts) >= 2
    assert all(texts)
    assert "".join(texts) == "Hello, world!"
    assert usages == [TokenUsage(21, 4)]


async def test_stop_sequence_is_applied_locally(provider: Provider) -> None:
    provider.server.script(Stream(["1. a\n", "Thought: x", "yz"]))
    texts, usages = await collect(provider.model(), stop=["Thought:"])
    assert "".join(texts) == "1. a\n"
    assert len(usages) == 1


async def test_tool_calls_follow_the_text(provider: Provider) -> None:
    provider.server.script(
        Stream(["ok"], tool_calls=[("look", '{"q": "a"}'), ("look", "{}")], usage=(5, 2))
    )
    completion = await complete_with_tools(provider.model(), MESSAGES, TOOLS)
    assert completion.text == "ok"
    assert [(c.name, json.loads(c.arguments)) for c in completion.tool_calls] == [
        ("look", {"q": "a"}),
        ("look", {}),
    ]
    assert all(isinstance(c, ToolCall) and c.id for c in completion.tool_calls)


async def test_held_back_text_is_flushed_at_the_end(provider: Provider) -> None:
    provider.server.script(Stream(["answer: 7", "\nObs"]))
    texts, _ = await collect(provider.model(), stop=["\nObservation"])
    assert "".join(texts) == "answer: 7\nObs"


async def test_complete_gathers_the_stream(provider: Provider) -> None:
    provider.server.script(Stream(["4", "2"], usage=(8, 1)))
    result = await complete(provider.model(), MESSAGES)
    assert result.text == "42"
    assert result.usage == TokenUsage(8, 1)
    assert result.time_to_first_token is not None


async def test_consumer_may_stop_early(provider: Provider) -> None:
    provider.server.script(Stream(["a", "b", "c", "d"], delay=0.05), Stream(["again"]))
    model = provider.model()
    agen = model.stream(MESSAGES)
    assert await agen.__anext__() == "a"
    await agen.aclose()
    texts, _ = await collect(model)  # the model is still usable
    assert texts == ["again"]


async def test_a_client_passed_in_is_used_and_left_open(provider: Provider) -> None:
    provider.server.script(Stream(["one"]), Stream(["two"]))
    async with provider.sdk_client(
        api_key=SECRET, base_url=provider.server.base_url, max_retries=0
    ) as client:
        model = provider.model_class("fake-model", client=client)
        assert model.name == f"{provider.name}:fake-model@{provider.server.base_url}"
        assert "".join((await collect(model))[0]) == "one"
        assert not client.is_closed()
        await model.aclose()  # closes only what the model made
        assert not client.is_closed()
        assert "".join((await collect(model))[0]) == "two"


async def test_client_and_base_url_together_is_a_usage_error(provider: Provider) -> None:
    async with provider.sdk_client(api_key="x", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(UsageError, match="not both"):
            provider.model_class("m", client=client, base_url="http://127.0.0.1:9")


# -- answers that are errors ----------------------------------------------------------------------


async def test_bad_api_key(provider: Provider) -> None:
    provider.server.script(Status(401, f"Incorrect API key provided: {SECRET}."))
    model = provider.model()
    with pytest.raises(ModelHTTPError) as info:
        await collect(model)
    assert info.value.status_code == 401
    assert provider.key_env in str(info.value)
    assert "rejected the API key" in str(info.value)
    assert "***" in str(info.value)  # the echoed key, masked
    for shown in (str(info.value), repr(info.value), str(info.value.__cause__), repr(model)):
        assert SECRET not in shown
    assert SECRET not in model.name
    assert len(provider.server.requests) == 1


async def test_client_error_is_not_retried(provider: Provider) -> None:
    provider.server.script(Status(400, "bad request: unknown field"))
    with pytest.raises(ModelHTTPError) as info:
        await collect(provider.model(max_retries=3))
    assert info.value.status_code == 400
    assert "unknown field" in str(info.value)
    assert len(provider.server.requests) == 1


async def test_rate_limit_is_retried_then_succeeds(provider: Provider) -> None:
    provider.server.script(rate_limited(retry_after="0"), Stream(["fine"], usage=(3, 1)))
    texts, usages = await collect(provider.model(max_retries=1))
    assert "".join(texts) == "fine"
    assert usages == [TokenUsage(3, 1)]
    assert len(provider.server.requests) == 2


async def test_rate_limit_retried_honouring_retry_after(provider: Provider) -> None:
    provider.server.script(rate_limited(retry_after="1"), Stream(["fine"], usage=(3, 1)))
    texts, _ = await collect(provider.model(max_retries=1))
    assert "".join(texts) == "fine"
    first, second = provider.server.requests
    assert second.at - first.at >= 0.9  # the client waited as the server asked


async def test_rate_limit_that_persists(provider: Provider) -> None:
    provider.server.script(rate_limited(), rate_limited())
    with pytest.raises(ModelHTTPError) as info:
        await collect(provider.model(max_retries=1))
    assert info.value.status_code == 429
    assert "rate limited" in str(info.value)
    assert "after 1 retry (2 requests made)" in str(info.value)
    assert len(provider.server.requests) == 2


async def test_server_error(provider: Provider) -> None:
    provider.server.script(server_error(), server_error())
    model = provider.model(max_retries=1)
    with pytest.raises(ModelHTTPError) as info:
        await collect(model)
    assert info.value.status_code == 500
    assert f"provider error at {provider.server.base_url} (HTTP 500)" in str(info.value)
    assert info.value.model == model.name
    assert model.name in str(info.value)
    assert SECRET not in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, provider.sdk.APIStatusError)
    assert len(provider.server.requests) == 2


async def test_connection_refused(provider: Provider) -> None:
    url = f"http://127.0.0.1:{closed_port()}{provider.url_suffix}"
    model = provider.model(base_url=url, max_retries=0)
    with pytest.raises(ModelConnectionError) as info:
        await collect(model)
    assert f"could not reach {url}" in str(info.value)
    assert "check the network, that the server is running" in str(info.value)
    assert SECRET not in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, provider.sdk.APIConnectionError)


async def test_server_that_never_answers(provider: Provider) -> None:
    provider.server.script(Stall(5.0))
    start = time.perf_counter()
    with pytest.raises(ModelConnectionError, match=r"did not answer within 0\.3s") as info:
        await collect(provider.model(max_retries=0, timeout=0.3))
    assert time.perf_counter() - start < 3
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, provider.sdk.APITimeoutError)


async def test_stream_that_stalls(provider: Provider) -> None:
    provider.server.script(Stream(["a", "b"], stall_after=1, stall=5.0))
    events: list[str | TokenUsage] = []
    start = time.perf_counter()
    with pytest.raises(ModelStreamError, match=r"stalled for 0\.3s after 1 character"):
        await collect(provider.model(timeout=0.3), events)
    assert time.perf_counter() - start < 3
    assert events == ["a"]


async def test_stream_cut_midway_is_not_retried(provider: Provider) -> None:
    provider.server.script(Stream(["Hello", ", wor", "ld"], cut_after=2))
    events: list[str | TokenUsage] = []
    model = provider.model()
    with pytest.raises(ModelStreamError, match="cut after 10 characters") as info:
        await collect(model, events)
    assert events == ["Hello", ", wor"]
    assert model.name in str(info.value)
    assert SECRET not in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert issubclass(cause.error_class, provider.cut_cause)
    assert len(provider.server.requests) == 1


async def test_stream_without_its_end_is_incomplete(provider: Provider) -> None:
    provider.server.script(Stream(["1. search(", '"a")\n2. se'], end_after=2))
    with pytest.raises(
        ModelStreamError, match=f"ended without {provider.finish_marker} after 20 characters"
    ):
        await collect(provider.model())


# -- model strings --------------------------------------------------------------------------------


async def test_an_at_without_a_url_is_refused_alike(provider: Provider) -> None:
    from dagcall.models import resolve_model

    with pytest.raises(UsageError, match="'@' but no server address"):
        resolve_model(f"{provider.name}:fake-model@")


# -- the client's lifetime ------------------------------------------------------------------------


async def test_one_client_serves_every_call_on_a_loop(provider: Provider) -> None:
    provider.server.script(Stream(["one"]), Stream(["two"]), Stream(["three"]))
    model = provider.model()
    made: list[Any] = []
    build = model._new_client

    def counting() -> Any:
        made.append(build())
        return made[-1]

    model._new_client = counting  # type: ignore[method-assign]
    await collect(model)
    await asyncio.gather(collect(model), collect(model))
    assert len(made) == 1
    assert not made[0].is_closed()
    await model.aclose()
    assert made[0].is_closed()
    provider.server.script(Stream(["again"]))
    await collect(model)
    assert len(made) == 2  # usable after aclose: a new client


def test_a_model_serves_several_event_loops_and_each_closes_its_client(
    provider: Provider,
) -> None:
    provider.server.script(*(Stream([str(i)]) for i in range(3)))
    model = provider.model()
    made: list[Any] = []
    build = model._new_client

    def counting() -> Any:
        made.append(build())
        return made[-1]

    model._new_client = counting  # type: ignore[method-assign]
    texts: list[str] = []
    for _ in range(2):  # one loop after another
        texts += asyncio.run(collect(model))[0]
    # and one in another thread, while none runs here
    thread = threading.Thread(target=lambda: texts.extend(asyncio.run(collect(model))[0]))
    thread.start()
    thread.join()
    assert texts == ["0", "1", "2"]
    assert len(made) == 3
    assert all(client.is_closed() for client in made)  # closed as each loop shut down
