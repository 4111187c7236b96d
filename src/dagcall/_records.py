"""Reading a run back from its JSON, however damaged, as a typed :class:`~dagcall.RunResult`.

:func:`read_run` reads what ``RunResult.to_dict()`` wrote exactly (through the records'
pydantic schema) and, when that fails (a stored run damaged on disk, a file from an older
version, data edited by hand), tidies the data until it fits, saying in ``repairs`` what it had
to change: fields of the wrong type are read as far as they can be, task ids that are not
ints get new ones (references to them follow), and what still does not fit is dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar, overload

from ._result import RunResult, StopReason, TaskStatus, _adapter, observation_text

__all__ = ["read_run", "tidy_run", "typed_run"]

R = TypeVar("R", bound=RunResult)


def tidy_run(run: object) -> dict[str, Any]:
    """A run (``RunResult.to_dict()`` or a stored run, however damaged) with every field that
    ``dagcall show``, the Mermaid graph and the timeline read present and of its type.

    Text fields are ``str``; times are finite ``float`` (``None`` where optional); counts are
    ``int``; ids are hashable (``int`` as they were, anything unhashable as its JSON text);
    ``rounds``, ``tasks``, ``usage``, ``deps``, ``task_ids`` and ``errors`` are lists of these.
    Fields it does not know are kept as they are.
    """
    src: Mapping[str, Any] = run if isinstance(run, Mapping) else {}
    out: dict[str, Any] = {str(k): v for k, v in src.items()}
    out["question"] = _text_of(src.get("question"))
    out["answer"] = _text_of(src.get("answer"))
    out["stop_reason"] = _text_of(src.get("stop_reason"))
    tasks = [_tidy_task(t, i) for i, t in enumerate(_list_of(src.get("tasks")))]
    usage = [_tidy_call(c) for c in _list_of(src.get("usage"))]
    ends = [t["ended_at"] for t in tasks if t["ended_at"] is not None]
    ends += [c["ended_at"] for c in usage]
    wall = _time_of(src.get("wall_time"))
    out["wall_time"] = wall if wall is not None else max([0.0, *ends])
    out["rounds"] = [_tidy_round(r, i) for i, r in enumerate(_list_of(src.get("rounds")))]
    out["tasks"] = tasks
    out["usage"] = usage
    return out


def _list_of(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _map_of(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text_of(value: object) -> str:
    if isinstance(value, str):
        return str(value)
    if value is None:
        return ""
    return observation_text(value, 10_000)


def _time_of(value: object) -> float | None:
    """A finite number of seconds, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _int_of(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return default


def _key_of(value: object) -> Any:
    """An id usable as a dict key and printable: ints, strings and other scalars as they are
    (ints too long to print as text in hexadecimal), anything else as its JSON text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        number = int(value)
        return number if number.bit_length() < 13_000 else f"{number:#x}"
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return observation_text(value, 200)


def _error_of(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        record: dict[str, Any] = {str(k): v for k, v in value.items()}
        record["type"] = _text_of(value.get("type"))
        record["message"] = _text_of(value.get("message"))
        return record
    return {"type": "", "message": _text_of(value)}


def _tidy_task(value: object, position: int) -> dict[str, Any]:
    src = _map_of(value)
    task: dict[str, Any] = {str(k): v for k, v in src.items()}
    task["id"] = _key_of(src.get("id", f"?{position + 1}"))
    for name in ("tool", "call", "status"):
        task[name] = _text_of(src.get(name))
    task["round"] = _int_of(src.get("round"), 0)
    task["deps"] = [_key_of(d) for d in _list_of(src.get("deps"))]
    task["error"] = _error_of(src.get("error"))
    task["parsed_at"] = _time_of(src.get("parsed_at")) or 0.0
    for name in ("ready_at", "started_at", "ended_at"):
        task[name] = _time_of(src.get(name))
    task.setdefault("output", None)
    return task


def _tidy_call(value: object) -> dict[str, Any]:
    src = _map_of(value)
    call: dict[str, Any] = {str(k): v for k, v in src.items()}
    call["role"] = _text_of(src.get("role"))
    call["model"] = _text_of(src.get("model"))
    call["round"] = _int_of(src.get("round"), 0)
    call["input_tokens"] = _int_of(src.get("input_tokens"), 0)
    call["output_tokens"] = _int_of(src.get("output_tokens"), 0)
    start = _time_of(src.get("started_at")) or 0.0
    end = _time_of(src.get("ended_at"))
    call["started_at"] = start
    call["ended_at"] = end if end is not None else start
    latency = _time_of(src.get("latency"))
    call["latency"] = latency if latency is not None else call["ended_at"] - start
    call["time_to_first_token"] = _time_of(src.get("time_to_first_token"))
    call["estimated"] = (
        bool(src.get("estimated")) if isinstance(src.get("estimated"), bool) else False
    )
    task_id = src.get("task_id")
    call["task_id"] = None if task_id is None else _key_of(task_id)
    return call


def _tidy_round(value: object, position: int) -> dict[str, Any]:
    src = _map_of(value)
    rnd: dict[str, Any] = {str(k): v for k, v in src.items()}
    rnd["index"] = _int_of(src.get("index"), position)
    rnd["plan"] = _text_of(src.get("plan"))
    rnd["task_ids"] = [_key_of(i) for i in _list_of(src.get("task_ids"))]
    rnd["errors"] = [e for e in map(_error_of, _list_of(src.get("errors"))) if e is not None]
    rnd["joiner_output"] = _text_of(src.get("joiner_output"))
    rnd["decision"] = _text_of(src.get("decision"))
    return rnd


# -- a typed run from any data -------------------------------------------------------------

_STOP_REASONS = {reason.value for reason in StopReason}
_STATUSES = {status.value for status in TaskStatus}
_ROLES = {"planner", "joiner", "tool", "react"}
_DECISIONS = {"finish", "replan", ""}
_ERROR_NAME = re.compile(r"[A-Z]\w*(?:Error|Exception)")
#: Repairs listed one by one; beyond this many, one line counts the rest.
MAX_REPAIRS_LISTED = 50


@overload
def read_run(data: object) -> tuple[RunResult, list[str]]: ...
@overload
def read_run(data: object, kind: type[R]) -> tuple[R, list[str]]: ...


def read_run(data: object, kind: type[Any] = RunResult) -> tuple[Any, list[str]]:
    """A typed run (``kind``: :class:`RunResult` or a subclass) from ``data`` (what
    ``to_dict()`` gave, or that JSON parsed), and the list of what had to be repaired to read
    it (empty when it was read exactly).  Never raises for any data: what cannot be read is
    replaced or dropped, and said so in the list."""
    adapter = _adapter(kind)
    from pydantic import ValidationError

    try:
        return adapter.validate_python(data), []
    except ValidationError:
        pass
    repairs: list[str] = []
    tidy = tidy_run(data)
    if not isinstance(data, Mapping):
        repairs.append(f"the run is a {type(data).__name__}, not an object; read as empty")
    _known_values(tidy, repairs)
    _renumber(tidy, repairs)
    for _ in range(10_000):  # each pass removes at least one problem
        try:
            run = adapter.validate_python(tidy)
        except ValidationError as exc:
            if not any(_drop(tidy, e["loc"], e["msg"], repairs) for e in exc.errors()):
                raise  # nothing left to drop: a bug in the tidying, not in the data
            continue
        return run, _listed(repairs)
    raise AssertionError("read_run did not converge")  # pragma: no cover


def _listed(repairs: list[str]) -> list[str]:
    if len(repairs) <= MAX_REPAIRS_LISTED:
        return repairs
    more = len(repairs) - MAX_REPAIRS_LISTED
    return [*repairs[:MAX_REPAIRS_LISTED], f"... and {more} more repairs"]


def _short(value: object) -> str:
    """A value for a repair note: text in quotes, anything else as JSON, cut at 60."""
    if isinstance(value, str):
        return repr(observation_text(value, 60))
    return observation_text(value, 60)


def _known_values(run: dict[str, Any], repairs: list[str]) -> None:
    """Values of enumerations that this version does not know, read as the nearest it does."""
    reason = run["stop_reason"]
    if reason == "":
        run["stop_reason"] = StopReason.RUNNING.value
    elif reason not in _STOP_REASONS:
        run["stop_reason"] = StopReason.ERROR.value
        if _ERROR_NAME.fullmatch(reason) and not isinstance(run.get("error"), Mapping):
            run["error"] = {"type": reason, "message": ""}  # how older versions said it
        else:
            repairs.append(f"stop reason {_short(reason)} is not known; read as 'error'")
    error = run.get("error")
    if error is not None:
        run["error"] = _error_of(error)
    for task in run["tasks"]:
        if task["status"] not in _STATUSES:
            repairs.append(
                f"task {_short(task['id'])}: status {_short(task['status'])} is not known; "
                "read as 'failed'"
            )
            task["status"] = TaskStatus.FAILED.value
            if task["error"] is None:
                task["error"] = {"type": "DagcallError", "message": "(status unknown)"}
        for name in ("args", "kwargs", "resolved_args"):
            if name in task and not _fits(name, task[name]):
                repairs.append(f"task {_short(task['id'])}: {name} could not be read")
                del task[name]
    kept = []
    for position, call in enumerate(run["usage"]):
        if call["role"] in _ROLES:
            kept.append(call)
        else:
            repairs.append(f"LLM call {position + 1}: role {_short(call['role'])} is not known")
    run["usage"] = kept
    for rnd in run["rounds"]:
        if rnd["decision"] not in _DECISIONS:
            repairs.append(f"round {rnd['index'] + 1}: decision {_short(rnd['decision'])} dropped")
            rnd["decision"] = ""


def _fits(name: str, value: object) -> bool:
    if name == "args":
        return isinstance(value, list | tuple)
    if name == "resolved_args":
        return value is None or isinstance(value, Mapping)
    return isinstance(value, Mapping)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _renumber(run: dict[str, Any], repairs: list[str]) -> None:
    """Give tasks whose ids are not ints new ids after the largest, and follow them in
    ``deps``, rounds' ``task_ids`` and calls' ``task_id``; references to no task are dropped."""
    ids = [t["id"] for t in run["tasks"] if _is_id(t["id"])]
    following = max(ids, default=0) + 1
    new: dict[Any, int] = {}
    for task in run["tasks"]:
        key = task["id"]
        if _is_id(key):
            continue
        if key not in new:
            new[key] = following
            repairs.append(f"task id {_short(key)} is not an int; read as {following}")
            following += 1
        task["id"] = new[key]

    def follow(key: Any, where: str) -> int | None:
        if _is_id(key):
            return int(key)
        if key in new:
            return new[key]
        repairs.append(f"{where}: reference {_short(key)} names no task; dropped")
        return None

    for task in run["tasks"]:
        deps = (follow(d, f"task {task['id']}") for d in task["deps"])
        task["deps"] = [d for d in deps if d is not None]
    for rnd in run["rounds"]:
        found = (follow(i, f"round {rnd['index'] + 1}") for i in rnd["task_ids"])
        rnd["task_ids"] = [i for i in found if i is not None]
    for call in run["usage"]:
        if call["task_id"] is not None:
            call["task_id"] = follow(call["task_id"], "an LLM call")


def _drop(run: dict[str, Any], loc: tuple[int | str, ...], msg: str, repairs: list[str]) -> bool:
    """Remove what a validation error points at: the field (so its default applies), or, for
    a field that must be there, the record holding it.  Whether anything was removed."""
    if not loc:
        return False
    where = ".".join(str(part) for part in loc)
    parent: Any = run
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = loc[-1]
    if isinstance(parent, dict) and last in parent and len(loc) >= 3:
        # a field of a record in a list: drop the field, or the record if it is required
        if last in _REQUIRED.get(str(loc[0]), ()):
            container: Any = run
            for part in loc[:-3]:
                container = container[part]
            records = container[loc[-3]]
            index = loc[-2]
            if isinstance(records, list) and isinstance(index, int) and index < len(records):
                del records[index]
                repairs.append(f"{where}: {msg}; the record was dropped")
                return True
            return False
        del parent[last]
        repairs.append(f"{where}: {msg}; read as its default")
        return True
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        repairs.append(f"{where}: {msg}; read as its default")
        return True
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        del parent[last]
        repairs.append(f"{where}: {msg}; dropped")
        return True
    return False


#: Fields without a default, per list of records.
_REQUIRED = {
    "tasks": ("id", "tool", "call", "round"),
    "usage": (
        "role",
        "model",
        "round",
        "input_tokens",
        "output_tokens",
        "started_at",
        "ended_at",
        "time_to_first_token",
    ),
    "rounds": ("index",),
}


def typed_run(run: RunResult | Mapping[str, Any]) -> RunResult:
    """``run`` as a :class:`RunResult`: a run as it is; data (``to_dict()`` or a stored run,
    however damaged) read with :func:`read_run`."""
    return run if isinstance(run, RunResult) else read_run(run)[0]
