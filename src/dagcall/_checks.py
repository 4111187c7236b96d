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
from collections.abc import Iterable, Mapping
from typing import Literal

__all__ = [
    "AnswerKind",
    "answer_problem",
    "comparison_problem",
    "expected_kind",
    "listed_options",
    "matching_option",
    "name_to_look_up",
    "nested_replan",
    "settle_expression",
    "size_of_difference",
    "unasked_factor",
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
    r"(?:^|[,;:]\s)\W*by how much\b|"
    r"(?:^|[,;:]\s)\W*(?:in )?what year\b",
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
    r"percentage|result|year)s?\b",
    re.I,
)
_LONE_NUMBER = re.compile(r"^\W*[-+]?\d[\d,]*(?:\.\d+)?\W*$")
# Answers no result needs to support (small counts), and the factors a result may be scaled
# by (a percentage, a metric unit) and still count as that result.  A bare 100 or 1000 is
# not free: a joiner that makes a number up reaches for a round one.
_FREE = {0.0, 1.0, 2.0, 3.0}
_SCALES = (100.0, 1000.0)
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


_NESTED_REPLAN = re.compile(r"^\s*Replan\s*\((.*)\)\s*$", re.I | re.S)


def nested_replan(answer: str) -> str | None:
    """The reason of a ``Replan(...)`` a joiner wrote as its answer (``Finish(Replan(...))``,
    a small model's slip), or ``None``."""
    m = _NESTED_REPLAN.match(answer)
    return m.group(1).strip() or "(no reason given)" if m else None


def name_to_look_up(question: str, answer: str, observations: Iterable[str]) -> str | None:
    """A replan's reason when ``question`` asks for a number, no result holds one, and the
    answer is a short name a result's text gives ("Marrowick", read from "Its capital is
    Marrowick"): the answer is what to look the number up for, not the answer; else
    ``None``."""
    text = answer.strip().strip(".")
    if expected_kind(question) != "number" or _numbers(text) or not text:
        return None
    if len(text) > 60 or len(text.split()) > 4 or _NO_NAME.match(text):
        return None
    results = list(observations)
    if any(_numbers(o) for o in results) or not any(_named(text, o) for o in results):
        return None
    return (
        f"The results name {text}, but the question asks for a number: look up that number "
        f"for {text} with the tool that gives it."
    )


_NO_NAME = re.compile(
    r"^\W*(?:unknown|none|nothing|n/?a|not (?:found|known|given|available)|no (?:answer|data|"
    r"result)s?|cannot|can't|unable|error|yes|no)\b",
    re.I,
)


def size_of_difference(question: str, answer: str) -> str | None:
    """``answer`` with its one number made positive, when that number is negative and
    ``question`` asks how much one thing is more or less than another ("How many days
    shorter is A than B?"): the size of a difference, which a plan that subtracted the wrong
    way round gives negative; ``None`` for any other answer."""
    numbers = _numbers(answer)
    if len(numbers) != 1 or numbers[0] >= 0 or not _HOW_MUCH_MORE.search(question):
        return None
    if expected_kind(question) != "number":
        return None
    return _MINUS.sub("", answer, count=1)


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
    """Whether ``value`` is (within 1%) a result's number, a number of the question, one of
    them scaled by 100 or 1000 either way, one operation of two of them (+ - * /, either
    order, a percentage, a mean), the sum or mean of three, or the sum or mean of any of
    ``values`` (the results that are one number each, at most 10 of them)."""
    pool = list(dict.fromkeys([*results, *question_numbers]))
    if value in _FREE or any(_near(value, x) for x in pool):
        return True
    if any(_near(value, x * k) or _near(value, x / k) for x in pool for k in _SCALES):
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
                "of them: answer with a number the results give, or, when the answer is "
                "computed from them, with the arithmetic itself over the results' numbers "
                "(as in Finish(A - B) with their values), which is worked out for you."
            )
    return None


# A result multiplied or divided by a power of ten written in a call's argument
# ("$1.weight_kg * 1000", "1000 * $2", "$3 / 1e6"): small models convert units unasked.
_FACTOR = re.compile(
    r"(?:[*/]\s*\(?\s*(?P<after>1(?:0{2,})(?:\.0*)?|1e\+?\d+)(?![\w.]))"
    r"|(?:(?<![\w.])(?P<before>1(?:0{2,})(?:\.0*)?|1e\+?\d+)\s*\)?\s*\*)",
    re.I,
)
_REFERENCE = re.compile(r"\$\{?\d+")
# The words that ask for each factor in a question.
_FACTOR_WORDS = {
    100.0: re.compile(r"%|\bper\s*cents?\b|\bpercent(?:age)?s?\b|\bhundreds?\b", re.I),
    1000.0: re.compile(r"\bthousands?\b|\bper\s*mille\b|\u2030", re.I),
    1e6: re.compile(r"\bmillions?\b", re.I),
    1e9: re.compile(r"\bbillions?\b", re.I),
}


