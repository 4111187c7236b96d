"""The LLMCompiler paper's scorer: numbers within ±10%, otherwise SQuAD-normalised exact match."""

from __future__ import annotations

import re
import string

__all__ = ["as_number", "normalize_answer", "score"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?$", re.I)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def as_number(text: str) -> float | None:
    """``text`` as a number when it is one (thousands separators, ``$`` and ``%`` allowed)."""
    cleaned = text.strip().replace(",", "").lstrip("$").rstrip("%").strip()
    if not _NUMBER.match(cleaned):
        return None
    try:
        return float(cleaned)
    except ValueError:  # pragma: no cover - the pattern admits only floats
        return None


def score(prediction: str, gold: str) -> bool:
    """Whether ``prediction`` counts as ``gold`` under the paper's scorer.

    A numeric gold answer is matched by a number strictly within ±10% of it; anything else by
    equal SQuAD-normalised strings.
    """
    gold_number = as_number(gold)
    if gold_number is not None:
        predicted = as_number(prediction)
        if predicted is None:
            return normalize_answer(prediction) == normalize_answer(gold)
        if gold_number == 0:
            return predicted == 0
        return abs(predicted - gold_number) < 0.1 * abs(gold_number)
    return normalize_answer(prediction) == normalize_answer(gold)
