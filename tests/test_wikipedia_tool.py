"""wikipedia_tool on a mocked Wikipedia API (respx): search then intro, headers, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
import respx

import dagcall
from dagcall import Compiler, ScriptedModel, ToolError, ToolExecutionError, UsageError
from dagcall.tools import wikipedia, wikipedia_tool

API = "https://en.wikipedia.org/w/api.php"
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


def _api(
    search: object = SEARCH, extract: object = EXTRACT
) -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("list") == "search":
            return httpx.Response(200, json=search)
        return httpx.Response(200, json=extract)

    return reply


@respx.mock
async def test_search_then_intro() -> None:
    route = respx.get(API).mock(side_effect=_api())
    text = await wikipedia.invoke({"query": "deepest trench"})
    assert text == (
        f"Mariana Trench: {INTRO}\n(source: https://en.wikipedia.org/wiki/Mariana_Trench)"
    )
    assert route.call_count == 2
    search, extract = (call.request.url.params for call in route.calls)
    assert dict(search) == {
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


@respx.mock
async def test_the_user_agent_names_dagcall_and_its_version() -> None:
    route = respx.get(API).mock(side_effect=_api())
    await wikipedia.invoke({"query": "Mariana Trench"})
    expected = f"dagcall/{dagcall.__version__} (+https://pypi.org/project/dagcall/)"
    assert [c.request.headers["User-Agent"] for c in route.calls] == [expected, expected]


@respx.mock
async def test_the_intro_is_bounded_to_whole_paragraphs() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 100 for i in range(10)]
    page = {"title": "Long", "extract": "\n".join(paragraphs)}  # no fullurl: built from title
    respx.get(API).mock(side_effect=_api(extract={"query": {"pages": [page]}}))
    text = await wikipedia.invoke({"query": "long"})
    intro, source = text.rsplit("\n", 1)
    assert len(intro) <= 1600
    assert intro.startswith("Long: Paragraph 0 ")
    assert "Paragraph 1 " in intro
    assert "Paragraph 9" not in intro
    assert source == "(source: https://en.wikipedia.org/wiki/Long)"


@respx.mock
async def test_one_huge_paragraph_is_cut_between_words() -> None:
    page = {"title": "Huge", "extract": "word " * 2000}
    respx.get(API).mock(side_effect=_api(extract={"query": {"pages": {"1": page}}}))
    text = await wikipedia.invoke({"query": "huge"})
    intro = text.split("\n")[0]
    assert intro.endswith("word …")
    assert len(intro) <= 1510


@respx.mock
async def test_language_and_base_url() -> None:
    german = respx.get("https://de.wikipedia.org/w/api.php").mock(side_effect=_api())
    await wikipedia_tool(language="de").invoke({"query": "Marianengraben"})
    assert german.call_count == 2
    mirror = respx.get("http://127.0.0.1:8080/w/api.php").mock(side_effect=_api())
    await wikipedia_tool(base_url="http://127.0.0.1:8080/").invoke({"query": "x"})
    assert mirror.call_count == 2


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="not a Wikipedia language code"):
        wikipedia_tool(language="en.evil.com/")
    with pytest.raises(UsageError, match="base_url must start with https://"):
        wikipedia_tool(base_url="ftp://example.org")
    with pytest.raises(UsageError, match="timeouts must be positive"):
        wikipedia_tool(timeout=0)


@respx.mock
async def test_no_article() -> None:
    route = respx.get(API).mock(side_effect=_api(search={"query": {"search": []}}))
    with pytest.raises(ToolExecutionError, match="no Wikipedia article matches 'qwzx'"):
        await wikipedia.invoke({"query": "qwzx"})
    assert route.call_count == 1


@respx.mock
async def test_an_article_without_intro() -> None:
    page = {"title": "Mariana Trench", "missing": True}
    respx.get(API).mock(side_effect=_api(extract={"query": {"pages": [page]}}))
    with pytest.raises(ToolExecutionError, match="'Mariana Trench' has no introduction"):
        await wikipedia.invoke({"query": "trench"})


async def test_empty_query_needs_no_network() -> None:
    with pytest.raises(ToolError, match="non-empty query"):
        await wikipedia.invoke({"query": "  "})


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(429), r"rate-limited the request \(HTTP 429 Too Many Requests\)"),
        (httpx.Response(503), r"Wikipedia answered HTTP 503 Service Unavailable"),
        (httpx.Response(404), r"Wikipedia answered HTTP 404 Not Found"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (
            httpx.Response(200, json={"error": {"code": "x", "info": "bad search"}}),
            "Wikipedia refused the request: bad search",
        ),
        (
            httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
            r"could not be reached \(ConnectError: .*name resolution\); "
            "the wikipedia tool needs network access",
        ),
        (
            httpx.ConnectTimeout("connect timed out"),
            r"could not be reached: no connection within 5 s; .*needs network access",
        ),
        (httpx.ReadTimeout("slow"), r"did not answer within 15 s"),
    ],
)
@respx.mock
async def test_failures_are_clear_tool_errors(
    response: httpx.Response | Exception, match: str
) -> None:
    respx.get(API).mock(side_effect=[response])
    with pytest.raises(ToolExecutionError, match=match) as info:
        await wikipedia.invoke({"query": "anything"})
    assert info.value.tool == "wikipedia"
    if isinstance(response, Exception):
        assert info.value.__cause__ is response


@respx.mock
async def test_the_whole_lookup_is_bounded_by_the_timeout() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json=SEARCH)

    respx.get(API).mock(side_effect=slow)
    with pytest.raises(ToolExecutionError, match=r"did not answer within 0\.2 s"):
        await wikipedia_tool(timeout=0.2).invoke({"query": "anything"})


def test_the_tool_as_the_planner_sees_it() -> None:
    assert wikipedia.name == "wikipedia"
    assert wikipedia.render().startswith("wikipedia(query: str) -> str\nLook the query up")
    assert wikipedia.timeout == 20.0
    assert wikipedia_tool(name="wiki_de", language="de").name == "wiki_de"


@respx.mock
def test_an_unreachable_wikipedia_reaches_the_joiner() -> None:
    respx.get(API).mock(side_effect=httpx.ConnectError("offline"))
    joiner_prompts: list[str] = []

    def joiner(messages: list[dagcall.Message]) -> str:
        joiner_prompts.append(messages[-1].content)
        return "Action: Finish(unknown: Wikipedia could not be reached)"

    planner = ScriptedModel(['1. wikipedia("Mariana Trench")\n2. join()'])
    result = Compiler(
        model=planner, joiner_model=ScriptedModel(joiner), tools=[wikipedia], max_replans=0
    ).run("How deep is the Mariana Trench?")
    assert result.task(1).status.value == "failed"
    assert "needs network access" in joiner_prompts[0]
