"""What a run produces: its answer, rounds, tasks and LLM calls."""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import itertools
import json
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeAlias, cast

from . import _errors
from ._errors import DagcallError, UsageError

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, TypeAdapter
    from pydantic_core import CoreSchema

__all__ = [
    "LLMCall",
    "Round",
    "RunEvent",
    "RunResult",
    "StopReason",
    "TaskRecord",
    "TaskStatus",
    "json_safe",
    "numeric_output",
    "observation_text",
    "revive_error",
    "safe_text",
]

#: How much of a tool result the joiner and replanner are shown (characters).
MAX_OBSERVATION_CHARS = 4000
#: Containers nested deeper than this are replaced by a placeholder, in exports and observations.
MAX_DEPTH = 100
#: Per field of ``to_dict``: at most this many container items and characters are exported.
EXPORT_MAX_ITEMS = 100_000
EXPORT_MAX_CHARS = 16_000_000
#: What ``observation_text(value, None)`` allows a value that is not a string (strings are
#: kept whole: their rendering is linear in their length).
UNBOUNDED_OBSERVATION_CHARS = 1_000_000
#: Ints with more decimal digits than this become a placeholder string (Python's default
#: int/str conversion limit, so ``json.loads`` can read every int dagcall writes).
MAX_INT_DIGITS = 4300


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    WAITING = "waiting"  # parsed, waiting for the tasks it depends on
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # a task it depends on did not finish
    CANCELLED = "cancelled"  # the run was cancelled or ran out of time, and the call stopped
    # The run was cancelled or ran out of time while the call's worker thread was still
    # running: Python cannot kill a thread, so it may yet complete its side effects.
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.WAITING, TaskStatus.RUNNING)


class StopReason(StrEnum):
    """Why a run ended (``RunResult.stop_reason``)."""

    RUNNING = "running"  # it has not ended yet
    FINISH = "finish"  # the joiner (or the baseline's model) answered
    MAX_REPLANS = "max_replans"  # the joiner still wanted to replan after the last round
    MAX_STEPS = "max_steps"  # a ReAct agent used all its steps
    MAX_TURNS = "max_turns"  # a function-calling agent used all its turns
    TIMEOUT = "timeout"  # the run's wall-time budget ran out
    BUDGET = "budget"  # another limit ran out (``max_tokens``, ``max_tasks``)
    CANCELLED = "cancelled"  # the caller cancelled the run
    ERROR = "error"  # an error ended the run (``RunResult.error`` says which)


class _ErrorSchema:
    """How a recorded error is read back from JSON (a marker in the fields' annotations):
    the record ``to_dict`` wrote (``type``, ``message`` and the error's fields) becomes the
    :class:`~dagcall.DagcallError` subclass it names (see :func:`revive_error`)."""

    def __init__(self, optional: bool) -> None:
        self.optional = optional

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        revive = revive_error
        if self.optional:

            def revive(value: Any) -> DagcallError | None:  # type: ignore[misc]
                return None if value is None else revive_error(value)

        return core_schema.no_info_plain_validator_function(revive)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            "required": ["type", "message"],
            "description": "An error: its class name, message and fields.",
        }
        return {"anyOf": [record, {"type": "null"}]} if self.optional else record


#: A recorded error, read back from its JSON record.
ErrorField = Annotated[DagcallError, _ErrorSchema(optional=False)]
OptionalErrorField = Annotated[DagcallError | None, _ErrorSchema(optional=True)]


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(kind: type) -> TypeAdapter[Any]:
    """The pydantic adapter of a record class (built on first use: pydantic is imported only
    when a record is read back)."""
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter


