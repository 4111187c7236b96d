"""Known per-token prices, for the cost estimates the CLI and benchmarks print.

Prices are US dollars per million tokens (input, output), as the providers list them; a
model not listed has no estimate.  Local models cost nothing per token.  Input read back from
a provider's prompt cache, and input written to it, have prices of their own
(:data:`CACHE_PRICES`); a model without an entry there bills them as plain input.
"""

from __future__ import annotations

from ._result import RunResult

__all__ = ["CACHE_PRICES", "PRICES", "cache_price_of", "price_of", "run_cost"]

PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
}

#: (cache read, cache write) dollars per million input tokens.  OpenAI caches long prompts by
#: itself (writes cost nothing extra; gpt-4-turbo and gpt-3.5-turbo have no cache); Anthropic
#: reads at a tenth of the input price and writes at 1.25 times it (five-minute cache).
CACHE_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.075, 0.15),
    "gpt-4o": (1.25, 2.50),
    "gpt-4.1-mini": (0.10, 0.40),
    "gpt-4.1": (0.50, 2.00),
    "claude-3-5-haiku": (0.08, 1.00),
    "claude-3-5-sonnet": (0.30, 3.75),
}


def _lookup(table: dict[str, tuple[float, float]], model_name: str) -> tuple[float, float] | None:
    provider, _, rest = model_name.partition(":")
    if provider == "local" or model_name == "local":
        return (0.0, 0.0)
    name = rest.split("@", 1)[0] if rest else model_name
    for known in sorted(table, key=len, reverse=True):  # the longest match: gpt-4o-mini
        if name.startswith(known):
            return table[known]
    return None


def price_of(model_name: str) -> tuple[float, float] | None:
    """(input, output) dollars per million tokens for a model name as dagcall writes it."""
    return _lookup(PRICES, model_name)


def cache_price_of(model_name: str) -> tuple[float, float] | None:
    """(cache read, cache write) dollars per million input tokens; a model priced in
    :data:`PRICES` but with no cache entry bills both as plain input; None when unknown."""
    cached = _lookup(CACHE_PRICES, model_name)
    if cached is not None:
        return cached
    price = price_of(model_name)
    return None if price is None else (price[0], price[0])


def run_cost(result: RunResult) -> float | None:
    """The run's LLM cost in dollars, or None when a model's price is unknown."""
    total = 0.0
    for call in result.usage:
        price, cache = price_of(call.model), cache_price_of(call.model)
        if price is None or cache is None:
            return None
        read = max(0, min(call.cached_input_tokens, call.input_tokens))
        write = max(0, min(call.cache_write_tokens, call.input_tokens - read))
        fresh = call.input_tokens - read - write
        total += (
            fresh * price[0] + read * cache[0] + write * cache[1] + call.output_tokens * price[1]
        ) / 1e6
    return total
