"""Planner examples chosen per question from a bank of worked plan patterns.

A small model copies the shape of the examples it is shown: with one built-in example
(``calculate("$2 - $1")``), "how much larger is A than B" came out as ``$2 - $1`` whatever
the order, and an average of three look-ups as ``"$3 / 3"``.  So instead of one fixed
example, :class:`ExampleBank` keeps worked patterns -- signed differences both ways, ratios,
sums, averages, percent changes, extremes, comparisons and yes-or-no questions, chains where
one look-up names what the next looks up, and look-ups that must first be read from a text --
and for each question picks the ones its wording calls for (English cue words, nothing tuned
to a question set), written with the user's own tools: their names, their argument names,
and a quantity phrase taken from each tool's name.  The entities in the examples are made up
(``Amber``, ``Birch``, ``Cedar``), so no example is an answer.

The bank needs tools it can cast in the patterns' roles: look-ups (required text
arguments, the first one taking the entity; the others get made-up values the example's
question states, ``stock_count("Amber", "Elm")`` for "... (warehouse Elm)?"), and for
arithmetic a calculator (one text argument named like ``expression``) or the LLM ``math``
tool (``problem`` in words, ``context``).  A look-up whose result is a record with declared
fields (a pydantic model, dataclass, TypedDict or an MCP output schema) is never summed or
compared as a number: when the question names one of its fields, the examples select it,
``carrier_rating("$1.carrier")`` where another tool takes that field, or
``calculator("$1.weight_kg * 3")`` for a number field.  Which look-up the examples use is
the one whose name (first) and description share most words with the question, word forms
alike ("delivers", "delivery").  Tools it cannot cast get the built-in example instead
(:meth:`ExampleBank.examples` returns ``None``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._tools import BaseTool

__all__ = ["ExampleBank"]

_NAMES = ("Amber", "Birch", "Cedar")
_OTHERS = ("Elm", "Fir", "Oak", "Yew")  # made-up values of a look-up's other arguments
_NUMBER_TYPES = ("int", "float")
_EXPRESSION_ARGS = {"expression", "expr", "formula", "equation", "arithmetic", "calculation"}
_CALC_NAMES = re.compile(r"calc|arithmetic|evaluat|compute", re.I)
_TEXT_ARGS = {"query", "q", "topic", "text", "search", "question", "keywords", "term"}
_TEXT_NAMES = re.compile(r"search|encyclop|wiki|article|describe|about|summary|docs?\b", re.I)
_VERB_PREFIX = re.compile(r"^(?:get|fetch|lookup|look_up|find|read|query|show)_+", re.I)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class _Lookup:
    tool: BaseTool
    arg: str
    quantity: str  # "city population", from the tool's name
    numeric: bool | None  # its result: a number (True), text (False) or unknown (None)
    words: frozenset[str]  # of its name and description
    named: frozenset[str]  # of its name
    #: The other required (text) arguments, filled with made-up values in the examples.
    extra: tuple[str, ...] = ()
    #: A structured result's fields and their types (a record, not a number or a name).
    fields: tuple[tuple[str, str], ...] = ()

    def call(self, entity: str) -> str:
        """A call of the look-up on ``entity`` (its other arguments made up)."""
        return _call(self.tool, entity, *_OTHERS[: len(self.extra)])

    def about(self, text: str) -> str:
        """``text`` (a question ending in ``?``) saying which made-up values the other
        arguments take: ``... of Amber (warehouse Elm)?``."""
        if not self.extra:
            return text
        given = ", ".join(
            f"{a.replace('_', ' ')} {v}" for a, v in zip(self.extra, _OTHERS, strict=False)
        )
        return f"{text.rstrip('?')} ({given})?"


@dataclass(frozen=True)
class _Roles:
    lookups: tuple[_Lookup, ...]
    calc: BaseTool | None  # calculator(expression)
    math: BaseTool | None  # math(problem, context) in words
    text: BaseTool | None  # a search returning paragraphs


def _schema(tool: BaseTool) -> tuple[list[str], list[str], dict[str, Any]]:
    schema = tool.json_schema
    props: dict[str, Any] = schema.get("properties", {}) or {}
    required = [str(r) for r in schema.get("required", [])]
    return list(props), required, props


def _is_text(prop: Any) -> bool:
    return isinstance(prop, dict) and prop.get("type") == "string"


def _output_kind(schema: object) -> bool | None:
    """A result schema's kind: a number (True), text (False) or anything else (None)."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return True
    if kind == "string":
        return False
    return None