class _Schema:
    """Loading a record from JSON (the schema of the dataclass, through pydantic)."""

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """A record from the data ``to_dict()`` gave (fields it does not know are ignored).
        Raises :class:`~dagcall.UsageError` saying what does not fit."""
        return cls._validated(lambda adapter: adapter.validate_python(data))

    @classmethod
    def model_validate_json(cls, text: str | bytes) -> Self:
        """A record from the JSON ``to_json()`` wrote: ``RunResult.model_validate_json(
        result.to_json())`` round-trips."""
        return cls._validated(lambda adapter: adapter.validate_json(text))

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of what ``model_validate`` reads."""
        schema: dict[str, Any] = _adapter(cls).json_schema()
        return schema

    @classmethod
    def _validated(cls, validate: Callable[[TypeAdapter[Any]], Any]) -> Self:
        from pydantic import ValidationError

        try:
            value = validate(_adapter(cls))
        except ValidationError as exc:
            problems = exc.errors(include_url=False, include_input=False)
            first = problems[0] if problems else {"loc": (), "msg": str(exc)}
            where = ".".join(str(part) for part in first["loc"]) or "the data"
            raise UsageError(
                f"not a valid {cls.__name__}: {len(problems)} problem(s); {where}: "
                f"{safe_text(first['msg'], 300)}"
            ) from None
        if not isinstance(value, cls):
            raise UsageError(f"not a valid {cls.__name__}")
        return value


@dataclass
class TaskRecord(_Schema):
    """One task of a run.  Times are seconds since the run started."""

    id: int
    tool: str
    call: str
    round: int
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    deps: tuple[int, ...] = ()
    thought: str | None = None
    status: TaskStatus = TaskStatus.WAITING
    resolved_args: dict[str, Any] | None = None
    output: Any = None
    error: OptionalErrorField = None
    parsed_at: float = 0.0
    ready_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: The task whose outcome this one reused instead of calling again (common calls run
    #: once; see :class:`~dagcall.Optimizations`), or ``None``.
    reused_from: int | None = None
    #: ``"hit"``: answered from the call cache; ``"miss"``: the cache was asked and had
    #: nothing; ``None``: no cache was asked.
    cache: Literal["hit", "miss"] | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def observation(self) -> str:
        """What the joiner and replanner are shown for this task."""
        if self.status is TaskStatus.DONE:
            return observation_text(self.output)
        if self.error is not None:
            return f"{_type_name(self.error)}: {observation_text(_message(self.error))}"
        return f"({safe_text(_status_value(self.status), 100)})"

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON data (see :func:`json_safe`), whatever the tool returned."""
        return _export(
            {
                "id": self.id,
                "tool": self.tool,
                "call": self.call,
                "round": self.round,
                "args": self.args,
                "kwargs": self.kwargs,
                "deps": self.deps,
                "thought": self.thought,
                "status": _status_value(self.status),
                "resolved_args": self.resolved_args,
                "output": self.output,
                "error": None if self.error is None else _error_dict(self.error),
                "parsed_at": self.parsed_at,
                "ready_at": self.ready_at,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "reused_from": self.reused_from,
                "cache": self.cache,
            }
        )


#: Who made a model call: the planner, the joiner, a tool, or a ReAct step.
CallRole = Literal["planner", "joiner", "tool", "react"]


@dataclass(frozen=True)
class LLMCall(_Schema):
    """One model call of a run.  Times are seconds since the run started."""

    role: CallRole
    model: str
    round: int
    input_tokens: int
    output_tokens: int
    started_at: float
    ended_at: float
    time_to_first_token: float | None
    estimated: bool = False  # token counts estimated because the model reported none
    task_id: int | None = None  # for role "tool": the task whose tool made the call
    #: Of ``input_tokens``, those read from a prompt cache, and those written to one.
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def latency(self) -> float:
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return _export(
            {
                "role": self.role,
                "model": self.model,
                "round": self.round,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "latency": _guard(lambda: self.latency),
                "time_to_first_token": self.time_to_first_token,
                "estimated": self.estimated,
                "task_id": self.task_id,
                "cached_input_tokens": self.cached_input_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            }
        )


