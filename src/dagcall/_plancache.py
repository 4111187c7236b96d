"""Plan reuse: a cache of plans keyed by the question's shape (after "Agentic Plan Caching",
arXiv 2506.14852).

A finished run teaches the cache its question and first plan.  The *entities* are the plan's
string arguments that appear in the question word for word (``"Eiffel Tower"`` in "How tall
is the Eiffel Tower?"); replacing them by slots gives a question template and a plan
template.  A new question then:

* **matches a template exactly** up to those literals ("How tall is the Burj Khalifa?"): the
  plan is instantiated with the new entities and runs without a planner call, provided it
  parses over the compiler's tools, every entity is plain text (no quotes, backslashes, ``$``
  or line breaks, so nothing can be smuggled into the plan) of at most two words more than
  the one it replaces, and no other argument of the plan holds words of the question (a plan
  with ``search("height of Eiffel Tower")`` is kept as an example only);
* **resembles** a stored question (the same words, by Jaccard similarity, at least
  ``min_similarity``): the planner is given that question and its plan as its example;
* or neither: the planner plans as usual.

Off by default (``Compiler(plan_cache=PlanCache())`` turns it on); each round says what it
used (``Round.plan_cache``: ``"exact"`` or ``"example"``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from ._errors import UsageError
from ._plan import TaskSpec, parse_plan

__all__ = ["PlanCache", "PlanHit"]

_WORD = re.compile(r"\w+")
_SLOT = "\x00{}\x00"
_UNSAFE = re.compile(r"[\"'\\$\n\r`{}]")


@dataclass(frozen=True)
class PlanHit:
    """What the cache has for a question: an ``exact`` plan to run as it is, or an
    ``example`` (a stored question and its plan) for the planner."""

    kind: Literal["exact", "example"]
    plan: str  # the instantiated plan (exact) or the stored plan (example)
    question: str  # the stored question it came from
    similarity: float = 1.0

    @property
    def example(self) -> str:
        """The stored question and plan as a planner example."""
        return f"Example:\nQuestion: {self.question}\n{self.plan.rstrip()}\n<END_OF_PLAN>"


@dataclass(frozen=True)
class _Entry:
    question: str
    plan: str
    pattern: re.Pattern[str] | None  # the question's template, slots as groups
    template: str  # the plan with slots where the entities were
    slots: tuple[int, ...]  # each entity's number of words
    words: frozenset[str]
    tools: frozenset[str]


class PlanCache:
    """Plans of earlier questions, for questions of the same shape (see the module's text).

    ``max_entries`` bounds what it keeps (least recently used go first); ``min_similarity``
    is how alike a question must be to get a stored plan as its example (``1.0``: never).
    Safe to share between the runs of one process.
    """

    def __init__(self, *, max_entries: int = 1000, min_similarity: float = 0.5) -> None:
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise UsageError("PlanCache(max_entries=...) must be a positive int")
        if not 0.0 <= min_similarity <= 1.0:
            raise UsageError("PlanCache(min_similarity=...) must be between 0 and 1")
        self.max_entries = max_entries
        self.min_similarity = min_similarity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.exact_hits = 0
        self.example_hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- learning ------------------------------------------------------------------------------
    def learn(self, question: str, plan: str, tools: Collection[str]) -> bool:
        """Keep ``plan`` (the text the planner wrote) for questions shaped like ``question``;
        whether it was kept (a plan that does not parse cleanly over ``tools`` is not)."""
        items, parser = parse_plan(plan, tools)
        tasks = [i for i in items if isinstance(i, TaskSpec)]
        if not tasks or len(tasks) != len(items) or not parser.join_seen:
            return False
        text = "\n".join(
            [*(f"{t.id}. {t.call}" for t in tasks), _join_line(len(tasks) + 1, parser)]
        )
        entities = _entities(question, tasks)
        template, pattern = text, None
        if entities and not _leftovers(question, tasks, entities):
            template = text
            for n, entity in enumerate(entities):
                template = template.replace(f'"{entity}"', '"' + _SLOT.format(n) + '"')
                template = template.replace(f"'{entity}'", "'" + _SLOT.format(n) + "'")
            pattern = _question_pattern(question, entities)
        entry = _Entry(
            question=question,
            plan=text,
            pattern=pattern,
            template=template,
            slots=tuple(len(e.split()) for e in entities) if pattern is not None else (),
            words=frozenset(_WORD.findall(question.lower())),
            tools=frozenset(t.tool for t in tasks),
        )
        with self._lock:
            self._entries.pop(question, None)
            self._entries[question] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return True

    # -- looking up ----------------------------------------------------------------------------
    def lookup(self, question: str, tools: Collection[str]) -> PlanHit | None:
        """The cache's plan for ``question`` over ``tools``, or ``None``."""
        with self._lock:
            entries = list(reversed(self._entries.values()))  # the most recent first
        known = set(tools)
        usable = [e for e in entries if e.tools <= known]
        # the most specific template first: the one with the most words of its own
        usable.sort(key=lambda e: -len(e.words))
        for entry in usable:
            plan = _instantiate(entry, question)
            if plan is not None and _parses(plan, known):
                with self._lock:
                    self.exact_hits += 1
                    self._entries.move_to_end(entry.question)
                return PlanHit("exact", plan, entry.question)
        words = frozenset(_WORD.findall(question.lower()))
        best: tuple[float, _Entry] | None = None
        for entry in usable:
            union = len(words | entry.words)
            similarity = len(words & entry.words) / union if union else 0.0
            if best is None or similarity > best[0]:
                best = (similarity, entry)
        if best is not None and best[0] >= self.min_similarity:
            with self._lock:
                self.example_hits += 1
            return PlanHit("example", best[1].plan, best[1].question, best[0])
        with self._lock:
            self.misses += 1
        return None

    def stats(self) -> dict[str, int]:
        """Hits and misses so far."""
        return {
            "entries": len(self._entries),
            "exact_hits": self.exact_hits,
            "example_hits": self.example_hits,
            "misses": self.misses,
        }


def _join_line(number: int, parser: object) -> str:
    target = getattr(parser, "join_target", None)
    return f'{number}. join("${target}")' if target is not None else f"{number}. join()"


def _entities(question: str, tasks: Iterable[TaskSpec]) -> list[str]:
    """The plan's string arguments found in the question, in the question's order."""
    lowered = question.lower()
    found: dict[str, int] = {}
    for task in tasks:
        for value in [*task.args, *task.kwargs.values()]:
            if not isinstance(value, str) or not value.strip() or "$" in value:
                continue
            at = lowered.find(value.lower())
            if at >= 0 and not _UNSAFE.search(value) and value not in found:
                found[value] = at
    # a literal inside a longer one ("Paris" in "Paris, Texas") is part of that one
    kept = [e for e in found if not any(e != o and e.lower() in o.lower() for o in found)]
    return sorted(kept, key=lambda e: found[e])


def _leftovers(question: str, tasks: Iterable[TaskSpec], entities: list[str]) -> bool:
    """Whether a string argument other than the entities has words of the question in it
    ("height of Eiffel Tower"): then the plan would not fit another entity, and is kept as an
    example only."""
    words = {w for w in _WORD.findall(question.lower()) if len(w) > 2}
    chosen = {e.lower() for e in entities}
    for task in tasks:
        for value in [*task.args, *task.kwargs.values()]:
            if not isinstance(value, str) or value.lower() in chosen:
                continue
            if any(w in words for w in _WORD.findall(value.lower()) if not w.isdigit()):
                return True
    return False


def _question_pattern(question: str, entities: list[str]) -> re.Pattern[str] | None:
    """The question with each entity as a capturing group; ``None`` when two overlap."""
    spans: list[tuple[int, int, int]] = []
    lowered = question.lower()
    for n, entity in enumerate(entities):
        at = lowered.find(entity.lower())
        spans.append((at, at + len(entity), n))
    spans.sort()
    parts: list[str] = []
    end = 0
    for start, stop, n in spans:
        if start < end:
            return None
        parts.append(re.escape(_normal(question[end:start])))
        parts.append(f"(?P<s{n}>.+?)")
        end = stop
    parts.append(re.escape(_normal(question[end:])))
    return re.compile("^" + "".join(parts) + "$", re.I | re.S)


def _normal(text: str) -> str:
    """Runs of white space as one space (the edges kept, so words stay apart)."""
    return re.sub(r"\s+", " ", text)


def _instantiate(entry: _Entry, question: str) -> str | None:
    """The entry's plan for ``question`` when the question has the entry's shape."""
    if entry.pattern is None:
        return entry.plan if _normal(question).lower() == _normal(entry.question).lower() else None
    match = entry.pattern.match(_normal(question))
    if match is None:
        return None
    plan = entry.template
    for n, words in enumerate(entry.slots):
        value = match.group(f"s{n}").strip()
        if not value or _UNSAFE.search(value) or len(value) > 200:
            return None
        if len(value.split()) > words + 2:  # more than a name: the question says more
            return None
        plan = plan.replace(_SLOT.format(n), value)
    return plan


def _parses(plan: str, tools: Collection[str]) -> bool:
    items, parser = parse_plan(plan, tools)
    return bool(items) and all(isinstance(i, TaskSpec) for i in items) and parser.join_seen
