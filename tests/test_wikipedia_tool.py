"""wikipedia_tool against a MediaWiki API served on 127.0.0.1: search then intro, headers,
errors, timeouts.  Only the connect timeout (which a loopback server cannot produce reliably)
and the default site's address use httpx2's MockTransport."""

from __future__ import annotations

import functools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest

import dagcall
from dagcall import Compiler, ScriptedModel, ToolError, ToolExecutionError, UsageError
from dagcall.tools import wikipedia, wikipedia_tool

SEARCH = {"query": {"search": [{"title": "Mariana Trench", "snippet": "deepest"}]}}
INTRO = (
    "The Mariana Trench is an oceanic trench in the western Pacific Ocean.\n"
    "It is the deepest oceanic trench on Earth."
)
EXTRACT = {
    "query": {
        "pages": {
            "123": {
                "title": "Mariana Trench",
                "extract": INTRO,
                "fullurl": "https://en.wikipedia.org/wiki/Mariana_Trench",
            }
        }
    }
}


@dataclass(frozen=True)
class Reply:
    """One answer of the fake API: ``status``, a JSON or raw ``body``, after ``delay`` s."""

    status: int = 200
    body: object = None
    delay: float = 0.0


Answer = Callable[[dict[str, str]], Reply]


def api(search: object = SEARCH, extract: object = EXTRACT, delay: float = 0.0) -> Answer:
    def answer(params: dict[str, str]) -> Reply:
        return Reply(body=search if params.get("list") == "search" else extract, delay=delay)

    return answer


@dataclass
class Request:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class WikiServer:
    """A MediaWiki ``/w/api.php`` on 127.0.0.1 answering with ``answer`` (settable)."""

    answer: Answer = field(default_factory=api)
    requests: list[Request] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query))
        self.requests.append(Request(parts.path, params, dict(handler.headers.items())))
        found = parts.path == "/w/api.php"
        reply = self.answer(params) if found else Reply(404, "no such page")
        if reply.delay and self.closing.wait(reply.delay):
            return
        body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        data = body.encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture
def server() -> Iterator[WikiServer]:
    wiki = WikiServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            wiki.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    wiki.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield wiki
    finally:
        wiki.closing.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def mock_transport(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx2.Request], httpx2.Response]
) -> None:
    """Route the tool's client through httpx2's MockTransport calling ``handler``."""
    client = functools.partial(httpx2.AsyncClient, transport=httpx2.MockTransport(handler))
    monkeypatch.setattr(httpx2, "AsyncClient", client)  # the module the tool uses


async def test_search_then_intro(server: WikiServer) -> None:
    text = await wikipedia_tool(base_url=server.url).invoke({"query": "deepest trench"})
    assert text == (
        f"Mariana Trench: {INTRO}\n(source: https://en.wikipedia.org/wiki/Mariana_Trench)"
    )
    assert [r.path for r in server.requests] == ["/w/api.php", "/w/api.php"]
    search, extract = (r.params for r in server.requests)
    assert search == {
        "action": "query",
        "list": "search",
        "srsearch": "deepest trench",
        "srlimit": "1",
        "format": "json",
    }
    assert extract["titles"] == "Mariana Trench"
    assert extract["prop"] == "extracts|info"
    for flag in ("exintro", "explaintext", "redirects"):
        assert extract[flag] == "1"


async def test_the_user_agent_names_dagcall_and_its_version(server: WikiServer) -> None:
    await wikipedia_tool(base_url=server.url).invoke({"query": "Mariana Trench"})
    expected = f"dagcall/{dagcall.__version__} (+https://pypi.org/project/dagcall/)"
    assert [r.headers["User-Agent"] for r in server.requests] == [expected, expected]


async def test_the_intro_is_bounded_to_whole_paragraphs(server: WikiServer) -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 100 for i in range(10)]
    page = {"title": "Long", "extract": "\n".join(paragraphs)}  # no fullurl: built from title
    server.answer = api(extract={"query": {"pages": [page]}})
    text = await wikipedia_tool(base_url=server.url).invoke({"query": "long"})
    intro, source = text.rsplit("\n", 1)
    assert len(intro) <= 1600
    assert intro.startswith("Long: Paragraph 0 ")
    assert "Paragraph 1 " in intro
    assert "Paragraph 9" not in intro
    assert source == f"(source: {server.url}/wiki/Long)"


async def test_one_huge_paragraph_is_cut_between_words(server: WikiServer) -> None:
    page = {"title": "Huge", "extract": "word " * 2000}
    server.answer = api(extract={"query": {"pages": {"1": page}}})
    text = await wikipedia_tool(base_url=server.url).invoke({"query": "huge"})
    intro = text.split("\n")[0]
    assert intro.endswith("word …")
    assert len(intro) <= 1510


