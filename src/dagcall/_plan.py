"""The plan language and its streaming parser.

A plan is a sequence of lines::

    Thought: the two look-ups are independent.
    1. search("Apple market cap")
    2. search(query="Microsoft market cap")
    3. math("$1 - $2", context=["$1", "$2"])
    4. join()
    <END_OF_PLAN>

Arguments are Python literals (parsed with :mod:`ast`, never evaluated).  ``$N`` and ``${N}``
name the result of task N:

* a string that is exactly one reference (``"$1"``, ``"${1}"`` or a bare ``$1``) passes the
  result object itself, type intact;
* inside a longer string the result's text is spliced in;
* ``${N}`` always means a reference, so it must name an earlier task; a bare ``$N`` inside text
  is a reference only when task N came earlier in the plan (or an earlier round), so
  ``"costs $5 billion"`` stays text when task 5 does not precede it; ``$1.5`` and ``$1,000``
  are money, not references.

Field access: a reference may select inside a typed result, ``$N.field``, ``$N["key"]``,
``$N[0]`` (``$N[-1]`` counts from the end), chained as in ``$2.items[0].name``; in a string
(``"population of $1.city"``) as well as a whole argument, which passes the selected value
with its type.  A ``.`` selects only when a letter or ``_`` follows it, so ``"$1."`` ending a
sentence, ``"$1. Then"`` and ``"$1.5"`` stay a plain ``$1`` and text.  What may be selected
(checked when the task is dispatched, never with ``getattr`` on arbitrary objects or
``eval``): the keys of dicts and other mappings (MCP structured content), the items of lists
and tuples, the fields of pydantic models and of dataclasses.  A selection that does not
exist is the task's :class:`~dagcall.ToolArgumentError` (see :func:`select`).

The parser is fed the model's stream chunk by chunk and returns each task as soon as its line is
complete; its output does not depend on how the stream was split, for lines of any length.

Line limit.  A line longer than ``max_line_chars`` characters (default
:data:`DEFAULT_MAX_LINE_CHARS`, the newline not counted), and a task whose text over several
lines (newlines counted) grows past it, is dropped and reported as one
:class:`~dagcall.PlanSyntaxError` that names the limit and carries the task id when the text is
a task.  While such a line streams in, the parser keeps at most ``max_line_chars + 13`` of its
characters and counts the rest; the continuation lines of a dropped task (lines that do not
start a task, a ``Thought:``, ``join()`` or a ```` ``` ```` fence) are dropped with it.  ``text``
holds a one-line note in place of what was dropped.  Feeding costs time linear in the text.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import re
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._errors import (
    BadReferenceError,
    DagcallError,
    DuplicateTaskError,
    PlanError,
    PlanSyntaxError,
    UnknownToolError,
    UsageError,
)

__all__ = [
    "DEFAULT_MAX_LINE_CHARS",
    "END_OF_PLAN",
    "MAX_PATH",
    "PlanParser",
    "Ref",
    "SelectionError",
    "TaskSpec",
    "Template",
    "parse_plan",
    "path_text",
    "record_fields",
    "select",
]

END_OF_PLAN = "<END_OF_PLAN>"
DEFAULT_MAX_LINE_CHARS = 1_000_000
"""The default longest plan line (and longest task text), in characters."""

_TASK_LINE = re.compile(r"^\s*(?:[-*]\s+)?(?:\*\*)?(\d+)(?:\*\*)?\s*\.\s*(.*)$", re.S)
_THOUGHT_LINE = re.compile(r"^\s*(?:\*\*)?thought(?:\*\*)?\s*:\s*(.*)$", re.I | re.S)
_CALL_LIKE = re.compile(r"^\s*[A-Za-z_]\w*\s*\(")
# ``join()``, or ``join("$M")`` naming the task whose result is the answer (also unquoted).
_JOIN = re.compile(r"""^\s*join\s*\(\s*(?:(["']?)\$(\d{1,18})\1\s*)?\)\s*;?\s*(?:\#.*)?$""", re.X)
# Any other ``join(...)`` line (``join($1, $2)``, ``join("$1.x")``): the plan's end, naming no
# answer, so the joiner reads every result.
_JOIN_LOOSE = re.compile(r"^\s*join\s*\(.{0,200}\)\s*;?\s*(?:#.*)?$", re.S)
_JOIN_START = re.compile(r"""^\s*join\s*\(\s*(?:(["']?)\$\d{1,18}\1\s*)?\)""")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# One selection after a reference: ``.name`` (an identifier: letters, digits and ``_``, not
# starting with a digit, so "$1." ending a sentence and money like "$1.5" select nothing),
# ``[3]`` / ``[-1]`` (an index), ``["key"]`` / ``['key']`` (a key).
_ACCESSOR = r"""(?:\.[^\W\d]\w*|\[-?\d+\]|\["(?:[^"\\\n]|\\.)*"\]|\['(?:[^'\\\n]|\\.)*'\])"""
_PATH = rf"((?:{_ACCESSOR})*)"
_ONE_ACCESSOR = re.compile(
    r"""\.([^\W\d]\w*)|\[(-?\d+)\]|\[("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')\]"""
)
_IDENTIFIER = re.compile(r"[^\W\d]\w*")
_WHOLE_REF = re.compile(rf"^\s*\$(?:\{{(\d+)\}}|(\d+)){_PATH}\s*$")
_INNER_REF = re.compile(rf"\$\{{(\d+)\}}{_PATH}|\$(\d+)(?!\d)(?![.,]\d){_PATH}")
_BARE_REF = re.compile(rf"\$(?:\{{(\d+)\}}|(\d+)){_PATH}")
#: Most selections after one reference (``$1.a.b[0]`` has three).
MAX_PATH = 32
#: Most digits of an index in ``$N[i]``.
_MAX_INDEX_DIGITS = 18
_UNFINISHED = re.compile(r"was never closed|unexpected EOF|unterminated triple-quoted")
_HELD = len(END_OF_PLAN) - 1  # a line's last characters that may be the start of the marker
_HEAD = 200  # characters of a dropped line kept in its error and in ``text``
_CLIP = 300  # plan text quoted in an error message is cut to this many characters
_MAX_NESTING = 200  # Python's tokenizer refuses deeper bracket nesting


@dataclass(frozen=True, slots=True)
class Ref:
    """The result of task ``task_id``, or the part of it that ``path`` selects.

    ``path`` is the plan's selections in order: a ``str`` for ``.name`` or ``["key"]``, an
    ``int`` for ``[i]``; ``()`` for the whole result.  ``str(ref)`` is the plan's spelling,
    ``$2.items[0].name``.  The deps of a task are the ``task_id`` of its references.
    """

    task_id: int
    path: tuple[str | int, ...] = ()

    def __str__(self) -> str:
        return f"${self.task_id}{path_text(self.path)}"


def path_text(path: Iterable[str | int]) -> str:
    """A selection path as the plan writes it: ``.name``, ``[0]``, ``["a b"]``."""
    out: list[str] = []
    for step in path:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _IDENTIFIER.fullmatch(step):
            out.append(f".{step}")
        else:
            out.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Template:
    """A string with results spliced in: text pieces and :class:`Ref` pieces."""

    parts: tuple[str | Ref, ...]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One parsed task: what to call with which (unresolved) arguments."""

    id: int
    tool: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    deps: frozenset[int]
    call: str
    raw_args: tuple[Any, ...] = ()
    raw_kwargs: dict[str, Any] = field(default_factory=dict)
    thought: str | None = None


PlanItem = TaskSpec | PlanError


@dataclass(slots=True)
class _Dropped:
    """A stretch of plan text being discarded for its length."""

    head: str  # the first characters of the first dropped line
    chars: int  # characters dropped so far, newlines included
    task: bool  # a task's text: its continuation lines are dropped too


class PlanParser:
    """Incremental parser of a streamed plan.

    ``feed`` takes each chunk and returns the tasks (and plan errors) completed by it; ``close``
    ends the stream.  ``tools`` are the callable tool names; ``prior_ids`` are the tasks of
    earlier rounds that this plan may refer to.  After ``join()`` or ``<END_OF_PLAN>`` the
    parser is ``finished`` and ignores further input.

    ``max_line_chars`` bounds a line, and the text of a task written over several lines; longer
    text is dropped and reported as one :class:`~dagcall.PlanSyntaxError` naming the limit (see
    the module docstring).  Memory stays bounded by about twice the limit however long a line
    streams.  ``text`` is the plan as read, up to where the parser finished, with a short note
    in place of dropped text.

    A task is parsed when its first line ends and then, while its call is still open over
    several lines, at each later line that closes its brackets and strings; a call that never
    closes is judged when the next task, ``Thought:``, ``join()`` or fence line, or the end of
    the stream, ends it.
    """

    DEFAULT_MAX_LINE_CHARS: ClassVar[int] = DEFAULT_MAX_LINE_CHARS

    def __init__(
        self,
        tools: Collection[str],
        *,
        prior_ids: Iterable[int] = (),
        max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    ) -> None:
        if (
            isinstance(max_line_chars, bool)
            or not isinstance(max_line_chars, int)
            or max_line_chars < 1
        ):
            raise UsageError(f"max_line_chars must be a positive int, not {max_line_chars!r}")
        self.max_line_chars = max_line_chars
        self._tools = frozenset(tools)
        self._seen: set[int] = set(prior_ids)
        self._parts: list[str] = []  # the current line so far
        self._size = 0  # its length
        self._tail = ""  # its last characters, to find END_OF_PLAN split across chunks
        self._drop: _Dropped | None = None  # text being dropped for its length
        self._long: _Dropped | None = None  # the same, while the current line is over-long
        self._pending: list[str] = []  # the lines of a task whose call is still open
        self._pending_size = 0  # len("\n".join(self._pending))
        self._scan = _Scan()
        self._missed = 0  # pending size when a closed-looking call still did not parse
        self._thought: list[str] = []
        self._text: list[str] = []
        self.finished = False
        self.join_seen = False
        #: The task named by ``join("$M")`` as the answer, or ``None`` (``join()``).
        self.join_target: int | None = None
        self.ignored: list[str] = []
        self.trailing_thought: str | None = None
        self.unfinished = ""

    @property
    def text(self) -> str:
        """The plan text read so far (dropped stretches replaced by a one-line note)."""
        if len(self._text) > 1:
            self._text[:] = ["".join(self._text)]
        return self._text[0] if self._text else ""

    # -- streaming -------------------------------------------------------------------------
    def feed(self, chunk: str) -> list[PlanItem]:
        """Add a chunk of the stream; return the items whose lines it completed."""
        if self.finished or not chunk:
            return []
        out: list[PlanItem] = []
        # The marker has no newline, so it lies within the current line: it either starts in
        # the line's held tail and ends in this chunk, or lies inside this chunk.
        early = (self._tail + chunk[:_HELD]).find(END_OF_PLAN)
        if early >= 0:
            self._take_back(len(self._tail) - early)
        else:
            at = chunk.find(END_OF_PLAN)
            self._consume(chunk, len(chunk) if at < 0 else at, out)
            if at < 0:
                return out
        if not self.finished:
            self._end_of_stream(out)
        return out

    def close(self, *, complete: bool = True) -> list[PlanItem]:
        """End of stream: parse what is left and report anything unfinished.

        With ``complete=False`` (the stream was cut by an error) a last line without its
        newline, or a call still open over several lines, is dropped rather than judged: the
        model never finished writing it.  It is kept in ``unfinished``.
        """
        if self.finished:
            return []
        out: list[PlanItem] = []
        if complete:
            self._end_of_stream(out)
            return out
        if self._long is not None:
            self._end_line("", out)  # already reported when it grew past the limit
            rest = ""
        else:
            rest = "".join(self._parts)
            self._parts, self._size, self._tail = [], 0, ""
            if self._drop is not None and not self._starts_new(rest):
                self._drop.chars += len(rest)
                rest = ""
        if self._drop is not None:
            self._end_drop()
        self._text.append(rest)
        self.unfinished = "\n".join([*self._pending, rest]).strip()
        self._pending = []
        self._finish(out)
        return out

    def _consume(self, chunk: str, stop: int, out: list[PlanItem]) -> None:
        pos = 0
        while pos < stop and not self.finished:
            nl = chunk.find("\n", pos, stop)
            end = stop if nl < 0 else nl
            if end > pos:
                self._receive(chunk, pos, end, out)
            if nl < 0:
                return
            self._end_line("\n", out)
            pos = nl + 1

    def _receive(self, chunk: str, start: int, end: int, out: list[PlanItem]) -> None:
        """Add ``chunk[start:end]`` (no newline in it) to the current line."""
        n = end - start
        self._tail = (self._tail + chunk[max(start, end - _HELD) : end])[-_HELD:]
        if self._long is not None:
            self._long.chars += n
            return
        limit = self.max_line_chars
        if self._size + n <= limit + _HELD:
            self._parts.append(chunk[start:end])
            self._size += n
            return
        # Longer than the limit whatever follows (at most _HELD characters can still turn out
        # to be the end marker): keep the first limit + 1 characters to classify it, count the
        # rest.
        keep = limit + 1 - self._size
        if keep > 0:
            self._parts.append(chunk[start : start + keep])
        prefix = "".join(self._parts)[: limit + 1]
        total = self._size + n
        self._parts, self._size = [], 0
        self._long = self._long_line(prefix, total, out)

    def _take_back(self, k: int) -> None:
        """Forget the current line's last ``k`` characters: they begin the end marker."""
        if k <= 0:
            return
        if self._long is not None:
            self._long.chars -= k
        else:
            line = "".join(self._parts)[:-k]
            self._parts, self._size = ([line] if line else []), len(line)
        self._tail = self._tail[:-k]

    def _end_line(self, nl: str, out: list[PlanItem]) -> None:
        """The current line is complete (``nl`` is its newline, "" at the end of the stream)."""
        self._tail = ""
        long = self._long
        if long is None:
            line = "".join(self._parts)
            self._parts, self._size = [], 0
            if len(line) <= self.max_line_chars:
                self._line(line, nl, out)
                return
            long = self._long_line(line[: self.max_line_chars + 1], len(line), out)
        self._long = None
        long.chars += len(nl)
        if not long.task:
            self._end_drop()

    def _end_of_stream(self, out: list[PlanItem]) -> None:
        if self._parts or self._long is not None:
            self._end_line("", out)
        if self._drop is not None:
            self._end_drop()
        self._finish(out)

    def _join(self, match: re.Match[str] | None) -> None:
        self.join_seen = True
        if match is not None and match.group(2) is not None:
            self.join_target = int(match.group(2))

    def _finish(self, out: list[PlanItem]) -> None:
        if not self.finished:
            self._flush_pending(out)
            self.finished = True
        if self._thought:
            self.trailing_thought = " ".join(self._thought)
            self._thought = []

    # -- over-long text --------------------------------------------------------------------
    def _long_line(self, prefix: str, total: int, out: list[PlanItem]) -> _Dropped:
        """A line of ``total`` characters, more than the limit, beginning with ``prefix``.

        What it is (a task, a continuation of the open task, a thought...) is read from its
        first ``max_line_chars + 1`` characters, so the verdict does not depend on the split.
        Returns the drop that counts the rest of the line.
        """
        task = _TASK_LINE.match(prefix)
        boundary = self._starts_new(prefix) or bool(_JOIN_START.match(prefix))
        if self._drop is not None:
            if not boundary:  # more of a task already dropped and reported
                self._drop.chars += total
                return self._drop
            self._end_drop()
        drop = self._drop = _Dropped(prefix[:_HEAD], total, task=True)
        if self._pending and not boundary:
            out.append(self._too_long(self._pending_id(), self._pending[0]))
            self._pending = []
            return drop
        self._flush_pending(out)
        if task:
            out.append(self._too_long(int(task.group(1)), prefix))
            return drop
        drop.task = False
        shown = _clip(prefix.strip(), 60)
        out.append(
            PlanSyntaxError(
                f"a plan line longer than the line limit (max_line_chars="
                f"{self.max_line_chars:,} characters) was dropped: {shown!r}",
                line=prefix[:_HEAD].strip(),
            )
        )
        return drop

    def _too_long(self, task_id: int, first_line: str) -> PlanSyntaxError:
        self._seen.add(task_id)  # a broken task still occupies its id
        head = first_line[:_HEAD].strip()
        return PlanSyntaxError(
            f"task {task_id} is longer than the plan line limit (max_line_chars="
            f"{self.max_line_chars:,} characters) and was dropped: {_clip(head, 60)!r}",
            line=head,
            task_id=task_id,
        )

    def _end_drop(self) -> None:
        drop, self._drop = self._drop, None
        if drop is not None:
            self._text.append(
                f"{drop.head}… [{drop.chars:,} characters dropped: longer than "
                f"max_line_chars={self.max_line_chars:,}]\n"
            )

    # -- lines -----------------------------------------------------------------------------
    @staticmethod
    def _starts_new(line: str) -> bool:
        """Whether the line ends an open task: a task, Thought, join() or fence line."""
        return bool(
            _TASK_LINE.match(line)
            or _THOUGHT_LINE.match(line)
            or _JOIN.match(line)
            or _JOIN_LOOSE.match(line)
            or line.lstrip().startswith("```")
        )

    def _line(self, line: str, nl: str, out: list[PlanItem]) -> None:
        if self.finished:
            return
        stripped = line.strip()
        if self._drop is not None:
            if not self._starts_new(line):
                self._drop.chars += len(line) + len(nl)
                return
            self._end_drop()
        if self._pending and not self._starts_new(line):
            self._continue(line, nl, out)
            return
        self._text.append(line)
        self._text.append(nl)
        if self._pending:
            self._flush_pending(out)
        if not stripped or stripped.startswith("```"):
            return
        joined = _JOIN.match(stripped)
        if joined or _JOIN_LOOSE.match(stripped):
            self._join(joined)
            self._finish(out)
            return
        thought = _THOUGHT_LINE.match(line)
        if thought:
            if thought.group(1).strip():
                self._thought.append(thought.group(1).strip())
            return
        m = _TASK_LINE.match(line)
        if m:
            body = m.group(2).strip()
            joined = _JOIN.match(body)
            if joined or _JOIN_LOOSE.match(body):
                self._join(joined)
                self._finish(out)
                return
            self._pending, self._pending_size = [line], len(line)
            self._scan = _Scan()
            self._scan.feed(line)
            self._missed = 0
            self._try_pending(out, final=False)
            return
        if _CALL_LIKE.match(stripped):
            shown = _clip(stripped)
            out.append(
                PlanSyntaxError(
                    f"plan line {shown!r} has no task number; write it as 'N. {shown}'",
                    line=stripped,
                )
            )
            return
        self.ignored.append(line)

    def _continue(self, line: str, nl: str, out: list[PlanItem]) -> None:
        """A further line of the open task."""
        size = self._pending_size + 1 + len(line)
        if size > self.max_line_chars:
            out.append(self._too_long(self._pending_id(), self._pending[0]))
            self._pending = []
            self._drop = _Dropped(line[:_HEAD], len(line) + len(nl), task=True)
            return
        self._text.append(line)
        self._text.append(nl)
        self._pending.append(line)
        self._pending_size = size
        self._scan.feed(line)
        if self._scan.open or size < 2 * self._missed:
            return  # cannot be complete yet: parsing now would only cost time
        self._try_pending(out, final=False)

    def _pending_id(self) -> int:
        m = _TASK_LINE.match(self._pending[0])
        if m is None:  # pragma: no cover - pending always starts with a task line
            raise RuntimeError("internal: pending plan text is not a task line")
        return int(m.group(1))

    def _flush_pending(self, out: list[PlanItem]) -> None:
        if self._pending:
            self._try_pending(out, final=True)

    def _try_pending(self, out: list[PlanItem], *, final: bool) -> None:
        source = "\n".join(self._pending)
        m = _TASK_LINE.match(source)
        if m is None:  # pragma: no cover - pending always starts with a task line
            raise RuntimeError("internal: pending plan text is not a task line")
        task_id, body = int(m.group(1)), m.group(2).strip()
        try:
            item: PlanItem = self._parse_task(task_id, body)
        except _Unfinished as exc:
            if not final:
                if not self._scan.open:  # the scan thought it closed: parse again less often
                    self._missed = len(source)
                return
            item = PlanSyntaxError(
                f"task {task_id}: {exc.reason} in {_clip(body)!r} (is a ')' or quote missing?)",
                line=source.strip(),
                task_id=task_id,
            )
        except PlanError as exc:
            item = exc
        self._pending = []
        if isinstance(item, TaskSpec):
            self._seen.add(item.id)
        elif item.task_id is not None and not isinstance(item, DuplicateTaskError):
            self._seen.add(item.task_id)  # a broken task still occupies its id
        out.append(item)

    # -- one task --------------------------------------------------------------------------
    def _parse_task(self, task_id: int, body: str) -> TaskSpec:
        line = f"{task_id}. {body}"
        if task_id in self._seen:
            raise DuplicateTaskError(
                f"task id {task_id} is used twice; every task needs a new number",
                line=line,
                task_id=task_id,
            )
        # A lone surrogate (model text can hold one) cannot be compiled: it becomes U+FFFD.
        src = _quote_bare_refs(_LONE_SURROGATE.sub("\ufffd", body))
        try:
            tree = ast.parse(src, mode="eval")
        except SyntaxError as exc:
            msg = str(exc.msg)
            if _UNFINISHED.search(msg):
                raise _Unfinished(msg) from None
            raise PlanSyntaxError(
                f'task {task_id}: {_clip(body)!r} is not a call like tool("text", key=1) ({msg})',
                line=line,
                task_id=task_id,
            ) from None
        except (ValueError, RecursionError, MemoryError) as exc:
            raise PlanSyntaxError(
                f"task {task_id}: cannot parse {_clip(body)!r} ({type(exc).__name__})",
                line=line,
                task_id=task_id,
            ) from None
        call = tree.body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise PlanSyntaxError(
                f'task {task_id}: {_clip(body)!r} is not a single tool call like tool("text")',
                line=line,
                task_id=task_id,
            )
        name = call.func.id
        if name not in self._tools:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownToolError(
                f"task {task_id} calls unknown tool {name!r}; available tools: {known}",
                line=line,
                task_id=task_id,
            )
        try:
            raw_args = tuple(_literal(a, "*args") for a in call.args)
            raw_kwargs: dict[str, Any] = {}
            for kw in call.keywords:
                if kw.arg is None:
                    raise _NotLiteral("**kwargs")
                raw_kwargs[kw.arg] = _literal(kw.value, kw.arg)
        except _NotLiteral as exc:
            raise PlanSyntaxError(
                f"task {task_id}: argument {exc.where} of {name} must be a literal (a quoted "
                "string, number, list, dict, True/False/None) or a $N reference",
                line=line,
                task_id=task_id,
            ) from None
        deps: set[int] = set()
        args = tuple(self._refs(v, task_id, deps, line) for v in raw_args)
        kwargs = {k: self._refs(v, task_id, deps, line) for k, v in raw_kwargs.items()}
        thought = " ".join(self._thought) if self._thought else None
        self._thought = []
        return TaskSpec(
            id=task_id,
            tool=name,
            args=args,
            kwargs=kwargs,
            deps=frozenset(deps),
            call=body,
            raw_args=raw_args,
            raw_kwargs=raw_kwargs,
            thought=thought,
        )

    def _refs(self, value: Any, task_id: int, deps: set[int], line: str) -> Any:
        if isinstance(value, str):
            return self._string_refs(value, task_id, deps, line)
        if isinstance(value, list):
            return [self._refs(v, task_id, deps, line) for v in value]
        if isinstance(value, tuple):
            return tuple(self._refs(v, task_id, deps, line) for v in value)
        if isinstance(value, dict):
            return {k: self._refs(v, task_id, deps, line) for k, v in value.items()}
        return value

    def _string_refs(self, text: str, task_id: int, deps: set[int], line: str) -> Any:
        whole = _WHOLE_REF.match(text)
        if whole:
            ref = int(whole.group(1) or whole.group(2))
            self._check_ref(ref, task_id, line)
            deps.add(ref)
            return Ref(ref, _parse_path(whole.group(3), ref, task_id, line))
        parts: list[str | Ref] = []
        pos = 0
        for m in _INNER_REF.finditer(text):
            braced = m.group(1) is not None
            ref = int(m.group(1) or m.group(3))
            if not braced and ref not in self._seen:
                continue  # "$5 billion" with no task 5 before: plain text
            self._check_ref(ref, task_id, line)
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(Ref(ref, _parse_path(m.group(2) or m.group(4), ref, task_id, line)))
            deps.add(ref)
            pos = m.end()
        if not parts:
            return text
        if pos < len(text):
            parts.append(text[pos:])
        return Template(tuple(parts))

    def _check_ref(self, ref: int, task_id: int, line: str) -> None:
        if ref in self._seen:
            return
        where = (
            "itself"
            if ref == task_id
            else ("a later task" if ref > task_id else "a task that does not exist")
        )
        raise BadReferenceError(
            f"task {task_id} refers to ${ref}, which is {where}; a task can only use the "
            "results of tasks listed before it",
            line=line,
            task_id=task_id,
        )


_CODE_STOP = re.compile(r"[()\[\]{}'\"#\\]")
_REF_STOP = re.compile(r"[\"'#$]")
_IN_STRING = {"'": re.compile(r"[\\']"), '"': re.compile(r'[\\"]')}
_OPENER = {")": "(", "]": "[", "}": "{"}


class _Scan:
    """Python's bracket and string nesting at the end of a task's text so far.

    A small tokenizer fed each line once, so that a call written over many lines is not parsed
    again at every line while it certainly cannot be complete (which would cost time quadratic
    in its length).
    """

    __slots__ = ("broken", "joined", "quote", "stack")

    def __init__(self) -> None:
        self.stack: list[str] = []  # open brackets
        self.quote = ""  # the open string's delimiter: ', ", ''' or """
        self.broken = False  # an error Python reports whatever follows (a stray closer...)
        self.joined = False  # the last line ends with a backslash continuing it

    @property
    def open(self) -> bool:
        """Whether the text so far ends inside a bracket, a triple-quoted string or a ``\\``
        line continuation, so that it cannot parse yet."""
        if self.broken:
            return False
        return len(self.quote) == 3 or (not self.quote and (bool(self.stack) or self.joined))

    def feed(self, line: str) -> None:
        i, n = 0, len(line)
        stack = self.stack
        self.joined = False
        while i < n and not self.broken:
            if self.quote:
                found = _IN_STRING[self.quote[0]].search(line, i)
                if found is None:
                    return  # the string goes on (a one-quote string here fails to parse)
                j = found.start()
                if line[j] == "\\":
                    i = j + 2
                elif line.startswith(self.quote, j):
                    i = j + len(self.quote)
                    self.quote = ""
                else:
                    i = j + 1  # one quote character inside a triple-quoted string
                continue
            found = _CODE_STOP.search(line, i)
            if found is None:
                return
            j, c = found.start(), found.group()
            i = j + 1
            if c == "#":
                return  # a comment to the end of the line
            if c in "([{":
                stack.append(c)
                self.broken = len(stack) > _MAX_NESTING
            elif c in ")]}":
                self.broken = not stack or stack.pop() != _OPENER[c]
            elif c == "\\":  # outside strings a backslash may only continue a line
                self.broken = j + 1 < n
                self.joined = not self.broken
            elif line.startswith(c * 3, j):
                self.quote = c * 3
                i = j + 3
            else:
                self.quote = c


class SelectionError(DagcallError, LookupError):
    """What :func:`select` raises: ``message`` says which selection does not exist and what
    does (bounded).  In a run it becomes the task's :class:`~dagcall.ToolArgumentError`."""


_SHOWN_KEYS = 10  # keys named in a SelectionError
_SHOWN_PATH = 120  # characters of a selection path quoted in one


def select(value: Any, path: Iterable[str | int], *, name: str = "the result") -> Any:
    """The part of ``value`` that ``path`` selects (see :class:`Ref`), or
    :class:`SelectionError`.

    Only data is read: the keys of a mapping, the items of a list or tuple, the declared fields
    of a pydantic model or a dataclass.  Nothing else is looked up (no attributes, no
    properties, no dunders).  ``name`` is how the message names ``value`` (``"$1"``).
    """
    done: list[str | int] = []
    for step in path:
        where = _clip(f"{name}{path_text(done)}", _SHOWN_PATH)
        value = _step(value, step, where)
        done.append(step)
    return value


def _step(value: Any, step: str | int, where: str) -> Any:
    shown = _clip(path_text([step]), _SHOWN_PATH)
    if isinstance(value, Mapping):
        if step in value:
            return value[step]
        if isinstance(step, int) and not isinstance(step, bool) and str(step) in value:
            return value[str(step)]
        raise SelectionError(
            f"{where}{shown} does not exist: {where} is a {_kind(value)} with "
            + (f"the keys {_names(value)}" if value else "no keys")
        )
    if isinstance(value, list | tuple):
        if isinstance(step, int):
            if -len(value) <= step < len(value):
                return value[step]
            raise SelectionError(
                f"{where}{shown} does not exist: {where} is a {_kind(value)} of "
                f"{len(value)} item{'' if len(value) == 1 else 's'}"
            )
        raise SelectionError(
            f"{where}{shown} does not exist: {where} is a {_kind(value)}, which has items "
            "([0], [-1]), not fields"
        )
    fields = _declared_fields(value)
    if fields is not None:
        if isinstance(step, str) and step in fields:
            return getattr(value, step)
        raise SelectionError(
            f"{where}{shown} does not exist: {where} is a {_kind(value)} with "
            + (f"the fields {_names(fields)}" if fields else "no fields")
        )
    raise SelectionError(
        f"{where}{shown} does not exist: {where} is a {_kind(value)}, which has no fields or "
        "items to select"
    )


def record_fields(value: Any) -> dict[str, Any]:
    """The named fields of a structured result that ``$N.field`` can select, with their
    values: a dict's string keys, a pydantic model's or a dataclass's declared fields (read as
    :func:`select` reads them); ``{}`` for anything else, or when reading them fails."""
    try:
        if type(value) is dict:
            return {k: v for k, v in value.items() if type(k) is str}
        names = _declared_fields(value)
        return {} if names is None else {name: getattr(value, name) for name in names}
    except Exception:
        return {}


def _declared_fields(value: Any) -> list[str] | None:
    """The field names of a pydantic model or dataclass instance, else ``None``."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return [str(k) for k in type(value).model_fields]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [f.name for f in dataclasses.fields(value)]
    return None


def _kind(value: Any) -> str:
    kind = type(value)
    if kind in (dict, list, tuple, str, int, float, bool, type(None)):
        return kind.__name__
    return _clip(f"{kind.__qualname__}", 60)


def _names(keys: Collection[Any]) -> str:
    shown = [
        _clip(repr(key) if isinstance(key, str | int) else f"<{_kind(key)}>", 40)
        for key in itertools.islice(keys, _SHOWN_KEYS)
    ]
    text = ", ".join(shown)
    if len(keys) > len(shown):
        text += f", … ({len(keys)} in all)"
    return text


def _parse_path(text: str | None, ref: int, task_id: int, line: str) -> tuple[str | int, ...]:
    """The selections a reference's ``text`` (``.a[0]["b"]``, matched by ``_PATH``) spell."""
    if not text:
        return ()
    path: list[str | int] = []
    for m in _ONE_ACCESSOR.finditer(text):
        name, index, quoted = m.groups()
        problem = ""
        if name is not None:
            path.append(name)
        elif index is not None:
            if len(index.lstrip("-")) > _MAX_INDEX_DIGITS:
                problem = f"the index {_clip(index, 30)} is too large"
            else:
                path.append(int(index))
        else:
            try:
                key = ast.literal_eval(quoted)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                key = None
            if isinstance(key, str):
                path.append(key)
            else:
                problem = f"the key {_clip(quoted, 60)} is not a valid string"
        if len(path) > MAX_PATH:
            problem = f"it selects more than {MAX_PATH} levels deep"
        if problem:
            raise BadReferenceError(
                f"task {task_id} refers to ${ref}{_clip(text, 80)}, but {problem}",
                line=line,
                task_id=task_id,
            )
    return tuple(path)


def _clip(text: str, limit: int = _CLIP) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class _Unfinished(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NotLiteral(Exception):
    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


def _literal(node: ast.expr, where: str) -> Any:
    if isinstance(node, ast.Starred):
        raise _NotLiteral(where)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise _NotLiteral(where) from None


def _quote_bare_refs(src: str) -> str:
    """Turn ``$N`` / ``${N}`` written outside string literals into ``"$N"`` string literals.

    A small scanner that knows Python's string quoting and comments, so references inside
    strings are left for the reference pass and only bare ones are quoted.  It jumps from one
    quote, ``#`` or ``$`` to the next, so its cost is linear in the text.
    """
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        found = _REF_STOP.search(src, i)
        if found is None:
            out.append(src[i:])
            break
        j, c = found.start(), found.group()
        out.append(src[i:j])
        if c == "#":  # a comment, to the end of its line
            end = src.find("\n", j)
            end = n if end < 0 else end
        elif c == "$":
            ref = _BARE_REF.match(src, j)
            if ref is None:
                out.append(c)
                i = j + 1
                continue
            # A string literal, spaced so it never merges with a next quote.
            out.append(f" {json.dumps(ref.group(0), ensure_ascii=False)} ")
            i = ref.end()
            continue
        else:
            quote = c * 3 if src.startswith(c * 3, j) else c
            end = j + len(quote)
            while end < n:
                stop = _IN_STRING[c].search(src, end)
                if stop is None:
                    end = n
                    break
                if src[stop.start()] == "\\":
                    end = stop.start() + 2
                elif src.startswith(quote, stop.start()):
                    end = stop.start() + len(quote)
                    break
                else:
                    end = stop.start() + 1
            end = min(n, end)
        out.append(src[j:end])
        i = end
    return "".join(out)


def parse_plan(
    text: str,
    tools: Collection[str],
    *,
    prior_ids: Iterable[int] = (),
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
) -> tuple[list[PlanItem], PlanParser]:
    """Parse a whole plan at once (the same result as streaming it, however split)."""
    parser = PlanParser(tools, prior_ids=prior_ids, max_line_chars=max_line_chars)
    items = parser.feed(text)
    items += parser.close()
    return items, parser
