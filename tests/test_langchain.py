"""LangChain tools (real ``langchain-core`` ones) planned over and run by dagcall."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import pytest

pytest.importorskip("langchain_core")

from langchain_core.tools import (
    BaseTool,
    InjectedToolArg,
    StructuredTool,
    ToolException,
    tool,
)
from pydantic import BaseModel, Field

from dagcall import Compiler, ScriptedModel, TaskStatus, ToolExecutionError, UsageError
from dagcall.langchain import LangChainToolset, from_langchain


@tool
async def lookup(city: str) -> float:
    """Look up a city's population in millions."""
    await asyncio.sleep(0.3)
    return {"Paris": 2.1, "Tokyo": 14.0}[city]


class Ratio(BaseModel):
    numerator: float = Field(description="the top")
    denominator: float = Field(description="the bottom")
    digits: int = Field(default=1, ge=0, le=6, description="decimals to keep")


def _ratio(numerator: float, denominator: float, digits: int = 1) -> dict[str, float]:
    if denominator == 0:
        raise ToolException("the denominator is zero")
    return {"ratio": round(numerator / denominator, digits)}


ratio = StructuredTool.from_function(
    _ratio, name="ratio", description="Divide two numbers.", args_schema=Ratio
)


@tool
def tagged(text: str, user_id: Annotated[str, InjectedToolArg] = "nobody") -> str:
    """Tag a text (the user id is injected by the caller, not the model)."""
    return f"{user_id}:{text}"


def test_the_schemas_are_langchains() -> None:
    tools = {t.name: t for t in from_langchain([lookup, ratio, tagged])}
    assert tools["lookup"].render().startswith("lookup(city: str)\nLook up a city's population")
    schema = tools["ratio"].json_schema
    assert set(schema["properties"]) == {"numerator", "denominator", "digits"}
    assert set(schema["required"]) == {"numerator", "denominator"}
    assert "ratio(numerator: float, denominator: float, digits: int = 1)" in tools["ratio"].render()
    assert list(tools["tagged"].json_schema["properties"]) == ["text"]  # injected: left out
    assert [t.name for t in from_langchain(lookup, prefix="lc_")] == ["lc_lookup"]


async def test_a_plan_over_langchain_tools_runs_in_parallel_and_passes_results() -> None:
    model = ScriptedModel(
        [
            '1. lookup("Tokyo")\n2. lookup("Paris")\n3. ratio(numerator="$1", '
            'denominator="$2", digits=2)\n4. join()',
            "Thought: done.\nAction: Finish(Tokyo has 6.67 times the people of Paris)",
        ]
    )
    compiler = Compiler(model=model, tools=[LangChainToolset([lookup, ratio])])
    started = time.perf_counter()
    result = await compiler.arun("How many times more people live in Tokyo than in Paris?")
    elapsed = time.perf_counter() - started
    tokyo, paris, divided = result.tasks
    assert (tokyo.output, paris.output) == (14.0, 2.1)  # typed results, passed as they are
    assert divided.status is TaskStatus.DONE, divided.error
    assert divided.output == {"ratio": 6.67}
    assert elapsed < 0.55  # the two 0.3 s look-ups overlapped
    assert result.answer.startswith("Tokyo has 6.67")


async def test_bad_arguments_and_tool_exceptions_are_failed_tasks() -> None:
    model = ScriptedModel(
        [
            "1. ratio(1, 0)\n2. ratio(1, 2, digits=99)\n3. ratio(nonsense=1)\n4. join()",
            "Action: Finish(could not)",
        ]
    )
    result = await Compiler(model=model, tools=from_langchain(ratio)).arun("q?")
    zero, digits, nonsense = result.tasks
    assert isinstance(zero.error, ToolExecutionError)
    assert zero.error.message == "ratio: the denominator is zero"
    assert digits.status is TaskStatus.FAILED
    assert "digits" in str(digits.error)  # the schema's maximum, checked before the call
    assert nonsense.status is TaskStatus.FAILED
    assert result.answer == "could not"


def test_a_toolkit_gives_its_tools() -> None:
    class Toolkit:
        def get_tools(self) -> list[BaseTool]:
            return [lookup, ratio]

    assert [t.name for t in from_langchain(Toolkit())] == ["lookup", "ratio"]
    assert repr(LangChainToolset(Toolkit())) == "LangChainToolset(lookup, ratio)"


def test_what_is_not_a_langchain_tool_is_refused() -> None:
    with pytest.raises(UsageError, match="not a LangChain tool"):
        from_langchain([lookup, print])
