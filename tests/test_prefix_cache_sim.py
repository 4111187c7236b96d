"""The simulated endpoint's prompt cache: what it counts as cached, and what that saves."""

from __future__ import annotations

import pytest

from dagcall import tool
from dagcall.baselines import ReActAgent
from dagcall.bench._simulate import PROFILES, PrefixCache, SimulatedModel, count_tokens
from dagcall.models import Message, TokenUsage

LONG = "You are a planner. " + "tool(x: str) -> str: looks x up.\n" * 200  # > 1,024 tokens


def test_only_long_shared_prefixes_count_in_blocks_of_128() -> None:
    cache = PrefixCache()
    first = [Message("system", LONG), Message("user", "Question: one")]
    assert cache.lookup(first) == 0  # nothing seen yet
    second = [Message("system", LONG), Message("user", "Question: two")]
    cached = cache.lookup(second)
    shared = count_tokens(PrefixCache.text(second)[: len(PrefixCache.text(second)) - 5])
    assert 1024 <= cached <= shared
    assert cached % 128 == 0
    # a short prompt shares too little to be cached
    assert cache.lookup([Message("system", "hi"), Message("user", "Question: one")]) == 0
    assert cache.lookup([Message("system", "hi"), Message("user", "Question: one")]) == 0
    # a continued conversation (the joiner after the planner) is cached up to the plan
    longer = [*second, Message("assistant", "1. look('x')"), Message("user", "Results")]
    assert cache.lookup(longer) >= cached


async def test_cached_tokens_are_not_prefilled_and_cost_less() -> None:
    profile = PROFILES["gpt-4"]
    messages = [Message("system", LONG), Message("user", "Question: one")]

    async def usage(model: SimulatedModel) -> TokenUsage:
        events = [e async for e in model.stream(messages)]
        last = events[-1]
        assert isinstance(last, TokenUsage)
        return last

    plain = SimulatedModel(lambda m: "ok", profile, time_scale=1e-6)
    cached = SimulatedModel(lambda m: "ok", profile, time_scale=1e-6, prefix_cache=True)
    assert (await usage(plain)).cached_input_tokens == 0
    assert (await usage(plain)).cached_input_tokens == 0  # no cache: never cached
    assert (await usage(cached)).cached_input_tokens == 0  # first sight
    again = await usage(cached)
    assert again.cached_input_tokens >= 1024
    n, c = again.input_tokens, again.cached_input_tokens
    assert profile.time_to_first_token(n, c) < profile.time_to_first_token(n)
    assert profile.cost(n, 1, c) == pytest.approx(
        ((n - c) * profile.input_price + c * profile.input_price / 2 + profile.output_price) / 1e6
    )


async def test_react_resends_its_history_and_its_calls_record_the_cache() -> None:
    @tool
    def look(name: str) -> str:
        """Look a name up."""
        return f"{name} is 7 m tall"

    steps = iter(['Thought: a.\nAction: look("a")', "Thought: done.\nAction: Finish(7 m)"])

    def reply(messages: object) -> str:
        return next(steps)

    profile = PROFILES["llama-2-70b"]  # vLLM's prefix caching: 16-token blocks
    model = SimulatedModel(reply, profile, time_scale=1e-6, prefix_cache=True)
    result = await ReActAgent(model, [look], examples=LONG).arun("How tall is a?")
    assert result.answer == "7 m"
    first, second = result.usage
    assert first.cached_input_tokens == 0
    assert second.cached_input_tokens >= first.input_tokens - 16  # the whole first prompt
    assert second.cached_input_tokens % 16 == 0
