"""Token counts for text whose model reported none: exact ``cl100k_base`` counts with the
``tokens`` extra, a close estimate without it."""

from ._tokens import encoding, estimate_tokens, exact_tokens_available, heuristic_tokens

__all__ = ["encoding", "estimate_tokens", "exact_tokens_available", "heuristic_tokens"]