def _quantity(name: str) -> str:
    words = [w.lower() for w in _VERB_PREFIX.sub("", name).replace("-", "_").split("_") if w]
    while len(words) > 1 and words[-1] in ("of", "for", "in", "by", "from", "at", "to"):
        words.pop()
    return " ".join(words) or name


def _words(text: str, shortest: int = 3) -> frozenset[str]:
    """The words of ``text`` (lower case; ``_`` separates) of ``shortest`` letters or more."""
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) >= shortest)


def _roles(tools: Sequence[BaseTool]) -> _Roles:
    lookups: list[_Lookup] = []
    calc = math = text = None
    for tool in tools:
        if tool.side_effects:
            continue
        names, required, props = _schema(tool)
        if not names:
            continue
        first = names[0]
        if tool.name == "math" and "problem" in names:
            math = math or tool
            continue
        args = required or [first]  # bound by position: the first arguments, in order
        if args != names[: len(args)] or len(args) > len(_OTHERS) + 1:
            continue
        if not all(_is_text(props.get(a)) for a in args):
            continue
        if len(args) == 1 and (
            first.lower() in _EXPRESSION_ARGS or (_CALC_NAMES.search(tool.name) and len(names) == 1)
        ):
            calc = calc or tool
            continue
        schema = tool.output_schema
        if isinstance(schema, dict) and schema.get("type") == "null":
            continue  # it returns nothing: an action, not a look-up
        numeric = _output_kind(schema)
        fields = tuple(tool.result_fields.items())
        if (
            len(args) == 1
            and numeric is not True
            and not fields
            and (first.lower() in _TEXT_ARGS or _TEXT_NAMES.search(tool.name) is not None)
        ):
            text = text or tool
            continue
        described = f"{tool.name.replace('_', ' ')} {tool.description}"
        look = _Lookup(
            tool,
            first,
            _quantity(tool.name),
            None if fields else numeric,
            _words(described),
            _words(tool.name, 2),
            tuple(args[1:]),
            fields,
        )
        lookups.append(look)
    return _Roles(tuple(lookups), calc, math, text)


def _call(tool: BaseTool, *args: str, **kwargs: str) -> str:
    parts = [_quote(a) for a in args] + [f"{k}={_quote(v)}" for k, v in kwargs.items()]
    return f"{tool.name}({', '.join(parts)})"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Pattern:
    name: str
    cue: re.Pattern[str]
    #: (roles, the look-up to use, whether plans may name their answer) -> example or None
    build: Callable[[_Roles, _Lookup, bool], str | None]


def _numeric_plan(
    roles: _Roles,
    look: _Lookup,
    join_answer: bool,
    *,
    question: str,
    count: int,
    expression: str,
    words: str,
    thought: str,
) -> str | None:
    """Look-ups of ``count`` entities, then one arithmetic step over them."""
    if look.numeric is False or look.fields:
        return None
    lines = [f"Question: {look.about(question)}"]
    lines += [f"{i}. {look.call(_NAMES[i - 1])}" for i in range(1, count + 1)]
    lines.append(f"Thought: {thought}")
    refs = [f"${i}" for i in range(1, count + 1)]
    if roles.calc is not None:
        step = _call(roles.calc, expression)
    elif roles.math is not None:
        step = f"{roles.math.name}({_quote(words)}, context=[{', '.join(map(_quote, refs))}])"
    else:
        return None
    n = count + 1
    lines.append(f"{n}. {step}")
    lines.append(f'{n + 1}. join("${n}")' if join_answer else f"{n + 1}. join()")
    return "\n".join(lines)


