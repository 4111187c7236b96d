"""A whole run through OpenAIModel over real HTTP streaming to a loopback server."""

from __future__ import annotations

import asyncio

from dagcall import Compiler, TaskStatus, tool
from dagcall.models import OpenAIModel
from openai_server import FakeOpenAIServer, Stream, rate_limited


@tool
async def lookup(name: str) -> float:
    """Look up a number."""
    await asyncio.sleep(0.05)
    return {"a": 2.0, "b": 3.0}[name]


@tool
def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y


PLAN = [
    "Thought: both look-ups are independent.\n1. look",
    'up("a")\n2. lookup("b")\n',
    "3. add($1, $2)\n",
    "4. join()\n",
]


async def test_a_run_over_http_with_a_rate_limit_and_reported_usage(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(
        rate_limited("0"),
        Stream(PLAN, usage=(412, 31), delay=0.02),
        Stream(["Thought: 2 + 3.\n", "Action: Finish(5.0 (a plus b))"], usage=(230, 12)),
    )
    model = OpenAIModel("test-model", base_url=openai_server.base_url, max_retries=2)
    result = await Compiler(model=model, tools=[lookup, add]).arun("What is a + b?")
    assert result.answer == "5.0 (a plus b)"
    assert [t.status for t in result.tasks] == [TaskStatus.DONE] * 3
    assert result.task(3).output == 5.0
    assert [(c.input_tokens, c.output_tokens, c.estimated) for c in result.usage] == [
        (412, 31, False),
        (230, 12, False),
    ]
    bodies = openai_server.bodies
    assert len(bodies) == 3  # the 429, its retry, the joiner
    assert bodies[1]["stop"] == ["<END_OF_PLAN>"]
    assert bodies[1]["messages"][1] == {"role": "user", "content": "Question: What is a + b?"}


async def test_a_server_ignoring_stop_is_cut_locally_and_usage_marked_estimated(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(
        Stream([*PLAN, "<END_OF_PLAN>", "\nThe plan is done."], usage=(412, 40)),
        Stream(["Action: Finish(5.0)"], usage=(230, 12)),
    )
    model = OpenAIModel("test-model", base_url=openai_server.base_url)
    result = await Compiler(model=model, tools=[lookup, add]).arun("What is a + b?")
    assert result.answer == "5.0"
    assert "The plan is done" not in result.rounds[0].plan
    assert [c.estimated for c in result.usage] == [True, False]


async def test_a_plan_stream_cut_midway_still_runs_its_tasks(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(
        Stream(PLAN, cut_after=2),
        Stream(["Thought: partial.\nAction: Finish(unknown)"], usage=(100, 8)),
    )
    model = OpenAIModel("test-model", base_url=openai_server.base_url, max_retries=0)
    result = await Compiler(model=model, tools=[lookup, add], max_replans=0).arun("q")
    assert [t.status for t in result.tasks] == [TaskStatus.DONE, TaskStatus.DONE]
    (error,) = result.rounds[0].errors
    assert "cut" in error.message
    assert "cut" in openai_server.bodies[1]["messages"][1]["content"]
    assert result.answer == "unknown"
