"""Known per-token prices, for the cost estimates the CLI and benchmarks print.

Prices are US dollars per million tokens (input, output), as the providers list them; a
model not listed has no estimate.  Local models cost nothing per token.
"""

from __future__ import annotations

from ._result import RunResult

__all__ = ["PRICES", "price_of", "run_cost"]

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


def price_of(model_name: str) -> tuple[float, float] | None:
    """(input, output) dollars per million tokens for a model name as dagcall writes it."""
    provider, _, rest = model_name.partition(":")
    if provider == "local" or model_name == "local":
        return (0.0, 0.0)
    name = rest.split("@", 1)[0] if rest else model_name
    for known in sorted(PRICES, key=len, reverse=True):  # the longest match: gpt-4o-mini
        if name.startswith(known):
            return PRICES[known]
    return None


def run_cost(result: RunResult) -> float | None:
    """The run's LLM cost in dollars, or None when a model's price is unknown."""
    total = 0.0
    for call in result.usage:
        price = price_of(call.model)
        if price is None:
            return None
        total += (call.input_tokens * price[0] + call.output_tokens * price[1]) / 1e6
    return total
