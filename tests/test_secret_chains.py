"""Secrets never leave through error chains.

Every error the providers raise, and every error a run records or raises (a planner's, a
joiner's, a tool's own model call's), is scanned for the API key: ``str``, ``repr``,
``vars``, ``args`` of each exception reachable through ``__cause__``, ``__context__`` and
exception groups, ``traceback.format_exception`` and a traceback with frame locals.  No link
of a chain may be a provider SDK or transport exception (they hold the request with its
``Authorization`` header and the raw response), chains must be finite and acyclic, and
messages must say how many requests were really made.  The fake servers echo the key in
every form a server might: raw, URL-encoded, JSON-escaped, cut short, inside a longer token,
in response headers and in a half-sent stream event.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import pickle
import random
import socket
import string
import time
import traceback
from typing import Any
from urllib.parse import quote, quote_plus

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagcall import (
    Compiler,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelStreamError,
    RunResult,
    ScriptedModel,
    TaskStatus,
    ToolExecutionError,
    call_model,
    tool,
)
from dagcall.models import (
    AnthropicModel,
    Message,
    Model,
    OpenAIModel,
    complete,
    complete_with_tools,
)
from dagcall.models._http import MAX_RETRY_AFTER, ProviderError, Secrets
from fake_http import FakeHTTPServer, Stall, Status, Stream

_RNG = random.Random(20260101)
#: A realistic key: letters and digits only, so its encoded forms equal it.
KEY = "sk-test-" + "".join(_RNG.choices(string.ascii_letters + string.digits, k=40))
#: A key whose URL-encoded and JSON-escaped forms differ from it.
ODD_KEY = "sk-test-" + "".join(_RNG.choices(string.ascii_letters + string.digits + "/+=", k=40))
_FRAGMENT = 16  # any run this long of a key is masked (see Secrets)

PROVIDERS = ["openai", "anthropic"]
METHODS = ["stream", "stream_tools"]
MESSAGES = [Message("system", "Be terse."), Message("user", "Say hello.")]
SPECS = [{"name": "look", "description": "Look up.", "parameters": {"type": "object"}}]
FINISH = "Thought: done.\nAction: Finish(the answer)"
#: Packages whose exceptions hold requests, responses or raw bodies: never in a chain.
SDK_PACKAGES = {"openai", "anthropic", "httpx2", "httpcore2", "httpx", "httpcore", "h11", "json"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything logged at DEBUG, dagcall's and the SDKs' loggers included."""
    caplog.set_level(logging.DEBUG)
    return caplog


# -- helpers ----------------------------------------------------------------------------------


def echo(key: str) -> str:
    """The key as a server may echo it: raw, encoded, escaped, cut short, inside a token."""
    return (
        f"invalid key {key}; url={quote(key, safe='')} plus={quote_plus(key)} "
        f"json={json.dumps(key)} slashes={key.replace('/', chr(92) + '/')} "
        f"prefix={key[:24]} suffix={key[-20:]} token=Bearer_{key}_v2"
    )


def forms(key: str) -> set[str]:
    return {key, quote(key, safe=""), quote_plus(key), json.dumps(key)[1:-1]}


def assert_no_key(text: str, where: str, keys: tuple[str, ...] = (KEY, ODD_KEY)) -> None:
    for key in keys:
        for form in forms(key):
            assert form not in text, f"the key leaked into {where}"
            for i in range(len(form) - _FRAGMENT + 1):
                piece = form[i : i + _FRAGMENT]
                assert piece not in text, f"{_FRAGMENT} characters of the key leaked into {where}"


def links(exc: BaseException) -> list[BaseException]:
    """Every exception reachable from ``exc`` (causes, contexts, groups); fails on a cycle."""
    found: list[BaseException] = []
    seen: set[int] = set()

    def visit(node: BaseException, path: tuple[int, ...]) -> None:
        assert id(node) not in path, f"cycle in the chain of {exc!r} at {node!r}"
        assert node.__cause__ is not node, f"{node!r} is its own cause"
        assert node.__context__ is not node, f"{node!r} is its own context"
        if id(node) in seen:
            return
        seen.add(id(node))
        found.append(node)
        nexts = [node.__cause__, node.__context__]
        if isinstance(node, BaseExceptionGroup):
            nexts.extend(node.exceptions)
        for nxt in nexts:
            if nxt is not None:
                visit(nxt, (*path, id(node)))

    visit(exc, ())
    return found