async def test_the_language_picks_the_site(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(f"{request.url.scheme}://{request.url.host}{request.url.path}")
        return httpx2.Response(200, json=SEARCH if "list" in request.url.params else EXTRACT)

    mock_transport(monkeypatch, handler)
    await wikipedia_tool(language="de").invoke({"query": "Marianengraben"})
    await wikipedia.invoke({"query": "Mariana Trench"})
    assert seen == 2 * ["https://de.wikipedia.org/w/api.php"] + 2 * [
        "https://en.wikipedia.org/w/api.php"
    ]


async def test_a_base_url_with_a_trailing_slash(server: WikiServer) -> None:
    await wikipedia_tool(base_url=server.url + "/").invoke({"query": "x"})
    assert [r.path for r in server.requests] == ["/w/api.php", "/w/api.php"]


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="not a Wikipedia language code"):
        wikipedia_tool(language="en.evil.com/")
    with pytest.raises(UsageError, match="base_url must start with https://"):
        wikipedia_tool(base_url="ftp://example.org")
    with pytest.raises(UsageError, match="timeouts must be positive"):
        wikipedia_tool(timeout=0)


async def test_no_article(server: WikiServer) -> None:
    server.answer = api(search={"query": {"search": []}})
    with pytest.raises(ToolExecutionError, match="no Wikipedia article matches 'qwzx'"):
        await wikipedia_tool(base_url=server.url).invoke({"query": "qwzx"})
    assert len(server.requests) == 1


async def test_an_article_without_intro(server: WikiServer) -> None:
    page = {"title": "Mariana Trench", "missing": True}
    server.answer = api(extract={"query": {"pages": [page]}})
    with pytest.raises(ToolExecutionError, match="'Mariana Trench' has no introduction"):
        await wikipedia_tool(base_url=server.url).invoke({"query": "trench"})


async def test_empty_query_needs_no_network() -> None:
    with pytest.raises(ToolError, match="non-empty query"):
        await wikipedia.invoke({"query": "  "})


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (Reply(429, {}), r"rate-limited the request \(HTTP 429 Too Many Requests\)"),
        (Reply(503, {}), r"Wikipedia answered HTTP 503 Service Unavailable"),
        (Reply(404, {}), r"Wikipedia answered HTTP 404 Not Found"),
        (Reply(200, "<html>"), "not JSON"),
        (
            Reply(200, {"error": {"code": "x", "info": "bad search"}}),
            "Wikipedia refused the request: bad search",
        ),
    ],
)
async def test_failing_replies_are_clear_tool_errors(
    server: WikiServer, reply: Reply, match: str
) -> None:
    server.answer = lambda _: reply
    with pytest.raises(ToolExecutionError, match=match) as info:
        await wikipedia_tool(base_url=server.url).invoke({"query": "anything"})
    assert info.value.tool == "wikipedia"
    assert len(server.requests) == 1


async def test_a_refused_connection_says_the_tool_needs_network(closed_port: int) -> None:
    tool = wikipedia_tool(base_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(ToolExecutionError) as info:
        await tool.invoke({"query": "anything"})
    assert info.value.tool == "wikipedia"
    assert str(info.value.message).startswith(
        f"Wikipedia (http://127.0.0.1:{closed_port}) could not be reached (ConnectError: "
    )
    assert str(info.value.message).endswith("; the wikipedia tool needs network access")
    assert isinstance(info.value.__cause__, httpx2.ConnectError)


async def test_a_connect_timeout_names_the_connect_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectTimeout("connect timed out", request=request)

    mock_transport(monkeypatch, handler)
    with pytest.raises(
        ToolExecutionError,
        match=r"could not be reached: no connection within 2 s; .*needs network access",
    ) as info:
        await wikipedia_tool(connect_timeout=2).invoke({"query": "anything"})
    assert isinstance(info.value.__cause__, httpx2.ConnectTimeout)


async def test_a_slow_reply_is_a_read_timeout(server: WikiServer) -> None:
    server.answer = api(delay=5)
    with pytest.raises(ToolExecutionError, match=r"did not answer within 0\.3 s") as info:
        await wikipedia_tool(base_url=server.url, timeout=0.3).invoke({"query": "anything"})
    assert info.value.tool == "wikipedia"


async def test_the_whole_lookup_is_bounded_by_the_timeout(server: WikiServer) -> None:
    # each reply comes well within the read timeout; only the two together are too slow
    server.answer = api(delay=0.4)
    with pytest.raises(ToolExecutionError, match=r"did not answer within 0\.6 s") as info:
        await wikipedia_tool(base_url=server.url, timeout=0.6).invoke({"query": "anything"})
    assert info.value.__cause__ is None  # not httpx2's per-read timeout
    assert len(server.requests) == 2


def test_the_tool_as_the_planner_sees_it() -> None:
    assert wikipedia.name == "wikipedia"
    assert wikipedia.render().startswith("wikipedia(query: str) -> str\nLook the query up")
    assert wikipedia.timeout == 20.0
    assert wikipedia_tool(name="wiki_de", language="de").name == "wiki_de"


def test_an_unreachable_wikipedia_reaches_the_joiner(closed_port: int) -> None:
    joiner_prompts: list[str] = []

    def joiner(messages: list[dagcall.Message]) -> str:
        joiner_prompts.append(messages[-1].content)
        return "Action: Finish(unknown: Wikipedia could not be reached)"

    offline = wikipedia_tool(base_url=f"http://127.0.0.1:{closed_port}")
    planner = ScriptedModel(['1. wikipedia("Mariana Trench")\n2. join()'])
    result = Compiler(
        model=planner, joiner_model=ScriptedModel(joiner), tools=[offline], max_replans=0
    ).run("How deep is the Mariana Trench?")
    assert result.task(1).status.value == "failed"
    assert "needs network access" in joiner_prompts[0]
