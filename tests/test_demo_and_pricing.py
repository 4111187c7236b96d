"""The demo scenario's tools and the cost estimates."""

from __future__ import annotations

import pytest

from dagcall import Compiler, LLMCall, RunResult, ScriptedModel, ToolError
from dagcall import demo as demo_module
from dagcall._pricing import price_of, run_cost
from dagcall.demo import QUESTIONS, area, demo_tools, height, population


@pytest.fixture(autouse=True)
def _fast_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_module, "LOOKUP_LATENCY", 0.0)


async def test_knowledge_base_lookups() -> None:
    assert await height.invoke({"landmark": "The Eiffel Tower"}) == 330.0
    assert await population.invoke({"country": "germany"}) == 83_200_000
    assert await area.invoke({"country": " Spain "}) == 505_990
    with pytest.raises(ToolError, match="no height known for 'Atlantis'; known: big ben"):
        await height.invoke({"landmark": "Atlantis"})


def test_demo_questions_are_answerable_from_the_knowledge_base() -> None:
    plans = [
        '1. height("Eiffel Tower")\n2. height("Statue of Liberty")\n3. calculator("$1 + $2")',
        '1. population("Germany")\n2. population("France")\n3. calculator("$1 - $2")',
        '1. area("Spain")\n2. area("Portugal")\n3. calculator("$1 + $2")',
    ]
    for (question, expected), plan in zip(QUESTIONS, plans, strict=True):
        model = ScriptedModel([plan, "Action: Finish($3)"])
        result = Compiler(model=model, tools=demo_tools()).run(question)
        assert result.task(3).output == float(expected.replace(",", ""))


def test_prices() -> None:
    assert price_of("openai:gpt-4o-mini") == (0.15, 0.60)
    assert price_of("openai:gpt-4o-2024-08-06") == (2.50, 10.00)
    assert price_of("openai:gpt-4o-mini@http://127.0.0.1:8000/v1") == (0.15, 0.60)
    assert price_of("local") == (0.0, 0.0)
    assert price_of("local:/models/x.gguf") == (0.0, 0.0)
    assert price_of("openai:some-local-llama@http://127.0.0.1:8000/v1") is None


def call(model: str, tokens_in: int, tokens_out: int) -> LLMCall:
    return LLMCall("planner", model, 0, tokens_in, tokens_out, 0.0, 1.0, None)


def test_run_cost() -> None:
    result = RunResult("q", usage=[call("openai:gpt-4o-mini", 1_000_000, 100_000)])
    assert run_cost(result) == pytest.approx(0.15 + 0.06)
    result.usage.append(call("openai:unknown-model", 10, 10))
    assert run_cost(result) is None