def assert_clean(exc: BaseException, where: str = "the error") -> list[BaseException]:
    """No key anywhere in ``exc`` or its chain, no SDK exception in it, and no cycle."""
    chain = links(exc)
    assert len(chain) < 20, f"an implausibly long chain: {chain!r}"
    assert_no_key("".join(traceback.format_exception(exc)), f"the traceback of {where}")
    with_locals = traceback.TracebackException.from_exception(exc, capture_locals=True)
    assert_no_key("".join(with_locals.format()), f"the traceback (with locals) of {where}")
    for link in chain:
        described = f"{where} ({type(link).__name__})"
        assert_no_key(str(link), f"str() of {described}")
        assert_no_key(repr(link), f"repr() of {described}")
        assert_no_key(repr(link.args), f"the args of {described}")
        assert_no_key(repr(vars(link)), f"vars() of {described}")
    for link in chain:
        package = type(link).__module__.partition(".")[0]
        assert package not in SDK_PACKAGES, f"{where} keeps an SDK exception: {link!r}"
    return chain


def assert_logs_clean(logs: pytest.LogCaptureFixture, *, server_echoed_headers: bool) -> None:
    """No key in any log record.  httpcore2 (the SDKs' transport) logs the headers of each
    answer at DEBUG before anyone can mask them: a server that echoes the key in a header
    gets it there, and only there."""
    for record in logs.records:
        if server_echoed_headers and record.name.startswith("httpcore2"):
            continue
        assert_no_key(record.getMessage(), f"the log of {record.name}")
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_key("".join(traceback.format_exception(record.exc_info[1])), "a logged error")


def server_for(provider: str, request: pytest.FixtureRequest) -> FakeHTTPServer:
    server: FakeHTTPServer = request.getfixturevalue(f"{provider}_server")
    return server


def make_model(provider: str, base_url: str, key: str = KEY, **kwargs: Any) -> Model:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 5.0)
    if provider == "openai":
        return OpenAIModel("fake-model", base_url=base_url, api_key=key, **kwargs)
    return AnthropicModel("claude-fake", base_url=base_url, api_key=key, **kwargs)


async def call(model: Model, method: str) -> None:
    if method == "stream":
        await complete(model, MESSAGES)
    else:
        await complete_with_tools(model, MESSAGES, SPECS)


async def failure(model: Model, method: str) -> ModelError:
    try:
        await asyncio.wait_for(call(model, method), 60)
    except ModelError as exc:
        return exc
    raise AssertionError("the call did not fail")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def provider_cause(error: ModelError) -> ProviderError:
    cause = error.__cause__
    assert isinstance(cause, ProviderError), f"{error!r} is not caused by a ProviderError"
    assert error.__context__ is None or error.__context__ is cause
    return cause


# -- HTTP errors ------------------------------------------------------------------------------


def _http_case(case: str) -> tuple[list[Status], int, int, str]:
    """(script, max_retries, requests expected, what the message must say)."""
    if case == "401":
        headers = {"x-echo-key": ODD_KEY, "www-authenticate": f'Bearer error="{ODD_KEY}"'}
        return [Status(401, echo(ODD_KEY), headers)], 3, 1, "rejected the API key (HTTP 401)"
    if case == "429-short":
        short = Status(429, echo(ODD_KEY), {"Retry-After": "0.01"})
        return [short] * 3, 2, 3, "(HTTP 429) after 2 retries (3 requests made)"
    if case == "429-long":
        long = Status(429, echo(ODD_KEY), {"Retry-After": "3600"})
        return (
            [long],
            3,
            1,
            "(HTTP 429), 1 request made, not retried: the server asked to retry after 3600 s, "
            f"which is longer than dagcall waits ({MAX_RETRY_AFTER:.0f} s)",
        )
    busy = Status(500, echo(ODD_KEY), {"Retry-After": "0.01", "x-echo": ODD_KEY})
    return [busy] * 2, 1, 2, "(HTTP 500) after 1 retry (2 requests made)"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", ["401", "429-short", "429-long", "500"])
