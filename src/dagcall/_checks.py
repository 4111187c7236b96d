"""Cheap checks of a joiner's answer against the question and the results.

Small models often answer the wrong kind of thing: a height where the question asked which
is taller, a city where it asked yes or no, a number no result supports, or an expression
left unevaluated (``9800 - 3150``).  :func:`settle_expression` evaluates an answer that is
nothing but arithmetic (with the whitelist evaluator, never ``eval``); :func:`answer_problem`
says, in one sentence the joiner is shown when it is asked once more, what is wrong with an
answer, or returns ``None`` when nothing is.  The checks read English question words and
the numbers in the results; they never judge whether an answer is true.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Literal

__all__ = [
    "AnswerKind",
    "answer_problem",
    "expected_kind",
    "listed_options",
    "matching_option",
    "settle_expression",
]

AnswerKind = Literal["yesno", "choice", "number"]

_AUX = r"is|are|was|were|do|does|did|can|could|will|would|has|have|had|should|shall|may|might|must"
_YESNO = re.compile(rf"^\W*(?:whether|{_AUX})\b", re.I)
_CHOICE = re.compile(r"^\W*(?:which|who|whom|whose)\b|\bor\b[^?]*\?\s*$", re.I)
# At the start of the question or of a clause ("If A grew by 10%, what would ... be?").
_NUMBER = re.compile(
    r"(?:^|[,;:]\s)\W*how (?:much|many|long|tall|far|old|high|deep|big|large|heavy|fast|hot|"
    r"cold|wide)\b|"
    r"(?:^|[,;:]\s)\W*what (?:is|was|would be|will be|are|were|would|will) (?:then )?the "
    r"(?:\w+ )?(?:total|sum|difference|"
    r"average|mean|ratio|product|combined|number|count|population|height|elevation|altitude|"
    r"area|length|width|depth|distance|mass|weight|temperature|age|price|cost|speed|"
    r"duration|period|size|volume|value|percentage|share|rate|score|budget|revenue|salary)\b|"
    r"(?:^|[,;:]\s)\W*by how much\b",
    re.I,
)
_YES_OR_NO = re.compile(r"^\W*(?:yes|no)\b", re.I)
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_ARITHMETIC = re.compile(r"^[\d\s.,+\-*/()%^]+$")
_OPERATOR = re.compile(r"\d\s*[-+*/^%]\s*[\d(]|\)\s*[-+*/]")
_RANGE = re.compile(r"^\d[\d.,]*-\d[\d.,]*$")
# A choice among values ("which value is larger: the difference of ... or ..."): a number
# answers it.
_VALUES = re.compile(
    r"\b(?:value|number|amount|figure|quantity|total|average|sum|difference|ratio|size|"
    r"percentage|result)s?\b",
    re.I,
)
_LONE_NUMBER = re.compile(r"^\W*[-+]?\d[\d,]*(?:\.\d+)?\W*$")
_FREE = {0.0, 1.0, 2.0, 3.0, 10.0, 100.0, 1000.0}
# A question that lists its possible answers: an "Options:" (or "Choices:") line, then one
# option a line, each perhaps marked "-", "*", "(A)", "A)" or "A.".
_OPTIONS_HEAD = re.compile(r"^\s*(?:options|choices|candidates)\s*:\s*$", re.I | re.M)
_OPTION_MARK = re.compile(r"^\s*(?:[-*\u2022]\s+|\(?[A-Ha-h1-9]\)\s+|[A-H1-9][.:]\s+)")
_MAX_OPTIONS = 26


def expected_kind(question: str) -> AnswerKind | None:
    """What kind of answer ``question`` asks for, from its English question words: a choice
    ("which ...", "who ...", "... A or B?"), a yes or no ("is ...", "did ..."), a number
    ("how much ...", "how many ...", "what is the total ..."), or ``None`` (anything else)."""
    text = question.strip()
    if _CHOICE.search(text):
        return "choice"
    if _YESNO.search(text):
        return "yesno"
    if _NUMBER.search(text):
        return "number"
    return None


def settle_expression(answer: str) -> str | None:
    """The value of an answer that is only arithmetic over numbers (``9800 - 3150``,
    ``(3 + 4) * 2``), formatted; ``None`` for any other answer, or arithmetic that does not
    evaluate."""
    text = answer.strip()
    if not text or not _ARITHMETIC.match(text) or not _OPERATOR.search(text):
        return None
    if _RANGE.match(text):  # "1990-1995", "3-4": a range or a date, not a subtraction
        return None
    from .tools._arithmetic import ExpressionError, evaluate

    try:
        value = evaluate(text.replace("^", "**"))
    except (ExpressionError, ValueError, ArithmeticError):
        return None
    from ._joiner import answer_text

    return answer_text(float(value))


def _numbers(text: str) -> list[float]:
    found: list[float] = []
    for m in _NUMBER_TEXT.finditer(text):
        try:
            found.append(float(m.group().replace(",", "")))
        except ValueError:
            continue
    return found


def _near(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 * max(abs(a), abs(b)) + 1e-9


def grounded(
    value: float,
    results: Iterable[float],
    question_numbers: Iterable[float],
    values: Iterable[float] = (),
) -> bool:
    """Whether ``value`` is (within 1%) a result's number, a number of the question, one
    operation of two of them (+ - * /, either order, a percentage, a mean), the sum or mean
    of three, or the sum or mean of any of ``values`` (the results that are one number each,
    at most 10 of them)."""
    pool = list(dict.fromkeys([*results, *question_numbers]))
    if value in _FREE or any(_near(value, x) for x in pool):
        return True
    lone = list(dict.fromkeys(values))[:10]
    for size in range(2, len(lone) + 1):
        for group in itertools.combinations(lone, size):
            if _near(value, sum(group)) or _near(value, sum(group) / size):
                return True
    if len(pool) > 60:  # the pairs would be too many to mean anything
        return True
    if len(pool) <= 20:  # sums and averages of three
        for trio in itertools.combinations(pool, 3):
            if _near(value, sum(trio)) or _near(value, sum(trio) / 3):
                return True
    for a, b in itertools.permutations(pool, 2):
        candidates = [a + b, a - b, a * b, a * b / 100, a * (1 + b / 100), a * (1 - b / 100)]
        candidates.append((a + b) / 2)
        if b:
            candidates += [a / b, (a / b - 1) * 100, a / b * 100]
        if any(_near(value, c) for c in candidates):
            return True
    return False


def listed_options(question: str) -> list[str]:
    """The answers ``question`` offers, in order, when it lists them one a line after an
    ``Options:`` line (at least two, each of at most 200 characters); ``[]`` otherwise."""
    head = _OPTIONS_HEAD.search(question)
    if head is None:
        return []
    options: list[str] = []
    for line in question[head.end() :].splitlines():
        if not line.strip():
            if options:
                break
            continue
        option = _OPTION_MARK.sub("", line).strip()
        if not option or len(option) > 200 or len(options) == _MAX_OPTIONS:
            return []
        if option not in options:
            options.append(option)
    return options if len(options) >= 2 else []


def _plain(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def matching_option(answer: str, options: Iterable[str]) -> str | None:
    """The one option ``answer`` names: equal to it up to case and punctuation, or the only
    option whose words it contains; ``None`` when it names none or several."""
    said = _plain(answer)
    plain = {option: _plain(option) for option in options}
    for option, words in plain.items():
        if words == said:
            return option
    named = {o: w for o, w in plain.items() if w and f" {w} " in f" {said} "}
    longest = [o for o, w in named.items() if not any(w != v and w in v for v in named.values())]
    return longest[0] if len(longest) == 1 else None


def answer_problem(question: str, answer: str, observations: Iterable[str]) -> str | None:
    """What is wrong with ``answer`` to ``question`` given the results' texts, in one
    sentence for the joiner, or ``None``."""
    kind = expected_kind(question)
    text = answer.strip()
    if not text:
        return "The answer is empty: answer the question from the results."
    options = listed_options(question)
    if options:
        if matching_option(text, options) is not None:
            return None
        return (
            f"The question lists its options, but the answer was {text[:80]!r}: answer with "
            f"exactly one of {'; '.join(options)[:600]}."
        )
    if kind == "yesno" and not _YES_OR_NO.match(text):
        return (
            f"The question asks yes or no, but the answer was {text[:80]!r}: answer with yes or no."
        )
    if kind == "choice" and _YES_OR_NO.match(text) and not _YESNO.search(question):
        return (
            f"The question asks which one, but the answer was {text[:40]!r}: answer with the "
            "name of the one the results point to, not yes or no."
        )
    if kind == "choice" and _LONE_NUMBER.match(text) and not _VALUES.search(question):
        return (
            f"The question asks which one, but the answer was the number {text[:40]}: "
            "answer with the name of the one the results point to."
        )
    numbers = _numbers(text)
    if kind == "number" and not numbers:
        return (
            f"The question asks for a number, but the answer was {text[:80]!r}: answer "
            "with the number the results give."
        )
    if kind == "number" and len(numbers) == 1:
        parsed = [(o, _numbers(o)) for o in observations]
        results = [n for _, found in parsed for n in found]
        lone = [abs(found[0]) for o, found in parsed if _LONE_NUMBER.match(o)]
        if results and not grounded(
            abs(numbers[0]), map(abs, results), map(abs, _numbers(question)), lone
        ):
            return (
                f"The answer's number {numbers[0]:g} is in no result and follows from none "
                "of them: answer with a number the results give."
            )
    return None
