"""The built-in tools: math (safe word problems), search_docs (BM25), wikipedia (respx)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
import respx

from dagcall import Compiler, ScriptedModel, ToolError, UsageError
from dagcall.tools import DocsIndex, ExpressionError, docs_tool, math_tool, wikipedia_tool

# -- math ---------------------------------------------------------------------------------


async def test_plain_arithmetic_needs_no_model() -> None:
    model = ScriptedModel([])  # any call would raise ScriptExhaustedError
    math = math_tool(model)
    assert await math.invoke({"problem": "(330 + 93) * 2"}) == 846.0
    assert model.calls == []


async def test_word_problem_goes_through_the_model_and_the_evaluator() -> None:
    model = ScriptedModel(["Expression: 10994 * (1 - 0.2)"])
    math = math_tool(model)
    value = await math.invoke(
        {"problem": "depth if 20% shallower", "context": ["The Mariana Trench is 10,994 m deep."]}
    )
    assert value == pytest.approx(8795.2)
    prompt = model.calls[0].messages[0].content
    assert "The Mariana Trench is 10,994 m deep." in prompt
    assert "Problem: depth if 20% shallower" in prompt


async def test_a_model_reply_that_is_not_arithmetic_is_rejected() -> None:
    math = math_tool(ScriptedModel(["Expression: __import__('os').system('echo pwned')"]))
    with pytest.raises(ExpressionError, match=r"was rejected: .*not allowed"):
        await math.invoke({"problem": "how many files are there", "context": [3]})


def test_the_math_tools_llm_call_counts_in_the_run() -> None:
    planner = ScriptedModel(
        ['1. math("twice the context", context=[21])\n2. join()', "Action: Finish($1)"]
    )
    helper = ScriptedModel(["Expression: 21 * 2"], name="math-model")
    result = Compiler(model=planner, tools=[math_tool(helper)]).run("q")
    assert result.task(1).output == 42.0
    assert [(c.role, c.model) for c in result.usage] == [
        ("planner", "scripted"),
        ("tool", "math-model"),
        ("joiner", "scripted"),
    ]


# -- search_docs --------------------------------------------------------------------------


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "trenches.md").write_text(
        "# Trenches\n\nThe Mariana Trench is 10,994 metres deep.\n\n"
        "The Puerto Rico Trench is the deepest point of the Atlantic, 8,376 metres.\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deserts.txt").write_text("The Sahara covers 9.2 million km2.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG not text")
    return tmp_path


async def test_best_passage_first_with_its_source(docs: Path) -> None:
    tool = docs_tool(docs, k=2)
    text = await tool.invoke({"query": "How large is the Sahara desert?"})
    first = text.split("\n\n")[0]
    assert first.startswith("[sub/deserts.txt]")
    assert "9.2 million" in first


async def test_index_follows_changed_files(docs: Path) -> None:
    index = DocsIndex(docs)
    assert index.search("Gobi")[:1] == []
    gobi = docs / "gobi.md"
    gobi.write_text("The Gobi desert covers 1.3 million km2.")
    os.utime(gobi, (time.time() + 5, time.time() + 5))
    (passage, score), *_ = index.search("Gobi")
    assert passage.source == "gobi.md"
    assert score > 0


async def test_no_match_and_empty_query_are_tool_errors(docs: Path) -> None:
    tool = docs_tool(docs)
    with pytest.raises(ToolError, match="no passage"):
        await tool.invoke({"query": "zyzzyva"})
    with pytest.raises(ToolError, match="non-empty"):
        await tool.invoke({"query": "  "})


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        docs_tool(tmp_path / "missing")
    (tmp_path / "only.png").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"no text to search: dagcall reads \.txt"):
        docs_tool(tmp_path)


# -- wikipedia ----------------------------------------------------------------------------

API = "https://en.wikipedia.org/w/api.php"
SEARCH = {"query": {"search": [{"title": "Mariana Trench"}]}}
EXTRACT = {
    "query": {"pages": {"1": {"title": "Mariana Trench", "extract": "The Mariana Trench is deep."}}}
}


def _reply(request: httpx.Request) -> httpx.Response:
    if request.url.params.get("list") == "search":
        return httpx.Response(200, json=SEARCH)
    return httpx.Response(200, json=EXTRACT)


@respx.mock
async def test_wikipedia_search_then_intro() -> None:
    route = respx.get(API).mock(side_effect=_reply)
    text = await wikipedia_tool().invoke({"query": "deepest trench"})
    assert text.startswith("Mariana Trench: The Mariana Trench is deep.")
    assert "(source: https://en.wikipedia.org/wiki/Mariana_Trench)" in text
    assert route.call_count == 2
    first = route.calls[0].request
    assert first.headers["User-Agent"].startswith("dagcall/")
    assert first.url.params["srsearch"] == "deepest trench"
    assert route.calls[1].request.url.params["titles"] == "Mariana Trench"


@respx.mock
async def test_wikipedia_no_article() -> None:
    respx.get(API).mock(return_value=httpx.Response(200, json={"query": {"search": []}}))
    with pytest.raises(ToolError, match="no Wikipedia article matches 'qwzx'"):
        await wikipedia_tool().invoke({"query": "qwzx"})


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(429), "rate-limited"),
        (httpx.Response(503), "HTTP 503"),
        (httpx.ConnectError("no route"), "could not be reached.*needs network access"),
        (httpx.ReadTimeout("slow"), "did not answer within 15 s"),
    ],
)
@respx.mock
async def test_wikipedia_failures(response: httpx.Response | Exception, match: str) -> None:
    respx.get(API).mock(side_effect=[response])
    with pytest.raises(ToolError, match=match):
        await wikipedia_tool().invoke({"query": "anything"})