@dataclass
class Round(_Schema):
    """One plan → execute → join round."""

    index: int
    plan: str = ""
    task_ids: list[int] = field(default_factory=list)
    errors: list[ErrorField] = field(default_factory=list)
    thought: str | None = None  # a planner thought after the last task
    joiner_output: str = ""
    decision: Literal["finish", "replan", ""] = ""
    joiner_thought: str = ""
    answer: str | None = None
    replan_reason: str | None = None
    #: The task the plan named as the answer (``join("$M")``), and whether its result was
    #: taken as the answer without the joiner's call (``Optimizations.elide_joiner``).
    answer_task: int | None = None
    joiner_elided: bool = False
    #: What the plan cache gave this round: ``"exact"`` (its plan ran, no planner call),
    #: ``"example"`` (the planner had a stored plan as its example), or ``None``.
    plan_cache: Literal["exact", "example"] | None = None
    #: When each line of ``plan`` had streamed in full (its newline, or the stream's end for
    #: a last line without one), in seconds since the run started: the text's own schedule,
    #: independent of when dagcall parsed the line.
    line_times: list[float] = field(default_factory=list)
    #: What the answer checks found (``Compiler(check_answers=True)``): each a sentence, such
    #: as an answer of the wrong kind that the joiner was asked about once more, a computed
    #: expression, or the failed tasks that were replanned before any joiner call.
    answer_checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _export(
            {
                "index": self.index,
                "plan": self.plan,
                "task_ids": self.task_ids,
                "errors": _guard(lambda: [_error_dict(e) for e in self.errors]),
                "thought": self.thought,
                "joiner_output": self.joiner_output,
                "decision": self.decision,
                "joiner_thought": self.joiner_thought,
                "answer": self.answer,
                "replan_reason": self.replan_reason,
                "answer_task": self.answer_task,
                "joiner_elided": self.joiner_elided,
                "plan_cache": self.plan_cache,
                "line_times": self.line_times,
                "answer_checks": self.answer_checks,
            }
        )


