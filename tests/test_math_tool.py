"""math_tool: plain arithmetic without a model, word problems through a model and the
whitelist evaluator, never eval."""

from __future__ import annotations

import pytest

from dagcall import Compiler, ScriptedModel, UsageError, tool
from dagcall.tools import ExpressionError, math_tool

TRENCH = "The Mariana Trench is 10,994 metres deep."


@pytest.mark.parametrize(
    ("problem", "value"),
    [
        ("(330 + 93) * 2", 846.0),
        ("What is 20% of 1500?", 300.0),
        ("calculate: 2^10", 1024.0),
        ("$3.0 / $2.8 - 1", 3.0 / 2.8 - 1),
        ("sqrt(16) + max(1, 5) =", 9.0),
        ("1,234.5 * 2", 2469.0),
    ],
)
async def test_plain_arithmetic_needs_no_model(problem: str, value: float) -> None:
    model = ScriptedModel([])  # any call would raise ScriptExhaustedError
    result = await math_tool(model).invoke({"problem": problem})
    assert result == pytest.approx(value)
    assert isinstance(result, float)
    assert model.calls == []


async def test_plain_arithmetic_that_fails_is_not_sent_to_the_model() -> None:
    model = ScriptedModel([])
    with pytest.raises(ExpressionError, match="divides by zero") as info:
        await math_tool(model).invoke({"problem": "1 / (2 - 2)"})
    assert info.value.tool == "math"
    assert model.calls == []


async def test_word_problem_goes_through_the_model_and_the_evaluator() -> None:
    model = ScriptedModel(["Expression: 10994 * (1 - 0.2)"])
    value = await math_tool(model).invoke(
        {"problem": "depth in metres if 20% shallower", "context": [TRENCH]}
    )
    assert value == pytest.approx(8795.2)
    [call] = model.calls
    prompt = call.messages[-1].content
    assert f"- {TRENCH}" in prompt
    assert prompt.rstrip().endswith("Problem: depth in metres if 20% shallower")
    assert "{{" not in prompt
    assert "Expression: 10994 * (1 - 0.2)" in prompt  # the examples are there


async def test_context_numbers_are_listed_for_the_model() -> None:
    model = ScriptedModel(["Expression: 10994 - 8849"])
    math = math_tool(model)
    # As the scheduler passes them: earlier results substituted into the list, numbers as is.
    arguments = math.validate(
        (), {"problem": "how much deeper than Everest is high", "context": [8849, 10994.0]}
    )
    assert await math.invoke(arguments) == 2145.0
    prompt = model.calls[0].messages[-1].content
    assert "- 8849\n- 10994.0\nProblem:" in prompt


async def test_no_context_is_said_plainly() -> None:
    model = ScriptedModel(["Expression: 60 * 60 * 24"])
    assert await math_tool(model).invoke({"problem": "seconds in a day"}) == 86400.0
    assert "Context:\n(none)\nProblem: seconds in a day" in model.calls[0].messages[-1].content


@pytest.mark.parametrize(
    "reply",
    [
        "Expression: `10994 * 0.8`",
        "**Expression:** 10994 * 0.8",
        "Sure, here it is.\n\nExpression: 10994 * 0.8",
        "Expression: 10994 * 0.8 = 8795.2",
        "```\n10994 * 0.8\n```",
        "10994 * 0.8.",
        "Expression: 10,994 * 0.8",
    ],
)
async def test_the_expression_is_found_in_looser_replies(reply: str) -> None:
    value = await math_tool(ScriptedModel([reply])).invoke(
        {"problem": "depth if 20% shallower", "context": [TRENCH]}
    )
    assert value == pytest.approx(8795.2)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("Expression: __import__('os').system('echo pwned')", "not allowed"),
        ("Expression: open('/etc/passwd').read()", "not allowed"),
        ("Expression: (1).__class__", "not allowed"),
        ("Expression: 10994 metres", "not an arithmetic expression"),
        ("Expression: 9 ** 9 ** 9", "too large"),
    ],
)
async def test_a_model_reply_that_is_not_arithmetic_is_rejected(reply: str, why: str) -> None:
    math = math_tool(ScriptedModel([reply]))
    with pytest.raises(ExpressionError) as info:
        await math.invoke({"problem": "how many files are there", "context": [3]})
    message = info.value.message
    assert message.startswith("for 'how many files are there' the model wrote ")
    assert "which was rejected: " in message
    assert why in message
    assert info.value.tool == "math"


async def test_an_empty_reply_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="the model gave no expression for 'x doubled'"):
        await math_tool(ScriptedModel([""])).invoke({"problem": "x doubled", "context": [2]})


async def test_the_model_is_resolved_on_first_use_only() -> None:
    math = math_tool("nosuchprovider:model")  # not resolved yet: building the tool is fine
    assert await math.invoke({"problem": "2 + 2"}) == 4.0
    with pytest.raises(UsageError, match="unknown model provider 'nosuchprovider'"):
        await math.invoke({"problem": "two plus two"})


def test_the_tool_as_the_planner_sees_it() -> None:
    math = math_tool(ScriptedModel([]), name="calc_words")
    assert math.name == "calc_words"
    rendered = math.render()
    assert rendered.startswith("calc_words(problem: str, context: list[Any] | None = None)")
    assert "context" in math.description


def test_the_math_tools_llm_call_counts_in_the_run() -> None:
    @tool
    def search(query: str) -> str:
        """Look something up."""
        return TRENCH

    planner = ScriptedModel(
        [
            '1. search("Mariana Trench depth")\n'
            '2. math("depth in metres if 20% shallower", context=["$1"])\n'
            '3. math("$2 / 1000")\n'
            "4. join()",
            "Action: Finish(about 8.8 km)",
        ]
    )
    helper = ScriptedModel(["Expression: 10994 * (1 - 0.2)"], name="math-model")
    result = Compiler(model=planner, tools=[search, math_tool(helper)]).run("q")
    assert result.task(2).output == pytest.approx(8795.2)
    assert result.task(3).output == pytest.approx(8.7952)  # plain arithmetic: no model call
    assert [(c.role, c.model, c.task_id) for c in result.usage] == [
        ("planner", "scripted", None),
        ("tool", "math-model", 2),
        ("joiner", "scripted", None),
    ]
    tool_call = result.usage[1]
    assert tool_call.input_tokens > 0
    assert tool_call.output_tokens > 0
    assert TRENCH in helper.calls[0].messages[-1].content
    helper.assert_all_used()