async def test_http_errors_hold_no_key_and_count_their_requests(
    provider: str,
    method: str,
    case: str,
    request: pytest.FixtureRequest,
    logs: pytest.LogCaptureFixture,
) -> None:
    server = server_for(provider, request)
    script, max_retries, expected, says = _http_case(case)
    server.script(*script)
    model = make_model(provider, server.base_url, ODD_KEY, max_retries=max_retries)
    started = time.monotonic()
    error = await failure(model, method)
    assert time.monotonic() - started < 30  # a long Retry-After is not slept through
    assert isinstance(error, ModelHTTPError)
    assert len(server.requests) == expected, "the message must match what was sent"
    assert says in error.message
    assert "***" in error.message  # the echoed key was masked, the rest kept
    cause = provider_cause(error)
    assert cause.status_code == error.status_code
    assert cause.requests == expected
    assert cause.error_type.startswith(f"{provider}.")
    sdk = openai if provider == "openai" else anthropic
    assert issubclass(cause.error_class, sdk.APIStatusError)
    assert_clean(error)
    assert_logs_clean(logs, server_echoed_headers=True)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("header", ["seconds", "milliseconds", "date"])
async def test_any_long_retry_after_is_not_waited_for(
    provider: str, header: str, request: pytest.FixtureRequest
) -> None:
    # The Anthropic SDK would sleep for as long as asked; dagcall's clients give up at once.
    if header == "seconds":
        headers = {"Retry-After": "7200"}
    elif header == "milliseconds":
        headers = {"retry-after-ms": "7200000"}
    else:
        headers = {"Retry-After": email.utils.formatdate(time.time() + 7200, usegmt=True)}
    server = server_for(provider, request)
    server.script(Status(429, "slow down", headers), Status(429, "slow down", headers))
    model = make_model(provider, server.base_url, max_retries=1)
    error = await failure(model, "stream")
    assert len(server.requests) == 1
    assert "1 request made, not retried: the server asked to retry after" in error.message
    assert "raise max_retries" not in error.message  # that would not help
    assert_clean(error)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_key_only_sent_is_in_no_log_at_all(
    provider: str, request: pytest.FixtureRequest, logs: pytest.LogCaptureFixture
) -> None:
    # A server that does not echo the key: no logger, the transport's included, has it.
    server = server_for(provider, request)
    server.script(Status(401, "no such key"))
    error = await failure(make_model(provider, server.base_url), "stream")
    assert isinstance(error, ModelHTTPError)
    assert logs.records, "nothing was logged at DEBUG: the check would prove nothing"
    assert_logs_clean(logs, server_echoed_headers=False)
    assert_clean(error)


# -- no answer --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_connection_refused_counts_its_attempts(provider: str) -> None:
    # The key is also the password of the URL: neither may show.
    url = f"http://user:{KEY}@127.0.0.1:{closed_port()}"
    if provider == "openai":
        url += "/v1"
    error = await failure(make_model(provider, url, KEY, max_retries=1), "stream")
    assert isinstance(error, ModelConnectionError)
    assert "could not reach" in error.message
    assert "after 1 retry (2 requests made)" in error.message
    assert provider_cause(error).requests == 2
    assert_clean(error)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_timeout_says_it_was_not_retried(
    provider: str, request: pytest.FixtureRequest
) -> None:
    server = server_for(provider, request)
    server.script(Stall(5.0))
    error = await failure(make_model(provider, server.base_url, timeout=0.3), "stream")
    assert isinstance(error, ModelConnectionError)
    assert "did not answer within 0.3s, 1 request made (max_retries=0)" in error.message
    assert len(server.requests) == 1
    assert_clean(error)


# -- faults mid-stream ------------------------------------------------------------------------


def _stream_fault(fault: str) -> Stream:
    half_json = f'{{"type": "content_block_delta", "index": 0, "delta": {{"text": "{KEY}'
    if fault == "cut":
        return Stream(["Hel", "lo"], cut_after=2, cut_with=f"data: {half_json}")
    if fault == "error-event":
        return Stream(["Hel", "lo"], error_after=2, error_message=echo(KEY))
    if fault == "malformed":
        return Stream(["Hel", "lo"], malformed_after=2, malformed_data=half_json)
    return Stream(["Hel"], cut_after=1, cut_with=f"event: error\ndata: {echo(KEY)}\n\n")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["cut", "error-event", "malformed", "cut-event"])
async def test_stream_faults_hold_no_key(
    provider: str,
    method: str,
    fault: str,
    request: pytest.FixtureRequest,
    logs: pytest.LogCaptureFixture,
) -> None:
    server = server_for(provider, request)
    server.script(_stream_fault(fault))
    error = await failure(make_model(provider, server.base_url, max_retries=2), method)
    assert isinstance(error, ModelStreamError)
    assert "character" in error.message  # how much text had arrived
    assert len(server.requests) == 1  # mid-stream failures are not retried
    provider_cause(error)
    assert_clean(error)
    assert_logs_clean(logs, server_echoed_headers=False)


# -- inside a run -----------------------------------------------------------------------------