def _lookups_only(look: _Lookup, *, question: str, count: int, thought: str) -> str | None:
    if look.numeric is False or look.fields:  # compared results are numbers (or unknown)
        return None
    lines = [f"Question: {look.about(question)}"]
    lines += [f"{i}. {look.call(_NAMES[i - 1])}" for i in range(1, count + 1)]
    lines.append(f"Thought: {thought}")
    lines.append(f"{count + 1}. join()")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Arithmetic:
    """A worked pattern of look-ups then one arithmetic step; ``{q}`` is the quantity."""

    question: str
    count: int  # look-ups of Amber, Birch, Cedar
    expression: str  # for a calculator
    words: str  # for the math tool
    thought: str

    def __call__(self, roles: _Roles, look: _Lookup, join_answer: bool) -> str | None:
        return _numeric_plan(
            roles,
            look,
            join_answer,
            question=self.question.format(q=look.quantity),
            count=self.count,
            expression=self.expression,
            words=self.words,
            thought=self.thought.format(q=look.quantity),
        )


_more = _Arithmetic(
    "How much larger is the {q} of Amber than the {q} of Birch?",
    2,
    "$1 - $2",
    "How much larger $1 is than $2",
    "'How much larger is Amber than Birch' is Amber's minus Birch's: $1 - $2.",
)
_less = _Arithmetic(
    "How much smaller is the {q} of Amber than that of Birch?",
    2,
    "$2 - $1",
    "How much smaller $1 is than $2",
    "'How much smaller is Amber than Birch' is Birch's minus Amber's: $2 - $1.",
)
_ratio = _Arithmetic(
    "How many times the {q} of Birch is the {q} of Amber?",
    2,
    "$1 / $2",
    "$1 divided by $2",
    "Amber's divided by Birch's: the one asked about over the one it is compared with.",
)
_total = _Arithmetic(
    "What is the combined {q} of Amber, Birch and Cedar?",
    3,
    "$1 + $2 + $3",
    "The sum of $1, $2 and $3",
    "The total adds all three results.",
)
_average = _Arithmetic(
    "What is the average {q} of Amber, Birch and Cedar?",
    3,
    "($1 + $2 + $3) / 3",
    "The average of $1, $2 and $3",
    "An average adds all three results and divides by how many there are.",
)
_times = _Arithmetic(
    "What is the {q} of 4 Ambers?",
    1,
    "$1 * 4",
    "4 times $1",
    "$1 is the {q} of one Amber; 4 of them is 4 times that: $1 * 4.",
)
_percent = _Arithmetic(
    "What would the {q} of Amber be if it grew by 15%?",
    1,
    "$1 * (1 + 0.15)",
    "$1 increased by 15%",
    "Growing by 15% multiplies it by 1 + 0.15.",
)
_percent_down = _Arithmetic(
    "What would the {q} of Amber be if it fell by 15%?",
    1,
    "$1 * (1 - 0.15)",
    "$1 reduced by 15%",
    "Falling by 15% multiplies it by 1 - 0.15.",
)


def _extreme(roles: _Roles, look: _Lookup, join_answer: bool) -> str | None:
    q = look.quantity
    return _lookups_only(
        look,
        question=f"Which of Amber, Birch and Cedar has the highest {q}?",
        count=3,
        thought="All three are needed; the answer is the name whose result is highest.",
    )


def _compare(roles: _Roles, look: _Lookup, join_answer: bool) -> str | None:
    q = look.quantity
    return _lookups_only(
        look,
        question=f"Is the {q} of Amber greater than that of Birch?",
        count=2,
        thought="Both results are needed; the answer compares them: yes or no.",
    )


