"""What a run's LLM calls cost at list prices (USD per million tokens, by model name),
prompt-cache reads and writes priced as the providers bill them."""

from ._pricing import CACHE_PRICES, PRICES, cache_price_of, price_of, run_cost

__all__ = ["CACHE_PRICES", "PRICES", "cache_price_of", "price_of", "run_cost"]
