"""Token estimates for text whose model reported no counts.

Real providers report their own counts; this estimate is used only where none is reported
(test doubles, servers without usage in their streams).  It splits on words and punctuation,
which is within a few percent of BPE tokenisers for English prose and code-like plans.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["estimate_tokens", "split_tokens"]

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into token-sized pieces whose concatenation is ``text``."""
    return _PIECE.findall(text)


def estimate_tokens(texts: str | Iterable[str]) -> int:
    """Estimated token count of one text or the sum over several."""
    if isinstance(texts, str):
        texts = (texts,)
    return sum(len(_PIECE.findall(t)) for t in texts)