@dataclass
class RunResult(_Schema):
    """The outcome of one question.

    ``answer`` is the final answer; ``rounds`` one entry per round; ``tasks`` every task of
    every round in id order; ``usage`` every LLM call.  ``stop_reason`` says why the run
    ended (a :class:`StopReason`): ``finish`` when the joiner answered, ``max_replans`` when
    it still wanted to replan after the last allowed round (its thought is then the answer),
    or ``timeout``, ``budget``, ``cancelled`` or ``error`` for a partial result, whose
    ``error`` is the error that ended it.

    ``to_json()`` writes it as strict JSON and ``RunResult.model_validate_json(text)`` reads
    it back (recorded errors become the error classes they were).
    """

    question: str
    answer: str = ""
    rounds: list[Round] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    usage: list[LLMCall] = field(default_factory=list)
    wall_time: float = 0.0
    stop_reason: StopReason = StopReason.RUNNING
    error: OptionalErrorField = None
    #: When the run started, as Unix time (seconds); every other time is relative to it.
    start_time: float = 0.0

    @property
    def input_tokens(self) -> int:
        return sum(c.input_tokens for c in self.usage)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.usage)

    @property
    def llm_calls(self) -> int:
        return len(self.usage)

    @property
    def sequential_time(self) -> float:
        """How long the same LLM calls and tool calls take run one after another."""
        return sum(c.latency for c in self.usage) + sum(t.duration or 0.0 for t in self.tasks)

    def task(self, task_id: int) -> TaskRecord:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def to_dict(self) -> dict[str, Any]:
        """The whole result as strict JSON data: every field that holds foreign data (tool
        results and arguments, model text, error messages) goes through :func:`json_safe`."""
        data = _export(
            {
                "question": self.question,
                "answer": self.answer,
                "stop_reason": _status_value(self.stop_reason),
                "error": None if self.error is None else _error_dict(self.error),
                "start_time": self.start_time,
                "wall_time": self.wall_time,
                "input_tokens": _guard(lambda: self.input_tokens),
                "output_tokens": _guard(lambda: self.output_tokens),
            }
        )
        data["rounds"] = [r.to_dict() for r in self.rounds]
        data["tasks"] = [t.to_dict() for t in self.tasks]
        data["usage"] = [c.to_dict() for c in self.usage]
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        """The whole result as strict JSON (RFC 8259) that encodes as UTF-8: see
        :func:`json_safe` for how values JSON cannot hold are written."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)


EventKind = Literal[
    "round_start", "plan_text", "task", "joiner_start", "joiner_text", "round_end", "finished"
]


@dataclass(frozen=True)
class RunEvent:
    """Something that happened in a run, for live views (``Compiler.arun(on_event=...)``).

    ``round_start`` / ``round_end`` bracket a round; ``plan_text`` and ``joiner_text`` carry
    each streamed delta in ``text``; ``task`` fires when a task is parsed, starts and ends
    (``task.status`` says which); ``finished`` comes once, last.  ``result`` is the run as it
    stands (its ``tasks`` grow as they are parsed).
    """

    kind: EventKind
    result: RunResult
    round: int
    task: TaskRecord | None = None
    text: str = ""


def numeric_output(record: TaskRecord) -> float | None:
    """A finished task's result as a number, when it is exactly an ``int`` or ``float`` (not
    a ``bool``, nor a subclass: a hostile object's class may raise on ``isinstance``) and
    finite; ``None`` otherwise."""
    if getattr(record.status, "value", record.status) != "done":
        return None
    value: object = record.output
    if type(value) not in (int, float):
        return None
    try:
        number = float(cast("float", value))
    except OverflowError:  # an int beyond any float
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return number


def observation_text(value: Any, limit: int | None = MAX_OBSERVATION_CHARS) -> str:
    """A tool result as text: strings as they are, other values as JSON where possible.

    Never raises, for any object (only ``KeyboardInterrupt`` and ``SystemExit`` pass), and
    does work bounded by ``limit``: a string is cut to ``limit`` characters (``... [N more
    characters]`` says how many were left); any other value is walked by :func:`json_safe`
    with a budget of ``limit`` characters and container items, written as compact JSON (or,
    when it comes out as one string, as that string) and cut the same way (``... [truncated]``
    when the walk itself left things out).  ``None`` and booleans read ``None``, ``True``,
    ``False``.  ``limit=None`` keeps strings whole (linear in their length) and allows other
    values ``UNBOUNDED_OBSERVATION_CHARS`` (1,000,000) characters and ``EXPORT_MAX_ITEMS``
    items.  Lone surrogates become U+FFFD, so the text always encodes as UTF-8.
    """
    try:
        return _observation(value, limit)
    except BaseException as exc:  # a hostile object must never stop a run
        _absorb(exc)
        return _placeholder(value)


def safe_text(value: Any, limit: int | None = MAX_OBSERVATION_CHARS) -> str:
    """Any value as text that can be shown, stored and encoded as UTF-8 (an alias of
    :func:`observation_text`, for text that is not a tool result: messages, model text)."""
    return observation_text(value, limit)


JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None


def json_safe(
    value: Any,
    *,
    max_depth: int = MAX_DEPTH,
    max_items: int = EXPORT_MAX_ITEMS,
    max_chars: int = EXPORT_MAX_CHARS,
) -> JSONValue:
    """``value`` as data that ``json.dumps(..., allow_nan=False)`` always accepts and whose
    JSON always encodes as UTF-8.  Never raises, whatever an object's methods raise (only
    ``KeyboardInterrupt`` and ``SystemExit`` pass), and never does more than bounded work:

    - ``str`` keeps its text, with lone surrogates replaced by U+FFFD; ``None``, ``bool``,
      finite ``float`` and ``int`` of at most ``MAX_INT_DIGITS`` digits stay as they are.
      Larger ints become ``"<int of about N digits>"``; non-finite floats become the strings
      ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
    - ``list``, ``tuple``, ``set``, ``frozenset`` and other sequences and sets become lists;
      ``dict`` and other mappings, dataclass instances and pydantic models become objects
      with string keys (non-string keys are rendered as text, e.g. ``(1, 2)`` as
      ``"[1, 2]"``; keys that would collide get `` (2)``, `` (3)``, ... appended).
    - ``bytes`` and ``bytearray`` become their ``repr``; anything else its ``str`` (or, if
      that raises, its ``repr``; if both raise, ``"<unrepresentable TypeName>"``).
    - A container that contains itself becomes ``"<cycle: TypeName>"``; one nested deeper
      than ``max_depth`` becomes ``"<TypeName nested deeper than N levels>"``.
    - At most ``max_items`` container items are visited in all and about ``max_chars``
      characters produced in all; what is left out is said by a last list item
      ``"… [N more items]"``, a last key ``"…"`` or a string suffix ``… [N more characters]``.

    The methods of ``str``, ``int``, ``float``, ``list``, ``tuple``, ``dict`` and ``set``
    subclasses are bypassed: their stored contents are read with the base type's methods.
    """
    try:
        return _Walk(max_depth, max_items, max_chars).value(value, 0)
    except BaseException as exc:  # e.g. RecursionError when called with the stack nearly full
        _absorb(exc)
        return _placeholder(value)


# -- the walk behind json_safe and observation_text ----------------------------------------


def _observation(value: Any, limit: int | None) -> str:
    kind = type(value)
    if issubclass(kind, str):
        length = str.__len__(value)
        if limit is None or length <= limit:
            return _clean(str.__getitem__(value, slice(None)))
        cut = max(limit, 0)
        head = _clean(str.__getitem__(value, slice(0, cut)))
        return f"{head}... [{length - cut} more characters]"
    if value is None or kind is bool:
        return repr(value)
    cap = UNBOUNDED_OBSERVATION_CHARS if limit is None else max(limit, 0)
    walk = _Walk(MAX_DEPTH, min(cap, EXPORT_MAX_ITEMS), cap)
    data = walk.value(value, 0)
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, allow_nan=False)
    if len(text) > cap:
        more = "truncated" if walk.cut else f"{len(text) - cap} more characters"
        text = f"{text[:cap]}... [{more}]"
    return text


def _absorb(exc: BaseException) -> None:
    """Let what a hostile object raised pass, unless it is an interrupt or an exit: whatever
    else its methods raise (any exception, even a bare ``BaseException``) is turned into a
    placeholder by the caller."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        raise exc


