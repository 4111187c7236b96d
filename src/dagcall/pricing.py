"""What a run's LLM calls cost at list prices (USD per million tokens, by model name)."""

from ._pricing import PRICES, price_of, run_cost

__all__ = ["PRICES", "price_of", "run_cost"]
