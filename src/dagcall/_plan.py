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

The parser is fed the model's stream chunk by chunk and returns each task as soon as its line is
complete; its output does not depend on how the stream was split.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._errors import (
    BadReferenceError,
    DuplicateTaskError,
    PlanError,
    PlanSyntaxError,
    UnknownToolError,
)

__all__ = ["END_OF_PLAN", "PlanParser", "Ref", "TaskSpec", "Template", "parse_plan"]

END_OF_PLAN = "<END_OF_PLAN>"

_TASK_LINE = re.compile(r"^\s*(?:[-*]\s+)?(?:\*\*)?(\d+)(?:\*\*)?\s*\.\s*(.*)$", re.S)
_THOUGHT_LINE = re.compile(r"^\s*(?:\*\*)?thought(?:\*\*)?\s*:\s*(.*)$", re.I | re.S)
_CALL_LIKE = re.compile(r"^\s*[A-Za-z_]\w*\s*\(")
_JOIN = re.compile(r"^\s*join\s*\(\s*\)\s*;?\s*(?:#.*)?$")
_WHOLE_REF = re.compile(r"^\s*\$(?:\{(\d+)\}|(\d+))\s*$")
_INNER_REF = re.compile(r"\$\{(\d+)\}|\$(\d+)(?!\d)(?![.,]\d)")
_UNFINISHED = re.compile(r"was never closed|unexpected EOF|unterminated triple-quoted")
_MAX_LINE = 100_000


@dataclass(frozen=True, slots=True)
class Ref:
    """An argument that is exactly the result of task ``task_id``."""

    task_id: int


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