def _clean(text: str) -> str:
    """``text`` (an exact ``str``) with lone surrogates replaced by U+FFFD (surrogate pairs
    are joined into the character they encode), so that it always encodes as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _type_name(value: object) -> str:
    try:
        name = _QUALNAME.__get__(type(value), type)
        if type(name) is str:
            return _clean(name[:200])
    except BaseException as exc:  # a metaclass can make even this raise
        _absorb(exc)
    return "object"


_QUALNAME = type.__dict__["__qualname__"]


def _placeholder(value: object) -> str:
    return f"<unrepresentable {_type_name(value)}>"


def _guard(get: Callable[[], Any]) -> Any:
    """``get()``, or a placeholder if it raises (for computed fields of a record)."""
    try:
        return get()
    except BaseException as exc:
        _absorb(exc)
        return "<unrepresentable value>"


def _message(error: object) -> Any:
    try:
        return getattr(error, "message", None)
    except BaseException as exc:
        _absorb(exc)
        return _placeholder(error)


#: The fields of dagcall's errors that their JSON records keep, with their defaults.
_ERROR_FIELDS: dict[str, Any] = {
    "tool": "",
    "task_id": None,
    "line": "",
    "model": "",
    "status_code": 0,
    "limit": "",
    "value": None,
}


def _error_dict(error: object) -> dict[str, Any]:
    """An error's JSON record: its class name, message, and the fields dagcall's errors
    have (``tool``, ``task_id``, ``line``, ``model``, ``status_code``, ``limit``, ``value``);
    ``kind`` names the nearest class of dagcall's tree when ``type`` is not one of them."""
    record: dict[str, Any] = {
        "type": _type_name(error),
        "message": safe_text(_message(error), None),
    }
    kind = _dagcall_kind(error)
    if kind is not None and kind.__name__ != record["type"]:
        record["kind"] = kind.__name__
    for name in _ERROR_FIELDS:
        try:
            if name in vars(error):
                record[name] = json_safe(vars(error)[name], max_chars=10_000)
        except BaseException as exc:
            _absorb(exc)
    return record