def _all_errors(result: RunResult) -> list[BaseException]:
    errors: list[BaseException] = [t.error for t in result.tasks if t.error is not None]
    for rnd in result.rounds:
        errors.extend(rnd.errors)
    return errors


def _check_run(result: RunResult, logs: pytest.LogCaptureFixture, *, echoed: bool) -> None:
    for error in _all_errors(result):
        assert_clean(error, f"the recorded {type(error).__name__}")
    assert_no_key(result.to_json(), "the run's JSON")
    assert_logs_clean(logs, server_echoed_headers=echoed)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["401", "cut", "error-event"])
async def test_a_tools_own_model_call_that_fails(
    provider: str,
    fault: str,
    request: pytest.FixtureRequest,
    logs: pytest.LogCaptureFixture,
) -> None:
    server = server_for(provider, request)
    if fault == "401":
        server.script(Status(401, echo(ODD_KEY), {"x-echo-key": ODD_KEY}))
    else:
        server.script(_stream_fault(fault))
    model = make_model(provider, server.base_url, ODD_KEY if fault == "401" else KEY)

    @tool
    async def summarise(text: str) -> str:
        """Summarise text with a model."""
        reply = await call_model(model, [Message("user", text)])
        return reply.text

    planner = ScriptedModel(['1. summarise("a long text")', FINISH])
    result = await asyncio.wait_for(Compiler(model=planner, tools=[summarise]).arun("q"), 60)
    task = result.task(1)
    assert task.status is TaskStatus.FAILED
    assert isinstance(task.error, ToolExecutionError)
    chain = assert_clean(task.error, "the tool's error")
    model_error = task.error.__cause__
    assert isinstance(model_error, ModelError)
    assert chain[:3] == [task.error, model_error, provider_cause(model_error)]
    assert [call.role for call in result.usage].count("tool") == 1
    _check_run(result, logs, echoed=fault == "401")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_planner_cut_mid_plan_records_a_clean_error(
    provider: str, request: pytest.FixtureRequest, logs: pytest.LogCaptureFixture
) -> None:
    server = server_for(provider, request)
    server.script(Stream(['1. ok("a")\n'], error_after=1, error_message=echo(KEY)))

    @tool
    def ok(x: str) -> str:
        """Works."""
        return f"ok {x}"

    planner = make_model(provider, server.base_url)
    compiler = Compiler(planner_model=planner, joiner_model=ScriptedModel([FINISH]), tools=[ok])
    result = await asyncio.wait_for(compiler.arun("q"), 60)
    assert result.answer == "the answer"
    (error,) = result.rounds[0].errors
    assert isinstance(error, ModelStreamError)
    provider_cause(error)
    _check_run(result, logs, echoed=False)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("role", ["planner", "joiner"])
async def test_a_failing_planner_or_joiner_is_raised_clean(
    provider: str, role: str, request: pytest.FixtureRequest, logs: pytest.LogCaptureFixture
) -> None:
    server = server_for(provider, request)
    server.script(Status(401, echo(ODD_KEY), {"x-echo-key": ODD_KEY}))

    @tool
    def ok(x: str) -> str:
        """Works."""
        return f"ok {x}"

    model = make_model(provider, server.base_url, ODD_KEY)
    scripted = ScriptedModel(['1. ok("a")'])
    if role == "planner":
        compiler = Compiler(planner_model=model, joiner_model=scripted, tools=[ok])
    else:
        compiler = Compiler(planner_model=scripted, joiner_model=model, tools=[ok])
    with pytest.raises(ModelHTTPError) as info:
        await asyncio.wait_for(compiler.arun("q"), 60)
    error = info.value
    assert error.__cause__ is not error  # it once was its own cause
    provider_cause(error)
    assert_clean(error, f"the {role}'s error")
    assert error.result is not None
    _check_run(error.result, logs, echoed=True)


# -- chains without a provider ------------------------------------------------------------------


async def test_a_model_error_is_raised_as_itself_not_as_its_own_cause() -> None:
    own = ModelError("context length exceeded", model="m")
    scripts: list[list[str | BaseException]] = [[own], ['1. ok("a")', own]]
    for replies in scripts:

        @tool
        def ok(x: str) -> str:
            """Works."""
            return x

        with pytest.raises(ModelError) as info:
            await Compiler(model=ScriptedModel(replies), tools=[ok]).arun("q")
        assert info.value is own
        assert own.__cause__ is None
        links(own)


