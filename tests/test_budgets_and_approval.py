"""Budgets that end a run with an error naming the limit, and approval of side effects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dagcall import (
    ApprovalError,
    BudgetError,
    Compiler,
    Message,
    RunTimeoutError,
    ScriptedModel,
    TaskRecord,
    TaskStatus,
    UsageError,
    call_model,
    tool,
)
from dagcall.cli import main
from openai_server import FakeOpenAIServer, Stream

FINISH = "Action: Finish(done)"


@tool
async def step(n: int) -> int:
    """A step."""
    await asyncio.sleep(0.01)
    return n


def test_max_tasks_per_plan() -> None:
    plan = "\n".join(f"{i}. step({i})" for i in range(1, 11))
    compiler = Compiler(model=ScriptedModel([plan, FINISH]), tools=[step], max_tasks=4)
    with pytest.raises(BudgetError) as info:
        compiler.run("q")
    err = info.value
    assert err.limit == "max_tasks"
    assert "max_tasks=4" in err.message
    assert err.result is not None
    # The four tasks within the limit were run (or cancelled), none beyond it.
    assert [t.id for t in err.result.tasks] == [1, 2, 3, 4]


def test_max_tokens_per_run() -> None:
    """The budget covers the whole run: a first round within it, the replan over it."""
    replies = ["1. step(1)", "Action: Replan(more)", "2. step(2)", FINISH]
    unlimited = Compiler(model=ScriptedModel(replies), tools=[step]).run("q")
    first_round = sum(c.input_tokens + c.output_tokens for c in unlimited.usage if c.round == 0)
    assert unlimited.answer == "done"
    limit = first_round + 50  # less than the replanner's prompt alone
    compiler = Compiler(model=ScriptedModel(replies), tools=[step], max_tokens=limit)
    with pytest.raises(BudgetError) as info:
        compiler.run("q")
    err = info.value
    assert err.limit == "max_tokens"
    assert f"over max_tokens={limit:,}" in err.message
    assert "planner was still streaming" in err.message
    assert err.result is not None
    assert [t.id for t in err.result.tasks] == [1]  # what ran before is kept
    assert err.result.task(1).status is TaskStatus.DONE
    assert [(c.role, c.round) for c in err.result.usage] == [
        ("planner", 0),
        ("joiner", 0),
        ("planner", 1),
    ]


def test_a_tools_own_model_calls_count_in_the_token_budget() -> None:
    @tool
    async def chatty() -> str:
        """Ask a model at length."""
        reply = await call_model(ScriptedModel(["word " * 500]), [Message("user", "go")])
        return reply.text[:10]

    compiler = Compiler(
        model=ScriptedModel(["1. chatty()", FINISH]), tools=[chatty], max_tokens=400
    )
    with pytest.raises(BudgetError, match="over max_tokens=400"):
        compiler.run("q")


def test_wall_time_budget_names_its_limit() -> None:
    @tool
    async def slow() -> None:
        """Slow."""
        await asyncio.sleep(30)

    compiler = Compiler(model=ScriptedModel(["1. slow()", FINISH]), tools=[slow], timeout=0.3)
    with pytest.raises(RunTimeoutError) as info:
        compiler.run("q")
    assert info.value.limit == "timeout"
    assert info.value.result is not None
    assert info.value.result.task(1).status is TaskStatus.CANCELLED


def test_bad_limits() -> None:
    with pytest.raises(UsageError, match="max_tasks"):
        Compiler(model=ScriptedModel([]), tools=[step], max_tasks=0)
    with pytest.raises(UsageError, match="max_tokens"):
        Compiler(model=ScriptedModel([]), tools=[step], max_tokens=0)


sent: list[str] = []


@tool(side_effects=True)
def send_email(to: str, body: str) -> str:
    """Send an email."""
    sent.append(to)
    return "sent"


PLAN = '1. send_email("a@example.com", "hi")\n2. send_email("b@example.com", "hi")\n3. step(3)'


def test_side_effects_are_refused_without_an_approver() -> None:
    sent.clear()
    model = ScriptedModel([PLAN, FINISH])
    result = Compiler(model=model, tools=[send_email, step]).run("q")
    assert sent == []
    t1, _, t3 = result.tasks
    assert isinstance(t1.error, ApprovalError)
    assert "needs approval" in t1.error.message
    assert t3.status is TaskStatus.DONE
    assert "needs approval" in model.calls[1].messages[-1].content  # the joiner is told


async def test_the_approver_sees_the_resolved_call_and_decides() -> None:
    sent.clear()
    seen: list[dict[str, object]] = []

    async def approve(task: TaskRecord) -> bool:
        seen.append(dict(task.resolved_args or {}))
        return task.resolved_args == {"to": "a@example.com", "body": "hi"}

    compiler = Compiler(
        model=ScriptedModel([PLAN, FINISH]), tools=[send_email, step], approve=approve
    )
    result = await compiler.arun("q")
    assert sent == ["a@example.com"]
    assert result.task(1).output == "sent"
    error = result.task(2).error
    assert isinstance(error, ApprovalError)
    assert "was not approved" in error.message
    assert len(seen) == 2


def test_cli_yes_approves(
    openai_server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = tmp_path / "t.py"
    tools.write_text(
        "from dagcall import tool\n\n"
        "@tool(side_effects=True)\n"
        "def write_note(text: str) -> str:\n"
        '    """Write a note."""\n'
        "    return 'written: ' + text\n"
    )
    model = f"openai:test@{openai_server.base_url}"
    for flag, expected in (([], "needs approval"), (["--yes"], "written: hi")):
        openai_server.script(Stream(['1. write_note("hi")\n']), Stream(["Action: Finish(ok)"]))
        assert main(["ask", "q", "--tools", str(tools), "-m", model, *flag]) == 0
        assert expected in capsys.readouterr().out