def _dagcall_kind(error: object) -> type[DagcallError] | None:
    try:
        for kind in type(error).__mro__:
            if getattr(kind, "__module__", None) == _errors.__name__:
                return kind
    except BaseException as exc:
        _absorb(exc)
    return None


def revive_error(record: object) -> DagcallError:
    """The error a JSON record (from ``to_dict``) describes, as the class it names: one of
    dagcall's own by its ``type``; any other name becomes a subclass of that name of the
    record's ``kind`` (or of :class:`~dagcall.DagcallError`), so that it reads the same.
    An error given as it is is returned as it is; any other value becomes a
    ``DagcallError`` holding its text."""
    if isinstance(record, DagcallError):
        return record
    if not isinstance(record, collections.abc.Mapping):
        return DagcallError(safe_text(record, 10_000))
    name = record.get("type")
    kind = record.get("kind")
    cls = _revived_class(
        name if isinstance(name, str) else "DagcallError",
        kind if isinstance(kind, str) else "",
    )
    message = record.get("message")
    error = cls.__new__(cls)
    DagcallError.__init__(error, message if isinstance(message, str) else safe_text(message))
    for field_name, default in _ERROR_FIELDS.items():
        if field_name in record:
            setattr(error, field_name, record[field_name])
        elif any(field_name in _FIELDS_OF.get(k.__name__, ()) for k in cls.__mro__):
            setattr(error, field_name, default)
    return error


#: Which error classes have which fields (their subclasses have them too).
_FIELDS_OF = {
    "PlanError": ("line", "task_id"),
    "ToolError": ("tool", "task_id"),
    "ModelError": ("model",),
    "ModelHTTPError": ("status_code",),
    "BudgetError": ("limit", "value"),
}


@functools.lru_cache(maxsize=256)
def _revived_class(name: str, kind: str) -> type[DagcallError]:
    own = getattr(_errors, name, None)
    if isinstance(own, type) and issubclass(own, DagcallError):
        return own
    base = getattr(_errors, kind, None)
    if not (isinstance(base, type) and issubclass(base, DagcallError)):
        base = DagcallError
    name = _clean(name[:200]) or "DagcallError"
    return type(name, (base,), {"__module__": "dagcall.revived", "__qualname__": name})


def _status_value(status: object) -> Any:
    try:
        return status.value if isinstance(status, StrEnum) else status
    except BaseException as exc:
        _absorb(exc)
        return status


def _export(fields: dict[str, Any]) -> dict[str, Any]:
    """Each field through :func:`json_safe` with its own budget, so that one enormous field
    cannot crowd out the others."""
    return {name: json_safe(value) for name, value in fields.items()}


_SMALL_INT = 1 << 62


def _int_digits_limit() -> int:
    configured = sys.get_int_max_str_digits()
    return MAX_INT_DIGITS if configured == 0 else min(configured, MAX_INT_DIGITS)


