"""The joiner's answer is exact: the rule in parse_joiner's docstring, and its guarantee."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dagcall import parse_joiner


@pytest.mark.parametrize(
    ("reply", "action", "text"),
    [
        (
            "Thought: t\nAction: Finish(Two reasons: 1) cost, 2) speed)",
            "finish",
            "Two reasons: 1) cost, 2) speed",
        ),
        ('Action: Finish("a ) b")', "finish", "a ) b"),
        ("Action: Finish('a ) b')", "finish", "a ) b"),
        ("Action: Finish(`a ) b`)", "finish", "a ) b"),
        ('Action: Finish("""say "(" twice""")', "finish", 'say "(" twice'),
        ('Action: Finish("He said \\"hi\\" (twice)")', "finish", 'He said "hi" (twice)'),
        (
            'Action: Finish("tab\\there\\nnew \\u00e9 \\ud83d\\ude00")',
            "finish",
            "tab\there\nnew é 😀",
        ),
        ('Action: Finish("kept: \\q \\ud800 \\x4")', "finish", "kept: \\q \\ud800 \\x4"),
        ("Action: Finish(Apple's (AAPL) value)", "finish", "Apple's (AAPL) value"),
        ("Action: Finish('Apple's market cap')", "finish", "Apple's market cap"),
        ("Action: Finish('s-Hertogenbosch)", "finish", "'s-Hertogenbosch"),
        ('Action: Finish("a" and "b")', "finish", 'a" and "b'),  # quoted all round: unquoted
        (
            "Action: Finish(Two reasons:\n1) cost\n2) speed)",
            "finish",
            "Two reasons:\n1) cost\n2) speed",
        ),
        ("Action: Finish(Paris)\nHope this helps (really).", "finish", "Paris"),
        ("Action: Finish(Paris) (see above)", "finish", "Paris"),
        ("Action: Finish(1) a)\nI hope (this) helps.", "finish", "1) a"),
        (
            "Action: Finish(x)\nThought: no, wait.\nAction: Replan(need (more))",
            "replan",
            "need (more)",
        ),
        ('Action: Finish("Action: Replan(x)")', "finish", "Action: Replan(x)"),
        ("Action: Finish(see Action: Replan(x) here)", "finish", "see Action: Replan(x) here"),
        ("Thought: I could Replan(x).\nAction: none yet\nAction: Finish(done)", "finish", "done"),
        ("Action: Finish()", "finish", ""),
        ('Action: Finish("")', "finish", ""),
        ("Action: Finish(", "finish", ""),
        ("Thought: ok\nAction: Finish(unclosed (paren", "finish", "unclosed (paren"),
    ],
)
def test_examples(reply: str, action: str, text: str) -> None:
    decision = parse_joiner(reply)
    assert (decision.action, decision.text, decision.well_formed) == (action, text, True)


def test_no_action_and_thoughts_are_kept() -> None:
    assert parse_joiner("The answer is (probably) Paris.").text == "The answer is (probably) Paris."
    assert not parse_joiner("The answer is Paris.").well_formed
    decision = parse_joiner("Thought: it is Paris (France).\nAction: Finish(Paris)")
    assert decision.thought == "it is Paris (France)."
    assert parse_joiner("Thought: only a thought").text == "only a thought"


# -- the guarantee, fuzzed -------------------------------------------------------------------

_piece = st.sampled_from(
    ["(", ")", "'", '"', "`", "\\", "\n", " ", "Apple's", "1)", "(a)", "Action: ", "Finish(",
     "Replan(", "Thought: ", "x", "é", "\\n", "\\\"", "}", "\t"]
)  # fmt: skip
_text = st.lists(st.one_of(_piece, st.text(max_size=3)), max_size=20).map("".join)


def unmatched(text: str) -> tuple[int, int]:
    """How many ``)`` and ``(`` of ``text`` are left unmatched."""
    depth = closers = 0
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")":
            if depth:
                depth -= 1
            else:
                closers += 1
    return closers, depth


@settings(max_examples=1000, deadline=None)
@given(_text)
def test_unquoted_answer_is_exact_unless_it_has_stray_closers_and_unclosed_openers(a: str) -> None:
    assume(a.strip()[:1] not in ("'", '"', "`"))
    closers, openers = unmatched(a)
    answer = parse_joiner(f"Thought: t\nAction: Finish({a})").text
    if not (closers and openers):
        assert answer == a.strip()
    elif not re.search(r"(?i)\baction\s*:", a):  # cut at a ')' of A: a prefix
        assert a.strip().startswith(answer)
        assert len(answer) < len(a.strip())


def reference(reply_argument: str) -> str:
    """The documented raw rule, written the slow and obvious way."""
    depth, lowest, end, last = 1, 1, -1, -1
    for i, c in enumerate(reply_argument):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            last = i
            if depth < lowest:
                lowest = depth
                if depth <= 0:
                    end = i
    if end < 0:
        end = last if last >= 0 else len(reply_argument)
    raw = reply_argument[:end].strip()
    for q in ('"""', "'''", "```", '"', "'", "`"):
        if len(raw) >= 2 * len(q) and raw.startswith(q) and raw.endswith(q):
            return raw[len(q) : -len(q)]
    return raw


@settings(max_examples=800, deadline=None)
@given(a=_text, junk=_text)
def test_raw_rule_with_trailing_text_matches_the_documented_rule(a: str, junk: str) -> None:
    assume(a.lstrip()[:1] not in ("'", '"', "`"))
    argument = f"{a}){junk}"
    assume(not re.search(r"(?i)\baction\s*:", argument))  # one action only
    assert parse_joiner(f"Action: Finish({argument}").text == reference(argument)


def backslashed(a: str, quote: str) -> str:
    return quote + a.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


@settings(max_examples=800, deadline=None)
@given(
    a=st.one_of(_text, st.text()),
    form=st.sampled_from(["dq", "sq", "bt", "json", "json-ascii", "repr"]),
    junk=st.sampled_from(["", "\n", "\nHope this helps (really)).", " )) ) Action: Replan(x"]),
)
def test_a_quoted_answer_is_exact_for_any_text(a: str, form: str, junk: str) -> None:
    literal = {
        "dq": lambda: backslashed(a, '"'),
        "sq": lambda: backslashed(a, "'"),
        "bt": lambda: backslashed(a, "`"),
        "json": lambda: json.dumps(a, ensure_ascii=False),
        "json-ascii": lambda: json.dumps(a),
        "repr": lambda: repr(a),
    }[form]()
    reply = f"Thought: t\nAction: Finish({literal}){junk}"
    if "Replan" in junk:
        decision = parse_joiner(reply)
        assert (decision.action, decision.text) == ("replan", "x")
        return
    decision = parse_joiner(reply)
    assert (decision.action, decision.text, decision.well_formed) == ("finish", a, True)


def test_large_replies_are_read_in_linear_time() -> None:
    many = "Thought: t\n" + "Action: Finish(x (y))\n" * 50_000 + "Action: Replan(last)"
    deep = "Action: Finish(" + "(" * 200_000 + ")" * 100_000
    quotes = 'Action: Finish("' + 'a\\"' * 200_000 + '")'
    started = time.perf_counter()
    assert parse_joiner(many).text == "last"
    assert parse_joiner(deep).text == "(" * 200_000 + ")" * 99_999
    assert parse_joiner(quotes).text == 'a"' * 200_000
    assert time.perf_counter() - started < 20  # only catches a hang