def _chain(roles: _Roles, look: _Lookup, join_answer: bool) -> str | None:
    """A look-up whose result names the entity the next look-up takes."""
    namers = [x for x in roles.lookups if x.numeric is False and not x.extra and x is not look]
    if not namers or look.numeric is False or look.fields:
        return None
    namer = namers[0]
    return _two_steps(
        look.about(f"What is the {look.quantity} of the {namer.quantity} of Amber?"),
        namer.call("Amber"),
        f"{namer.tool.name} gives a name; that name is what {look.tool.name} takes.",
        look.call("$1"),
        join_answer,
    )


def _two_steps(question: str, first: str, thought: str, second: str, join_answer: bool) -> str:
    """A worked plan of two calls, the second on the first's result, then the join."""
    join = '3. join("$2")' if join_answer else "3. join()"
    return "\n".join(
        [f"Question: {question}", f"1. {first}", f"Thought: {thought}", f"2. {second}", join]
    )


def _read_first(roles: _Roles, look: _Lookup, join_answer: bool) -> str | None:
    """The entity must be read from a text first: search, and let the next plan continue."""
    if roles.text is None:
        return None
    search = roles.text
    question = f"What is the {look.quantity} of Amber's neighbour?"
    lines = [
        f"Question: {look.about(question)}",
        f"1. {_call(search, 'Amber')}",
        "Thought: Who the neighbour is must be read from the text of $1 first, so the plan "
        f"stops here; the next plan calls {look.tool.name} with that name.",
        "2. join()",
    ]
    return "\n".join(lines)


def _alike(x: str, y: str) -> bool:
    """The same word, or two forms of one: they share all but the last letter of the
    shorter, four letters at least ("weigh" and "weight", "delivers" and "delivery")."""
    if x == y:
        return True
    shortest = min(len(x), len(y))
    if shortest < 4:
        return False
    common = next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), shortest)
    return common >= max(4, shortest - 1)


def _matches(words: frozenset[str], other: frozenset[str]) -> int:
    """How many of ``words`` have a like word in ``other``."""
    return sum(1 for w in words if any(_alike(w, o) for o in other))


def _field_chain(roles: _Roles, record: _Lookup, field: str, join_answer: bool) -> str | None:
    """A record's field is what the next look-up takes: ``R("Amber")``, ``L("$1.field")``."""
    words = _words(field, 2)
    takers = [
        x
        for x in roles.lookups
        if x is not record and not x.fields and _matches(words, _words(x.arg, 2))
    ]
    if not takers or record.extra:
        return None
    then = takers[0]
    named = field.replace("_", " ")
    return _two_steps(
        then.about(f"What is the {then.quantity} of the {named} of Amber?"),
        record.call("Amber"),
        f"{record.tool.name} gives a record; its {field} field, $1.{field}, is what "
        f"{then.tool.name} takes.",
        then.call(f"$1.{field}"),
        join_answer,
    )


def _field_math(roles: _Roles, record: _Lookup, field: str, join_answer: bool) -> str | None:
    """Arithmetic on a number field of a record: ``calculator("$1.field * 3")``."""
    kind = dict(record.fields).get(field)
    if kind not in _NUMBER_TYPES or record.extra:
        return None
    named = field.replace("_", " ")
    if roles.calc is not None:
        step = _call(roles.calc, f"$1.{field} * 3")
    elif roles.math is not None:
        step = f'{roles.math.name}({_quote(f"3 times the {named}")}, context=["$1.{field}"])'
    else:
        return None
    return _two_steps(
        f"What is 3 times the {named} of Amber?",
        record.call("Amber"),
        f"The {named} is the {field} field of the record: $1.{field}.",
        step,
        join_answer,
    )


