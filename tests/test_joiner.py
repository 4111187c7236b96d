"""Reading the joiner's reply."""

from __future__ import annotations

import pytest

from dagcall import parse_joiner


@pytest.mark.parametrize(
    ("reply", "action", "text"),
    [
        (
            "Thought: ok\nAction: Finish(First for Women (magazine))",
            "finish",
            "First for Women (magazine)",
        ),
        ("Thought: ok\nAction: Finish(f(x) = (a+b)*(c))", "finish", "f(x) = (a+b)*(c)"),
        ('Action: Finish("yes")', "finish", "yes"),
        (
            "Action: Finish(  Mariana Trench  )\nI hope this helps (really).",
            "finish",
            "Mariana Trench",
        ),
        (
            "Thought: need more.\nAction: Replan(look up the depth (in m))",
            "replan",
            "look up the depth (in m)",
        ),
        ("Thought: x\nAction: Finish(3 (approx", "finish", "3 (approx"),
        ("Thought: the answer is 42\nAction:finish(42)", "finish", "42"),
        ("Finish(no action label)", "finish", "no action label"),
    ],
)
def test_answer_is_everything_inside_the_outermost_parentheses(
    reply: str, action: str, text: str
) -> None:
    decision = parse_joiner(reply)
    assert decision.action == action
    assert decision.text == text
    assert decision.well_formed


def test_thought_is_kept() -> None:
    decision = parse_joiner("Thought: Apple is bigger.\nAction: Finish(Apple)")
    assert decision.thought == "Apple is bigger."


def test_a_reply_without_an_action_is_taken_as_the_answer() -> None:
    decision = parse_joiner("The answer is Paris.")
    assert (decision.action, decision.text, decision.well_formed) == (
        "finish",
        "The answer is Paris.",
        False,
    )


def test_the_action_after_the_thought_wins_over_words_in_the_thought() -> None:
    decision = parse_joiner("Thought: I could Replan(x) but no.\nAction: Finish(done)")
    assert (decision.action, decision.text) == ("finish", "done")
