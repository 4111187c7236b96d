"""ScriptedModel, the public test double, and StopFilter."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagcall import Message, ScriptedModel, ScriptExhaustedError, TokenUsage
from dagcall.models import StopFilter, complete

MSG = [Message("user", "hello there")]


async def test_streams_token_by_token_with_usage_last() -> None:
    model = ScriptedModel(["one two three"])
    events = [e async for e in model.stream(MSG)]
    assert events[:-1] == ["one", " two", " three"]
    assert events[-1] == TokenUsage(input_tokens=2, output_tokens=3, estimated=True)
    model.assert_all_used()


async def test_timing_follows_time_to_first_token_and_rate() -> None:
    model = ScriptedModel(["a b c d e f g h i j"], time_to_first_token=0.2, tokens_per_second=50)
    start = time.perf_counter()
    arrivals = []
    async for event in model.stream(MSG):
        if isinstance(event, str):
            arrivals.append(time.perf_counter() - start)
    assert arrivals[0] >= 0.2
    assert arrivals[-1] >= 0.2 + 9 / 50  # ten tokens, nine gaps at 50/s
    assert arrivals == sorted(arrivals)


async def test_stop_sequences_cut_the_reply() -> None:
    model = ScriptedModel(["1. a()\n2. join()\n<END_OF_PLAN>\nmore text"])
    completion = await complete(model, MSG, stop=["<END_OF_PLAN>"])
    assert completion.text == "1. a()\n2. join()\n"
    assert model.calls[0].reply == completion.text
    assert model.calls[0].stop == ("<END_OF_PLAN>",)


async def test_function_driven_and_failing_replies() -> None:
    async def reply(messages: list[Message]) -> str:
        return f"echo {messages[-1].content}"

    assert (await complete(ScriptedModel(reply), MSG)).text == "echo hello there"
    failing = ScriptedModel([TimeoutError("slow provider")])
    with pytest.raises(TimeoutError, match="slow provider"):
        await complete(failing, MSG)
    assert failing.calls[0].messages == MSG


async def test_exhaustion_and_unused_replies_fail_loudly() -> None:
    model = ScriptedModel(["only"])
    await complete(model, MSG)
    with pytest.raises(ScriptExhaustedError, match="called 2 times"):
        await complete(model, MSG)
    unused = ScriptedModel(["a", "b"])
    await complete(unused, MSG)
    with pytest.raises(AssertionError, match="1 scripted reply unused"):
        unused.assert_all_used()


def test_bad_timing_options() -> None:
    with pytest.raises(ValueError, match="tokens_per_second"):
        ScriptedModel([], tokens_per_second=0)
    with pytest.raises(ValueError, match="time_to_first_token"):
        ScriptedModel([], time_to_first_token=-1)


@given(
    text=st.text(alphabet="ab<>END_OF", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=10),
)
def test_stop_filter_is_split_invariant(text: str, cuts: list[int]) -> None:
    stop = ["<END>", "OF"]
    expected = text
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    if hits:
        expected = text[: min(hits)]
    f = StopFilter(stop)
    out, last = [], 0
    for c in sorted(set(min(c, len(text)) for c in cuts)):
        out.append(f.feed(text[last:c]))
        last = c
    out.append(f.feed(text[last:]))
    out.append(f.flush())
    assert "".join(out) == expected