def unasked_factor(question: str, call: str) -> float | None:
    """The power of ten (100 or more) by which ``call``, a tool call over earlier results
    (with a ``$N`` in it), multiplies or divides one, when the question neither writes that
    number nor names it (percent, thousand, million, ...); ``None`` otherwise.  A unit the
    question asks for may need such a factor, so this is a reason to look again, not a
    verdict."""
    if not _REFERENCE.search(call):
        return None
    asked = {abs(n) for n in _numbers(question)}
    for m in _FACTOR.finditer(call):
        factor = float(m.group("after") or m.group("before"))  # the pattern matches numbers
        if factor in asked:
            continue
        words = _FACTOR_WORDS.get(factor)
        if words is not None and words.search(question):
            continue
        return factor
    return None


# Comparison words and the end of an order they point to (True: the highest).  "older",
# "newer", "first" over years point the other way than over ages or counts, so they are
# read with the values (see _direction).
# fmt: off
_UP_WORDS = frozenset({
    "higher", "highest", "larger", "largest", "bigger", "biggest", "greater", "greatest",
    "taller", "tallest", "longer", "longest", "heavier", "heaviest", "deeper", "deepest",
    "wider", "widest", "farther", "farthest", "further", "furthest", "hotter", "hottest",
    "warmer", "warmest", "richer", "richest", "more", "most", "later", "latest", "costlier",
    "pricier", "dearer"
})
_DOWN_WORDS = frozenset({
    "lower", "lowest", "smaller", "smallest", "less", "least", "fewer", "fewest", "shorter",
    "shortest", "lighter", "lightest", "shallower", "shallowest", "narrower", "narrowest",
    "closer", "closest", "nearer", "nearest", "colder", "coldest", "cooler", "coolest",
    "cheaper", "cheapest", "poorer", "poorest", "earlier", "earliest"
})
# fmt: on
_AGE_WORDS = {
    "older": False,
    "oldest": False,
    "younger": True,
    "youngest": True,
    "newer": True,
    "newest": True,
}  # over years; over ages the reverse
_YEAR_WORDS = {"first": False}  # over years only ("which was founded first")
# Speed words point up over a speed and down over a time ("delivers fastest": the fewest
# days; "orbits fastest": the shortest period), and say nothing over anything else.
_SPEED_WORDS = {
    "faster": True,
    "fastest": True,
    "quicker": True,
    "quickest": True,
    "slower": False,
    "slowest": False,
}
_SPEED = frozenset({"speed", "velocity", "pace", "mph", "kph", "kmh"})
_TIME = frozenset(
    {
        "day",
        "days",
        "hour",
        "hours",
        "minute",
        "minutes",
        "second",
        "seconds",
        "time",
        "times",
        "duration",
        "delay",
        "latency",
        "period",
        "wait",
        "eta",
    }
)
# A rank's first place is its lowest number: "ranked higher" reads no plain way.
_RANK = frozenset({"rank", "ranking", "position", "place", "seed", "standing"})
# "more affordable" is the cheaper one: the adjective turns "more" and "most" around.
_INVERSE = frozenset({"affordable", "economical", "inexpensive"})
_NOT_CUES = re.compile(
    r"\b(?:at least|at most|no more|no less|not|never|\w+n't|twice|thrice|double|triple|"
    r"half|times|percent|per|each|every|(?:north|south|east|west)(?:ern|erly|wards?)?)\b|\d|%",
    re.I,
)
# "How much shorter is A than B?", "by how much does A exceed B": the size of a difference,
# never negative (a negative answer comes from subtracting the wrong way round).
_COMPARATIVES = sorted(
    w
    for w in (_UP_WORDS | _DOWN_WORDS | set(_AGE_WORDS) | set(_SPEED_WORDS))
    if w.endswith("er") or w in {"more", "less"}
)
_MINUS = re.compile(r"[-\u2212](?=\s*\d)")
_HOW_MUCH_MORE = re.compile(
    rf"\bhow (?:much|many)\b[^?]*?\b(?:{'|'.join(_COMPARATIVES)})\b[^?]*?\bthan\b", re.I
)
_CUE_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?", re.I)