class _Walk:
    """One bounded walk over a value; ``cut`` tells whether anything was left out."""

    __slots__ = ("chars", "cut", "items", "max_depth", "open")

    def __init__(self, max_depth: int, max_items: int, max_chars: int) -> None:
        self.max_depth = max_depth
        self.items = max_items  # container items still allowed
        self.chars = max_chars  # characters still allowed (approximately)
        self.open: set[int] = set()  # ids of the containers being walked (to find cycles)
        self.cut = False

    def value(self, value: Any, depth: int) -> JSONValue:
        kind = type(value)
        if kind is int and -_SMALL_INT < value < _SMALL_INT:  # the common cases, fast
            self.chars -= 8
            return value  # type: ignore[no-any-return]
        if kind is str and str.__len__(value) < self.chars:
            self.chars -= str.__len__(value) + 2
            return _clean(value)
        try:
            return self._value(value, kind, depth)
        except BaseException as exc:
            _absorb(exc)
            return _placeholder(value)

    def _value(self, value: Any, kind: type, depth: int) -> JSONValue:
        if value is None:
            self.chars -= 4
            return None
        if kind is bool:
            self.chars -= 5
            return value is True
        if issubclass(kind, str):
            return self._str(value)
        if issubclass(kind, int):
            return self._int(int.__int__(value))
        if issubclass(kind, float):
            return self._float(float.__float__(value))
        if issubclass(kind, (bytes, bytearray)):
            base = bytes if issubclass(kind, bytes) else bytearray
            length = base.__len__(value)
            cap = max(self.chars, 0)
            text = repr(bytes(base.__getitem__(value, slice(0, cap))))
            if length > cap:
                self.cut = True
                text += f"… [{length - cap} more bytes]"
            self.chars -= len(text)
            return text
        container = self._container(value, kind)
        if container is None:
            return self._str(_text_of(value))
        if depth >= self.max_depth:
            self.cut = True
            return f"<{_type_name(value)} nested deeper than {self.max_depth} levels>"
        key = id(value)
        if key in self.open:
            return f"<cycle: {_type_name(value)}>"
        self.open.add(key)
        try:
            shape, items, total = container
            self.chars -= 2
            if shape == "list":
                return self._list(items, total, depth)
            return self._dict(items, total, depth)
        finally:
            self.open.discard(key)

    @staticmethod
    def _container(
        value: Any, kind: type
    ) -> tuple[Literal["list", "dict"], Iterator[Any], int | None] | None:
        """How to walk ``value`` if it is a container: its shape, items and length."""
        if kind is list or kind is tuple:
            return "list", iter(value), len(value)
        if kind is dict:
            return "dict", iter(value.items()), len(value)
        if issubclass(kind, dict):
            return "dict", iter(dict.items(value)), dict.__len__(value)
        for base in (list, tuple, set, frozenset):
            if issubclass(kind, base):
                return "list", base.__iter__(value), base.__len__(value)
        if dataclasses.is_dataclass(kind):
            names = [f.name for f in dataclasses.fields(kind)]
            return "dict", ((n, _attribute(value, n)) for n in names), len(names)
        fields = _pydantic_fields(kind)
        if fields is not None:
            extra = getattr(value, "__pydantic_extra__", None)
            pairs = [(n, _attribute(value, n)) for n in fields]
            if type(extra) is dict:
                pairs.extend(itertools.islice(extra.items(), EXPORT_MAX_ITEMS))
            return "dict", iter(pairs), len(pairs)
        if issubclass(kind, memoryview):
            return None
        if issubclass(kind, collections.abc.Mapping):
            return "dict", iter(value.items()), None
        if issubclass(kind, (collections.abc.Sequence, collections.abc.Set)):
            return "list", iter(value), None
        return None

    def _list(self, items: Iterator[Any], total: int | None, depth: int) -> list[JSONValue]:
        out: list[JSONValue] = []
        try:
            for item in items:  # self.value never raises: only the iteration can
                if self.items <= 0 or self.chars <= 0:
                    self.cut = True
                    more = "more items" if total is None else _more(total - len(out), "item")
                    out.append(f"… [{more}]")
                    return out
                self.items -= 1
                self.chars -= 2
                out.append(self.value(item, depth + 1))
        except BaseException as exc:
            _absorb(exc)
            out.append("<iteration failed>")
        return out

    def _dict(
        self, pairs: Iterator[tuple[Any, Any]], total: int | None, depth: int
    ) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {}
        suffixes: dict[str, int] = {}
        try:
            for key, item in pairs:  # neither _key nor value raises: only the iteration can
                if self.items <= 0 or self.chars <= 0:
                    self.cut = True
                    more = "more entries" if total is None else _more(total - len(out), "entry")
                    out[self._unique(out, suffixes, "…")] = f"[{more}]"
                    return out
                self.items -= 1
                name = self._unique(out, suffixes, self._key(key))
                self.chars -= len(name) + 4
                out[name] = self.value(item, depth + 1)
        except BaseException as exc:
            _absorb(exc)
            out[self._unique(out, suffixes, "…")] = "<iteration failed>"
        return out

    @staticmethod
    def _unique(out: dict[str, JSONValue], suffixes: dict[str, int], name: str) -> str:
        if name not in out:
            return name
        n = suffixes.get(name, 1)
        while True:
            n += 1
            candidate = f"{name} ({n})"
            if candidate not in out:
                suffixes[name] = n
                return candidate

    def _key(self, key: Any) -> str:
        try:
            kind = type(key)
            if kind is str and len(key) <= 1000:
                return _clean(key)
            if kind is int and -_SMALL_INT < key < _SMALL_INT:
                return int.__repr__(key)
            if key is None or kind is bool:
                return "null" if key is None else "true" if key else "false"
            if issubclass(kind, str):
                return _Walk(0, 0, 1000)._str(key)
            data = _Walk(4, 20, 200).value(key, 0)
            if isinstance(data, str):
                return data
            return json.dumps(data, ensure_ascii=False, allow_nan=False)[:1000]
        except BaseException as exc:
            _absorb(exc)
            return _placeholder(key)

    def _str(self, text: str) -> str:
        length = str.__len__(text)
        cap = max(self.chars, 0)
        if length <= cap:
            self.chars -= length + 2
            return _clean(str.__getitem__(text, slice(None)))
        self.cut = True
        self.chars = 0
        return f"{_clean(str.__getitem__(text, slice(0, cap)))}… [{length - cap} more characters]"

    def _int(self, number: int) -> int | str:
        digits_limit = _int_digits_limit()
        bits = number.bit_length()
        if bits < digits_limit * 3:  # below 10**digits_limit
            self.chars -= bits // 3 + 1
            return number
        if bits <= digits_limit * 10 // 3 + 4:  # about 10**digits_limit: count the digits
            try:
                digits = len(int.__repr__(number).lstrip("-"))
            except ValueError:
                digits = digits_limit + 1
            if digits <= digits_limit:
                self.chars -= digits
                return number
        self.cut = True
        self.chars -= 30
        sign = "negative " if number < 0 else ""
        return f"<{sign}int of about {int(math.log10(abs(number))) + 1} digits>"

    def _float(self, number: float) -> float | str:
        self.chars -= 24
        if math.isfinite(number):
            return number
        if number != number:
            return "NaN"
        return "Infinity" if number > 0 else "-Infinity"


def _more(count: int, noun: str) -> str:
    plural = noun if count == 1 else ("entries" if noun == "entry" else noun + "s")
    return f"{count} more {plural}"


def _text_of(value: object) -> str:
    """``str(value)``, else ``repr(value)``, else a placeholder; always an exact ``str``."""
    for render in (str, repr):
        try:
            text = render(value)
        except BaseException as exc:
            _absorb(exc)
            continue  # try the next rendering
        if isinstance(text, str):
            return str.__getitem__(text, slice(None))
    return _placeholder(value)


def _attribute(value: object, name: str) -> object:
    try:
        return getattr(value, name)
    except BaseException as exc:
        _absorb(exc)
        return _placeholder(value)


def _pydantic_fields(kind: type) -> list[str] | None:
    """The field names of a pydantic (v2) model class, else ``None``."""
    fields = getattr(kind, "__pydantic_fields__", None)
    if type(fields) is not dict or not hasattr(kind, "model_dump"):
        return None
    return [name for name in fields if type(name) is str]