async def test_a_foreign_error_is_wrapped_once() -> None:
    boom = RuntimeError("provider exploded")

    @tool
    def ok(x: str) -> str:
        """Works."""
        return x

    with pytest.raises(ModelError) as info:
        await Compiler(model=ScriptedModel(['1. ok("a")', boom]), tools=[ok]).arun("q")
    assert info.value.__cause__ is boom  # a new ModelError, caused by it
    assert links(info.value)[:2] == [info.value, boom]


# -- the pieces ---------------------------------------------------------------------------------


async def test_the_stand_in_cause_is_plain_data(openai_server: Any) -> None:
    openai_server.script(Status(401, echo(KEY)))
    error = await failure(make_model("openai", openai_server.base_url), "stream")
    cause = provider_cause(error)
    assert cause.error_type == "openai.AuthenticationError"
    assert cause.error_class is openai.AuthenticationError
    assert (cause.status_code, cause.requests) == (401, 1)
    for name, value in vars(cause).items():
        assert isinstance(value, str | int | type | None), f"{name} holds {value!r}"
    copy = pickle.loads(pickle.dumps(cause))  # noqa: S301 - our own bytes
    assert (str(copy), copy.error_class, copy.requests) == (str(cause), cause.error_class, 1)
    assert "HTTP 401" in str(cause)
    assert "***" in cause.message


async def test_a_shared_client_keeps_its_own_retry_policy(openai_server: Any) -> None:
    openai_server.script(Status(429, echo(KEY), {"Retry-After": "3600"}))
    async with openai.AsyncOpenAI(
        api_key=KEY, base_url=openai_server.base_url, max_retries=2
    ) as client:
        error = await failure(OpenAIModel("fake-model", client=client), "stream")
    assert len(openai_server.requests) == 1  # the SDK itself refuses a one-hour wait
    assert "asked to retry after 3600 s, which is longer than the SDK waits" in error.message
    assert_clean(error)


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(string.ascii_letters + string.digits + "-_/+=.~", min_size=20, max_size=80),
    before=st.text(" ,;:{}[]()'\"<>!?#", max_size=30),
    after=st.text(" ,;:{}[]()'\"<>!?#", max_size=30),
    form=st.sampled_from(["raw", "url", "plus", "json", "prefix", "suffix", "middle", "twice"]),
)
def test_scrub_masks_every_form_of_a_key(key: str, before: str, after: str, form: str) -> None:
    shown = {
        "raw": key,
        "url": quote(key, safe=""),
        "plus": quote_plus(key),
        "json": json.dumps(key),
        "prefix": key[:_FRAGMENT],
        "suffix": key[-_FRAGMENT:],
        "middle": key[2 : 2 + _FRAGMENT + 1],
        "twice": key + key[:-1],
    }[form]
    text = before + shown + after
    masked = Secrets([key]).scrub(text)
    assert_no_key(masked, "the scrubbed text", keys=(key,))
    assert masked.startswith(before)  # the rest is kept
    assert masked.endswith(after)
    assert "***" in masked


@settings(max_examples=300, deadline=None)
@given(
    at=st.integers(0, 400),
    limit=st.integers(20, 400),
    tail=st.integers(0, 400),
    form=st.sampled_from(["raw", "url", "json"]),
)
def test_a_cut_short_scrub_never_shows_a_piece_of_the_key(
    at: int, limit: int, tail: int, form: str
) -> None:
    # Wherever the cut falls, across the key or not, no 16 characters of it remain.
    shown = {"raw": ODD_KEY, "url": quote(ODD_KEY, safe=""), "json": json.dumps(ODD_KEY)}[form]
    text = "." * at + shown + "," * tail
    masked = Secrets([ODD_KEY]).scrub(text, limit)
    assert len(masked) <= max(limit, 3)
    assert_no_key(masked, "the cut-short text", keys=(ODD_KEY,))
    if len(text) <= limit:
        assert masked == Secrets([ODD_KEY]).scrub(text)


@given(text=st.text(max_size=200))
def test_scrub_leaves_text_without_the_key_alone(text: str) -> None:
    assert Secrets(["x" * 40]).scrub(text.replace("x", "")) == text.replace("x", "")
    assert Secrets([]).scrub(text) == text
    assert Secrets(["short"]).scrub(text) == text  # placeholders are not secrets


def test_secrets_repr_shows_none_of_them() -> None:
    secrets = Secrets([KEY, ODD_KEY])
    assert_no_key(repr(secrets), "repr(Secrets)")
    assert secrets
    assert not Secrets(["tiny"])