def _direction(question: str, tool: str, years: bool) -> tuple[bool, str] | None:
    """The end of an order ``question`` asks for (``True``: the highest) and the word that
    says so, when it has one comparison word (perhaps repeated); ``None`` otherwise, or when
    it qualifies it (numbers, "twice", "not", "per"): those ask more than an order.  What
    ``tool`` measures, by the words of its name, turns speed words around over a time and
    silences them over anything but a speed or a time, and silences every word over a rank."""
    measures = set(re.findall(r"[a-z]+", tool.lower()))
    if _NOT_CUES.search(question) or measures & _RANK:
        return None
    words = [w.lower() for w in _CUE_WORD.findall(question)]
    found: list[tuple[bool, str]] = []
    for i, word in enumerate(words):
        after = words[i + 1] if i + 1 < len(words) else ""
        if word in _UP_WORDS or word in _DOWN_WORDS:
            up = word in _UP_WORDS
            if word in {"more", "most", "less", "least"} and after:
                up = up != (after in _INVERSE)
                word = f"{word} {after}"  # "more populous", "most moons"
            found.append((up, word))
        elif word in _AGE_WORDS:
            found.append((_AGE_WORDS[word] if years else not _AGE_WORDS[word], word))
        elif word in _YEAR_WORDS and years:
            found.append((_YEAR_WORDS[word], word))
        elif word in _SPEED_WORDS:
            if not measures & (_SPEED | _TIME):
                return None
            found.append((_SPEED_WORDS[word] == bool(measures & _SPEED), word))
    if len({word for _, word in found}) != 1:  # none, or two ("older but smaller")
        return None
    return found[0]


def _named(entity: str, text: str) -> bool:
    words = _plain(entity)
    return bool(words) and f" {words} " in f" {_plain(text)} "


def _entities(
    calls: list[tuple[Mapping[str, object], float]],
) -> dict[str, float] | None:
    """Each call's entity (the one text argument that differs between the calls) and its
    value, or ``None`` when no single text argument tells the calls apart."""
    keys = set.intersection(*(set(args) for args, _ in calls))
    varying = [
        k
        for k in keys
        if all(isinstance(args[k], str) for args, _ in calls)
        and len({args[k] for args, _ in calls}) > 1
    ]
    if len(varying) != 1:
        return None
    values: dict[str, float] = {}
    for args, value in calls:
        values.setdefault(str(args[varying[0]]), value)
    return values


def comparison_problem(
    question: str,
    answer: str,
    measured: Iterable[tuple[str, Mapping[str, object], float]],
) -> str | None:
    """What is wrong with ``answer`` to a question that compares things one tool measured
    (``measured``: each call's tool, arguments and number), in one sentence, or ``None``.

    It speaks only where the reading is plain: one tool measured two or more things the
    question names (those it does not name are left out), the question has one comparison
    word ("taller", "cheapest"; "older" over years means the earlier), and it asks which
    one (the answer must name the one at that end) or whether the first is more than the
    second ("Is A taller than B?": yes or no must follow the two numbers)."""
    kind = expected_kind(question)
    if kind not in ("choice", "yesno") or listed_options(question):
        return None
    by_tool: dict[str, list[tuple[Mapping[str, object], float]]] = {}
    for tool, args, value in measured:
        by_tool.setdefault(tool, []).append((args, value))
    candidates = []
    for tool, calls in by_tool.items():
        values = _entities(calls) if len(calls) >= 2 else None
        named = {e: v for e, v in (values or {}).items() if _named(e, question)}
        if len(named) >= 2:
            candidates.append((tool, named))
    if len(candidates) != 1:
        return None
    tool, values = candidates[0]
    years = all(v.is_integer() and 1000 <= v <= 2100 for v in values.values())
    direction = _direction(question, tool, years)
    if direction is None:
        return None
    up, word = direction
    aged = years and word in _AGE_WORDS
    note = f" (over years, {word} means the {'later' if up else 'earlier'} year)" if aged else ""
    from ._joiner import answer_text

    shown = {e: f'{tool}("{e[:80]}") = {answer_text(v)}' for e, v in values.items()}
    if kind == "choice":
        chosen = [e for e in values if _named(e, answer)]
        if len(chosen) != 1:
            return None
        best = max(values.values()) if up else min(values.values())
        ends = [e for e, v in values.items() if v == best]
        if len(ends) != 1 or chosen[0] == ends[0]:
            return None
        end = "highest" if up else "lowest"
        return (
            f"The question asks for the {end} ({word!r}){note}: by the results "
            f"{shown[ends[0]]} is the {end}, but the answer named {chosen[0][:80]} "
            f"({shown[chosen[0]]}). Answer with the one the results point to."
        )
    text = f" {_plain(question)} "
    if " than " not in text or " or " in text or not _YES_OR_NO.match(answer):
        return None
    before, after = text.split(" than ", 1)
    first = [e for e in values if _named(e, before) and not _named(e, after)]
    second = [e for e in values if _named(e, after) and not _named(e, before)]
    if len(first) != 1 or len(second) != 1 or values[first[0]] == values[second[0]]:
        return None
    a, b = values[first[0]], values[second[0]]
    truth = a > b if up else a < b
    if _plain(answer).startswith("yes") == truth:
        return None
    return (
        f"By the results, {shown[first[0]]} and {shown[second[0]]}, so {first[0][:80]} is "
        f"{'' if truth else 'not '}{word} than {second[0][:80]}{note}: the answer is "
        f"{'yes' if truth else 'no'}."
    )