class PlanParser:
    """Incremental parser of a streamed plan.

    ``feed`` takes each chunk and returns the tasks (and plan errors) completed by it; ``close``
    ends the stream.  ``tools`` are the callable tool names; ``prior_ids`` are the tasks of
    earlier rounds that this plan may refer to.  After ``join()`` or ``<END_OF_PLAN>`` the
    parser is ``finished`` and ignores further input.
    """

    def __init__(self, tools: Collection[str], *, prior_ids: Iterable[int] = ()) -> None:
        self._tools = frozenset(tools)
        self._seen: set[int] = set(prior_ids)
        self._buf = ""
        self._pending: list[str] = []
        self._thought: list[str] = []
        self.finished = False
        self.join_seen = False
        self.text = ""
        self.ignored: list[str] = []
        self.trailing_thought: str | None = None
        self.unfinished = ""

    # -- streaming -------------------------------------------------------------------------
    def feed(self, chunk: str) -> list[PlanItem]:
        """Add a chunk of the stream; return the items whose lines it completed."""
        if self.finished or not chunk:
            return []
        self._buf += chunk
        out: list[PlanItem] = []
        end = self._buf.find(END_OF_PLAN)
        if end >= 0:
            head = self._buf[:end]
            self.text += head
            self._buf = ""
            for line in head.split("\n"):
                self._line(line, out)
            self._finish(out)
            return out
        cut = self._buf.rfind("\n")
        if cut < 0:
            if len(self._buf) > _MAX_LINE:  # a runaway line: judge it now rather than buffer
                cut = len(self._buf)
            else:
                return out
        complete, self._buf = self._buf[: cut + 1], self._buf[cut + 1 :]
        self.text += complete
        for line in complete.split("\n")[: -1 if complete.endswith("\n") else None]:
            self._line(line, out)
            if self.finished:
                break
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
        rest, self._buf = self._buf, ""
        self.text += rest
        if not complete:
            self.unfinished = "\n".join([*self._pending, rest]).strip()
            self._pending = []
        elif rest:
            self._line(rest, out)
        self._finish(out)
        return out

    def _finish(self, out: list[PlanItem]) -> None:
        if not self.finished:
            self._flush_pending(out)
            self.finished = True
        if self._thought:
            self.trailing_thought = " ".join(self._thought)
            self._thought = []

    # -- lines -----------------------------------------------------------------------------
    def _line(self, line: str, out: list[PlanItem]) -> None:
        if self.finished:
            return
        stripped = line.strip()
        starts_new = bool(
            _TASK_LINE.match(line) or _THOUGHT_LINE.match(line) or _JOIN.match(stripped)
        )
        if self._pending:
            if not starts_new and not stripped.startswith("```"):
                self._pending.append(line)
                self._try_pending(out, final=False)
                return
            self._flush_pending(out)
        if not stripped or stripped.startswith("```"):
            return
        if _JOIN.match(stripped):
            self.join_seen = True
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
            if _JOIN.match(body):
                self.join_seen = True
                self._finish(out)
                return
            self._pending = [line]
            self._try_pending(out, final=False)
            return
        if _CALL_LIKE.match(stripped):
            out.append(
                PlanSyntaxError(
                    f"plan line {stripped!r} has no task number; write it as 'N. {stripped}'",
                    line=stripped,
                )
            )
            return
        self.ignored.append(line)

    def _flush_pending(self, out: list[PlanItem]) -> None:
        if self._pending:
            self._try_pending(out, final=True)

    def _try_pending(self, out: list[PlanItem], *, final: bool) -> None:
        source = "\n".join(self._pending)
        m = _TASK_LINE.match(source)
        if m is None:  # pragma: no cover - pending always starts with a task line
            raise RuntimeError(f"internal: pending plan text {source!r} is not a task line")
        task_id, body = int(m.group(1)), m.group(2).strip()
        try:
            item: PlanItem = self._parse_task(task_id, body)
        except _Unfinished as exc:
            if not final:
                return
            item = PlanSyntaxError(
                f"task {task_id}: {exc.reason} in {body!r} (is a ')' or quote missing?)",
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
        src = _quote_bare_refs(body)
        try:
            tree = ast.parse(src, mode="eval")
        except SyntaxError as exc:
            msg = str(exc.msg)
            if _UNFINISHED.search(msg):
                raise _Unfinished(msg) from None
            raise PlanSyntaxError(
                f'task {task_id}: {body!r} is not a call like tool("text", key=1) ({msg})',
                line=line,
                task_id=task_id,
            ) from None
        except (ValueError, RecursionError, MemoryError) as exc:
            raise PlanSyntaxError(
                f"task {task_id}: cannot parse {body[:200]!r} ({type(exc).__name__})",
                line=line,
                task_id=task_id,
            ) from None
        call = tree.body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise PlanSyntaxError(
                f'task {task_id}: {body!r} is not a single tool call like tool("text")',
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
            return Ref(ref)
        parts: list[str | Ref] = []
        pos = 0
        for m in _INNER_REF.finditer(text):
            braced = m.group(1) is not None
            ref = int(m.group(1) or m.group(2))
            if not braced and ref not in self._seen:
                continue  # "$5 billion" with no task 5 before: plain text
            self._check_ref(ref, task_id, line)
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(Ref(ref))
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

    A small scanner that knows Python's string quoting, so references inside strings are left
    for the reference pass and only bare ones are quoted.
    """
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in "\"'":
            quote = src[i : i + 3] if src[i : i + 3] in ('"""', "'''") else c
            j = i + len(quote)
            while j < n and not src.startswith(quote, j):
                j += 2 if src[j] == "\\" else 1
            j = min(n, j + len(quote))
            out.append(src[i:j])
            i = j
            continue
        if c == "$":
            m = re.match(r"\$(?:\{(\d+)\}|(\d+))", src[i:])
            if m:
                out.append(f'"{m.group(0)}"')
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_plan(
    text: str, tools: Collection[str], *, prior_ids: Iterable[int] = ()
) -> tuple[list[PlanItem], PlanParser]:
    """Parse a whole plan at once (the same result as streaming it)."""
    parser = PlanParser(tools, prior_ids=prior_ids)
    items = parser.feed(text)
    items += parser.close()
    return items, parser
