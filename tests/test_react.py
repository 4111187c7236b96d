"""The ReAct baseline: one tool call per model call, history resent, strictly sequential."""

from __future__ import annotations

import asyncio

import pytest

from dagcall import ApprovalError, ScriptedModel, TaskStatus, UsageError, tool
from dagcall.baselines import ReActAgent


@tool
async def lookup(name: str) -> float:
    """Look a number up."""
    await asyncio.sleep(0.05)
    return {"a": 2.0, "b": 3.0}[name]


@tool
def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y


STEPS = [
    'Thought: I need a.\nAction: lookup("a")',
    'Thought: Now b.\nAction: lookup("b")',
    "Thought: Add them.\nAction: add(2.0, 3.0)",
    "Thought: It is 5.\nAction: Finish(5.0 (a plus b))",
]


def test_one_call_per_step_sequentially_with_the_history_resent() -> None:
    model = ScriptedModel(STEPS)
    result = ReActAgent(model, [lookup, add]).run("What is a + b?")
    model.assert_all_used()
    assert result.answer == "5.0 (a plus b)"
    assert result.stop_reason == "finish"
    assert [t.output for t in result.tasks] == [2.0, 3.0, 5.0]
    assert [c.role for c in result.usage] == ["react"] * 4
    # Strictly one after another: each task starts after the previous one ended.
    for before, after in zip(result.tasks, result.tasks[1:], strict=False):
        assert after.started_at is not None
        assert before.ended_at is not None
        assert after.started_at >= before.ended_at
    # Every step resends the whole history, so prompts grow.
    prompts = [call.messages[-1].content for call in model.calls]
    assert "Observation: 2.0" in prompts[1]
    assert "Observation: 2.0" in prompts[3]
    assert "Observation: 3.0" in prompts[3]
    assert [c.input_tokens for c in result.usage] == sorted(c.input_tokens for c in result.usage)
    assert all(call.stop == ("\nObservation:", "Observation:") for call in model.calls)


def test_bad_actions_become_observations() -> None:
    model = ScriptedModel(
        [
            'Thought: try.\nAction: browse("x")',
            "Thought: try again.\nAction: lookup(name=1, extra=2)",
            "Thought: give up.\nAction: Finish(unknown)",
        ]
    )
    result = ReActAgent(model, [lookup]).run("q")
    assert result.answer == "unknown"
    assert [t.status for t in result.tasks] == [TaskStatus.FAILED, TaskStatus.FAILED]
    assert "unknown tool 'browse'" in model.calls[1].messages[-1].content
    assert "ToolArgumentError" in model.calls[2].messages[-1].content


def test_max_steps_ends_with_the_last_thought() -> None:
    model = ScriptedModel(['Thought: look a up.\nAction: lookup("a")'] * 2)
    result = ReActAgent(model, [lookup], max_steps=2).run("q")
    assert result.stop_reason == "max_steps"
    assert result.answer == "look a up."
    with pytest.raises(UsageError):
        ReActAgent(model, [lookup], max_steps=0)


def test_side_effects_need_approval_here_too() -> None:
    @tool(side_effects=True)
    def post(text: str) -> str:
        """Post."""
        return "posted"

    model = ScriptedModel(['Action: post("hi")', "Action: Finish(no)"])
    result = ReActAgent(model, [post]).run("q")
    assert isinstance(result.task(1).error, ApprovalError)
