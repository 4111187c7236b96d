"""Native function calling: OpenAIModel.stream_tools and the parallel-FC agent on it."""

from __future__ import annotations

import asyncio

import pytest

from anthropic_server import FakeAnthropicServer, MessageStream
from dagcall import UsageError, tool
from dagcall.baselines import ParallelFunctionCallingAgent
from dagcall.models import (
    AnthropicModel,
    Message,
    OpenAIModel,
    ScriptedModel,
    ToolCall,
    complete_with_tools,
)
from openai_server import FakeOpenAIServer, Stream

SPECS = [{"name": "look", "description": "Look up.", "parameters": {"type": "object"}}]


@tool
async def look(query: str) -> str:
    """Look something up."""
    await asyncio.sleep(0.1)
    return f"{query}: 7 m"


def _model(server: FakeOpenAIServer) -> OpenAIModel:
    return OpenAIModel("fake-model", base_url=server.base_url, max_retries=0, timeout=5.0)


async def test_stream_tools_assembles_parallel_calls(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(
        Stream(
            ["Looking both up."],
            tool_calls=[("look", '{"query": "a"}'), ("look", "{}")],
            usage=(40, 12),
        )
    )
    completion = await complete_with_tools(
        _model(openai_server), [Message("user", "q")], SPECS, max_tokens=50
    )
    assert completion.text == "Looking both up."
    assert completion.tool_calls == (
        ToolCall("call_0", "look", '{"query": "a"}'),
        ToolCall("call_1", "look", "{}"),
    )
    assert completion.usage is not None
    assert completion.usage.output_tokens == 12
    body = openai_server.requests[0].body
    assert body["tools"] == [{"type": "function", "function": SPECS[0]}]
    assert body["parallel_tool_calls"] is True


async def test_plain_stream_sends_no_tools_and_drops_calls(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(Stream(["hi"], tool_calls=[("look", "{}")]))
    parts = [e async for e in _model(openai_server).stream([Message("user", "q")])]
    assert parts[0] == "hi"
    assert not any(isinstance(p, ToolCall) for p in parts)
    assert "tools" not in openai_server.requests[0].body


async def test_agent_uses_native_calls_and_answers_each(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(
        Stream(
            [], tool_calls=[("look", '{"query": "a"}'), ("look", '{"query": "b"}'), ("nope", "{}")]
        ),
        Stream(["14 m"]),
    )
    agent = ParallelFunctionCallingAgent(_model(openai_server), [look])
    assert agent.native
    result = await agent.arun("How tall are a and b together?")
    assert result.answer == "14 m"
    a, b, nope = result.tasks
    assert a.started_at is not None
    assert b.started_at is not None
    assert a.ended_at is not None
    assert b.ended_at is not None
    assert a.started_at < b.ended_at
    assert b.started_at < a.ended_at
    assert nope.status.value == "failed"
    second = openai_server.requests[1].body["messages"]
    assert second[2]["role"] == "assistant"
    assert [c["id"] for c in second[2]["tool_calls"]] == ["call_0", "call_1", "call_2"]
    assert second[3] == {"role": "tool", "tool_call_id": "call_0", "content": "a: 7 m"}
    assert second[4]["tool_call_id"] == "call_1"
    assert second[5]["tool_call_id"] == "call_2"
    assert "UnknownToolError" in second[5]["content"]
    assert openai_server.requests[0].body["tools"][0]["function"]["parameters"]["required"] == [
        "query"
    ]


def test_models_without_native_calls_use_the_json_format() -> None:
    agent = ParallelFunctionCallingAgent(ScriptedModel(['{"answer": "x"}']), [look])
    assert not agent.native
    assert '{"tool_calls"' in agent.system
    with pytest.raises(UsageError, match="no native tool calls"):
        ParallelFunctionCallingAgent(ScriptedModel([]), [look], native=True)


# -- Anthropic -------------------------------------------------------------------------------
def _claude(server: FakeAnthropicServer) -> AnthropicModel:
    return AnthropicModel("claude-fake", base_url=server.base_url, max_retries=0, timeout=5.0)


async def test_anthropic_tool_use_blocks_become_calls(
    anthropic_server: FakeAnthropicServer,
) -> None:
    anthropic_server.script(
        MessageStream(["Both."], tool_calls=[("look", '{"query": "a"}'), ("look", "")])
    )
    completion = await complete_with_tools(
        _claude(anthropic_server), [Message("user", "q")], SPECS, max_tokens=50
    )
    assert completion.text == "Both."
    assert completion.tool_calls == (
        ToolCall("toolu_1", "look", '{"query": "a"}'),
        ToolCall("toolu_2", "look", "{}"),
    )
    body = anthropic_server.requests[0].body
    assert body["tools"] == [  # with the prompt cache's breakpoint after the last tool
        {
            "name": "look",
            "description": "Look up.",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        }
    ]


async def test_agent_on_anthropic_sends_tool_use_and_results(
    anthropic_server: FakeAnthropicServer,
) -> None:
    anthropic_server.script(
        MessageStream(
            ["Looking."], tool_calls=[("look", '{"query": "a"}'), ("look", '{"query": "b"}')]
        ),
        MessageStream(["14 m"]),
    )
    agent = ParallelFunctionCallingAgent(_claude(anthropic_server), [look])
    assert agent.native
    result = await agent.arun("How tall are a and b together?")
    assert result.answer == "14 m"
    assert [t.status.value for t in result.tasks] == ["done", "done"]
    messages = anthropic_server.requests[1].body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"query": "a"}},
            {"type": "tool_use", "id": "toolu_2", "name": "look", "input": {"query": "b"}},
        ],
    }
    assert messages[2] == {  # both results in one user turn, roles still alternate
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a: 7 m"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "content": "b: 7 m",
                "cache_control": {"type": "ephemeral"},  # the prompt cache's breakpoint
            },
        ],
    }