def _field_read(roles: _Roles, record: _Lookup, field: str, join_answer: bool) -> str | None:
    """A question that asks for one field of a record: look it up, the joiner reads it."""
    if record.extra:
        return None
    named = field.replace("_", " ")
    lines = [
        f"Question: What is the {named} of Amber?",
        f"1. {record.call('Amber')}",
        f"Thought: The answer is the {field} field of the record $1, as it stands.",
        "2. join()",
    ]
    return "\n".join(lines)


#: The patterns that do arithmetic on what they look up.
_ARITHMETIC = frozenset(
    {"less", "more", "ratio", "average", "times", "total", "percent", "percent_down"}
)


def _asked_fields(question: str, roles: _Roles) -> list[tuple[_Lookup, str]]:
    """Each (record look-up, field) whose field the question names."""
    words = _words(question)
    return [
        (look, name)
        for look in roles.lookups
        for name, _ in look.fields
        if _matches(words, _words(name, 2))
    ]


# "the X of the Y of Z", "the star that X orbits": a thing named through another; both the
# chain through a name-giving tool and the read-it-from-a-text pattern answer to it.
_NESTED = re.compile(
    r"\bthe \w+(?: \w+)? of the \w+(?: \w+)? (?:of|that|which|who|where)\b|"
    r"\bof (?:its|their|his|her)\b|\bthe \w+ (?:that|which|who|where) \w+",
    re.I,
)
_PATTERNS = (
    _Pattern(
        "less",
        re.compile(
            r"how (?:much|many) (?:less|smaller|lower|shorter|lighter|younger|fewer|colder|"
            r"cheaper|narrower|shallower|slower|closer|nearer|earlier)\b|\bfewer\b",
            re.I,
        ),
        _less,
    ),
    _Pattern(
        "more",
        re.compile(
            r"how (?:much|many) (?:\w+ )?(?:more|larger|bigger|greater|higher|taller|longer|"
            r"heavier|older|further|farther|hotter|warmer|wider|deeper|faster|later|"
            r"costlier)\b|difference|\bexceed|\bby how much\b|\bmore than\b",
            re.I,
        ),
        _more,
    ),
    _Pattern("ratio", re.compile(r"how many times|\bratio\b|\btimes (?:as|the)\b", re.I), _ratio),
    _Pattern("average", re.compile(r"\baverage\b|\bmean\b", re.I), _average),
    _Pattern(  # a count of things: "what do 4 kettles cost", "the weight of 3 stoves"
        "times",
        re.compile(
            r"\b(?:do|does|did|would|will|of|for|buy|buying|sell|selling|ship|shipping|with|"
            r"costs?|are|is)\s+(?:[2-9]|[1-9]\d{1,2})\s+(?!%|percent|per\b|times\b)[a-z]{3,}",
            re.I,
        ),
        _times,
    ),
    _Pattern(
        "total",
        re.compile(r"\btotal\b|\bcombined\b|\btogether\b|\bsum\b|\baltogether\b|\bin all\b", re.I),
        _total,
    ),
    _Pattern(
        "percent_down",
        re.compile(
            r"(?=.*(?:\d\s*%|\bpercent|\bper cent))(?=.*\b(?:fell|fall|falls|drop|decreas|"
            r"reduc|shr[iu]nk|less|lower|smaller|shorter|cut|lost|lose|declin|shallower|"
            r"slower|cheaper|discount))",
            re.I | re.S,
        ),
        _percent_down,
    ),
    _Pattern(
        "percent",
        re.compile(r"\d\s*%|\bpercent|\bper cent|\bhalf\b|\bdoubl|\btripl", re.I),
        _percent,
    ),
    _Pattern(
        "chain",
        _NESTED,
        _chain,
    ),
    _Pattern(
        "read_first",
        _NESTED,
        _read_first,
    ),
    _Pattern(
        "extreme",
        re.compile(
            r"^\W*which (?:of|one)\b|\b(?:highest|lowest|most|least|largest|smallest|biggest|"
            r"tallest|shortest|oldest|youngest|greatest|longest|heaviest|lightest|hottest|"
            r"coldest|fastest|slowest)\b",
            re.I,
        ),
        _extreme,
    ),
    _Pattern(
        "compare",
        re.compile(
            r"^\W*(?:is|are|was|were|does|do|did|has|have|had|can)\b|^\W*(?:which|who)\b|"
            r"\bthan\b|\bor\b[^?]*\?\s*$",
            re.I,
        ),
        _compare,
    ),
)
_DEFAULTS = ("more", "compare")


class ExampleBank:
    """Chooses planner examples for each question from worked plan patterns (see the
    module's docstring), written with the question's own tools.

    ``per_question`` examples at most (each is a few dozen tokens of prompt: on a small local
    model prefill is most of a question's time).  :meth:`examples` returns the examples'
    text, or ``None`` when the tools cannot be cast in the patterns (then the planner uses
    its built-in example).
    """

    def __init__(self, per_question: int = 2) -> None:
        if per_question < 1:
            raise ValueError("per_question must be at least 1")
        self.per_question = per_question
        self._roles: dict[tuple[BaseTool, ...], _Roles] = {}

    def roles(self, tools: Sequence[BaseTool]) -> _Roles:
        key = tuple(tools)
        found = self._roles.get(key)
        if found is None:
            found = self._roles[key] = _roles(tools)
        return found

    def patterns(self, question: str) -> list[str]:
        """The names of the patterns ``question``'s wording calls for, most specific first."""
        chosen = [p.name for p in _PATTERNS if p.cue.search(question)]
        if "ratio" in chosen and "more" in chosen:
            chosen.remove("more")  # "how many times longer": a ratio, not a difference
        if "less" in chosen and "more" in chosen:
            chosen.remove("more")  # "how many fewer ... than": the cue of "less" is the sharper
        if "percent_down" in chosen and "percent" in chosen:
            chosen.remove("percent")
        if "percent_down" in chosen and "less" in chosen:
            chosen.remove("less")  # "if it were 20% smaller": a change, not a difference
        return chosen

    def examples(
        self, question: str, tools: Sequence[BaseTool], *, join_answer: bool = False
    ) -> str | None:
        """The examples for ``question`` with ``tools``, or ``None`` (use the built-in one)."""
        roles = self.roles(tools)
        if not roles.lookups:
            return None
        look = self._lookup_for(question, roles)
        wanted = self.patterns(question)
        arithmetic = not _ARITHMETIC.isdisjoint(wanted)
        wanted += [d for d in _DEFAULTS if d not in wanted]
        by_name = {p.name: p for p in _PATTERNS}
        texts: list[str] = []
        for record, field in _asked_fields(question, roles):  # the most specific first
            reading = _field_math if arithmetic else _field_read
            text = _field_chain(roles, record, field, join_answer) or reading(
                roles, record, field, join_answer
            )
            if text is not None and text not in texts and len(texts) < self.per_question:
                texts.append(text)
        for name in wanted:
            if len(texts) == self.per_question:
                break
            text = by_name[name].build(roles, look, join_answer)
            if text is not None and text not in texts:
                texts.append(text)
            if len(texts) == self.per_question:
                break
        if not texts:
            return None
        header = (
            "Examples of the format, with your tools and made-up names (Amber, Birch, "
            "Cedar): in your plans use the names the question gives."
        )
        return "\n\n".join([header, *(t + "\n<END_OF_PLAN>" for t in texts)])

    @staticmethod
    def _lookup_for(question: str, roles: _Roles) -> _Lookup:
        """The look-up whose name and description share most words with the question (a
        number look-up first when the question asks for a number; a record only when there
        is nothing else)."""
        words = _words(question)

        def rank(look: _Lookup) -> tuple[int, bool]:
            # the tool's name says what it looks up; its description may list many things
            score = 3 * _matches(words, look.named) + _matches(words, look.words)
            return (score, look.numeric is True)

        plain = [look for look in roles.lookups if not look.fields]
        return max(plain or roles.lookups, key=rank)
