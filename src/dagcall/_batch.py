"""Batch runs: answer every question of a JSONL file, locally or as Ray tasks, resumably.

Input: one question a line, ``{"id": ..., "question": ..., ...}`` (other fields are kept and
written back under ``extra``) or a bare JSON string.  An id may be a string or an integer
(written back as its text); without one it is :func:`question_id` of the question, a stable
hash.  Blank lines are ignored.  A line that is not one of these, an empty question, or an id
already used on an earlier line is an :class:`InputProblem` (its line number and why): it is
skipped and counted, or with ``strict=True`` a :class:`BatchInputError` before anything runs.

Output: one JSON line per question, appended (flushed and ``fsync``-ed) as each finishes, so a
killed batch loses at most the questions in flight.  On resume the ids already in the output
are skipped (failed ones too, unless ``retry_failed``; a re-run's line supersedes the old one);
a torn last line, as a crash leaves, is cut off first.

A question is ``failed`` when its run raised (a model error, its ``timeout``, a budget), ended
other than by the joiner answering, or, unless ``allow_tool_errors``, when a task of it
failed (the joiner's answer is still written); everything else is ``answered``.  A failure is
written with its error and never stops the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._compiler import Compiler
from ._errors import DagcallError, UsageError
from ._pricing import run_cost
from ._result import RunResult, StopReason, TaskStatus

if TYPE_CHECKING:
    from ._tools import Tool
    from ._toolsets import Toolset

__all__ = [
    "BatchInputError",
    "BatchSummary",
    "CompilerSpec",
    "InputProblem",
    "OutputState",
    "Question",
    "QuestionFile",
    "RunSaver",
    "open_batch_store",
    "parse_questions",
    "percentile",
    "question_id",
    "read_output",
    "read_questions",
    "run_batch",
]

Status = Literal["answered", "failed"]
#: Seconds a Ray task may take past the question's own ``timeout`` before it is cancelled.
RAY_GRACE = 30.0


class BatchInputError(UsageError):
    """A questions file that cannot be read, or (``strict=True``) a malformed line in it."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Question:
    """One question of a batch: its id, text, line number and the input's other fields."""

    id: str
    question: str
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputProblem:
    """A line of the questions file that was skipped: its number (from 1) and why."""

    line: int
    message: str


@dataclass
class QuestionFile:
    questions: list[Question]
    problems: list[InputProblem]


def question_id(question: str) -> str:
    """The id of a question given without one: ``q`` and 12 hex digits of its SHA-256."""
    digest = hashlib.sha256(question.encode("utf-8", "surrogatepass")).hexdigest()
    return "q" + digest[:12]


def _question(value: object, line: int) -> Question | str:
    """The question a parsed line holds, or why it holds none."""
    qid: str | None
    extra: dict[str, Any]
    if isinstance(value, str):
        text, qid, extra = value, None, {}
    elif isinstance(value, dict):
        extra = {k: v for k, v in value.items() if k not in ("id", "question")}
        given = value.get("question")
        if not isinstance(given, str):
            return (
                'no "question" field'
                if "question" not in value
                else f'"question" is {type(given).__name__}, not text'
            )
        text = given
        raw = value.get("id")
        if raw is None:
            qid = None
        elif isinstance(raw, bool) or not isinstance(raw, str | int):
            return f'"id" is {type(raw).__name__}, not text or an integer'
        else:
            qid = str(raw)
            if not qid.strip():
                return '"id" is empty'
    else:
        return f"a line must hold an object or a string, not {type(value).__name__}"
    if not text.strip():
        return "the question is empty"
    return Question(qid if qid is not None else question_id(text), text, line, extra)


def parse_questions(
    lines: Iterable[str], *, strict: bool = False, source: str = "the questions"
) -> QuestionFile:
    """The questions of JSONL text (see the module's documentation); ``strict`` makes the
    first malformed line a :class:`BatchInputError` instead of an :class:`InputProblem`."""
    questions: list[Question] = []
    problems: list[InputProblem] = []
    first: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            parsed: object = json.loads(text)
        except ValueError as exc:
            got: Question | str = f"not JSON ({exc})"
        else:
            got = _question(parsed, number)
        if isinstance(got, Question) and got.id in first:
            got = f"duplicate id {got.id!r} (first on line {first[got.id]})"
        if isinstance(got, str):
            if strict:
                raise BatchInputError(f"{source}, line {number}: {got}", number)
            problems.append(InputProblem(number, got))
            continue
        first[got.id] = number
        questions.append(got)
    return QuestionFile(questions, problems)


def read_questions(path: str | os.PathLike[str], *, strict: bool = False) -> QuestionFile:
    """The questions of a JSONL file (UTF-8); an unreadable file is a BatchInputError."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise BatchInputError(f"the questions file {p} is a folder") from None
    except OSError as exc:
        raise BatchInputError(f"cannot read the questions file {p}: {exc.strerror or exc}") from exc
    text = data.decode("utf-8", "surrogateescape")
    return parse_questions(text.splitlines(), strict=strict, source=str(p))


# -- the output file --------------------------------------------------------------------------


@dataclass
class OutputState:
    """What an output file already holds: each id's last status, and what was wrong."""

    statuses: dict[str, str] = field(default_factory=dict)
    torn: bool = False  # a torn last line was cut off
    bad_lines: list[int] = field(default_factory=list)  # complete lines that are not records


def read_output(path: str | os.PathLike[str], *, repair: bool = True) -> OutputState:
    """The records already in an output file.  With ``repair``, a torn last line (no newline
    at the end, as a crash leaves) is cut off, or ended with a newline if it is whole."""
    p = Path(path)
    state = OutputState()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return state
    except IsADirectoryError:
        raise UsageError(f"the output {p} is a folder, not a file") from None
    except OSError as exc:
        raise UsageError(f"cannot read the output file {p}: {exc.strerror or exc}") from exc
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" when the file ends with one
    for number, raw in enumerate(lines, start=1):
        if raw.strip() and not _record(raw, state):
            state.bad_lines.append(number)
    if tail.strip():
        whole = _record(tail, state)
        if repair:
            with p.open("r+b") as file:
                if whole:
                    file.seek(0, os.SEEK_END)
                    file.write(b"\n")
                else:
                    file.truncate(len(data) - len(tail))
                    state.torn = True
                file.flush()
                os.fsync(file.fileno())
        elif not whole:
            state.torn = True
    return state


def _record(raw: bytes, state: OutputState) -> bool:
    try:
        data = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
        return False
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return False
    state.statuses[data["id"]] = str(data.get("status", "failed"))
    return True


class _Writer:
    """Appends one JSON line per record, flushed and synced to disk before the next."""

    def __init__(self, path: Path, sync: bool) -> None:
        self.path = path
        self.sync = sync
        try:
            self.file = path.open("a", encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            raise UsageError(f"cannot write the output file {path}: {exc.strerror or exc}") from exc

    def write(self, record: Mapping[str, Any]) -> None:
        try:
            line = json.dumps(record, ensure_ascii=False, allow_nan=False, default=str)
        except ValueError:  # NaN or infinity in a tool's output: those become null
            line = json.dumps(_finite(record), ensure_ascii=False, default=str)
        self.file.write(line + "\n")
        self.file.flush()
        if self.sync:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    return value


# -- building a compiler anywhere ---------------------------------------------------------------


@dataclass(frozen=True)
class CompilerSpec:
    """How to build the compiler, as data a Ray worker can rebuild it from.

    ``model`` is a model string (``openai:NAME``, ``simulated:...``, or a prefix a tools file
    registers with :func:`dagcall.models.register_model_provider`: the tools files are loaded
    before the model is resolved); ``tool_files`` are Python files whose ``@tool`` functions
    become tools (paths as the workers see them); ``builtins`` name built-in tools
    (``calculator``, ``math``, ``wikipedia``); ``examples`` is planner-examples text.
    """

    model: str | None = None
    tool_files: tuple[str, ...] = ()
    builtins: tuple[str, ...] = ()
    docs: str | None = None
    mcp: tuple[str, ...] = ()
    mcp_config: str | None = None
    examples: str | None = None
    max_replans: int = 2
    approve_all: bool = False

    def resolved(self) -> CompilerSpec:
        """This spec with absolute paths and the model named (``DAGCALL_MODEL`` read here)."""
        from .models import default_model_spec

        def absolute(path: str) -> str:
            return os.fspath(Path(path).expanduser().absolute())

        return CompilerSpec(
            model=self.model or default_model_spec(),
            tool_files=tuple(absolute(p) for p in self.tool_files),
            builtins=self.builtins,
            docs=absolute(self.docs) if self.docs else None,
            mcp=self.mcp,
            mcp_config=absolute(self.mcp_config) if self.mcp_config else None,
            examples=self.examples,
            max_replans=self.max_replans,
            approve_all=self.approve_all,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompilerSpec:
        fields = dict(data)
        for name in ("tool_files", "builtins", "mcp"):
            fields[name] = tuple(fields.get(name) or ())
        return cls(**fields)

    def build(self) -> Compiler:
        """The compiler (a :class:`~dagcall.UsageError` saying what is wrong when it cannot
        be built)."""
        from .cli import load_tools_file
        from .models import resolve_model

        tools: list[Tool | Toolset] = []
        for path in self.tool_files:
            try:
                tools += load_tools_file(Path(path))
            except DagcallError:
                raise
            except Exception as exc:  # the CLI's one-line failure
                raise UsageError(str(getattr(exc, "message", exc))) from exc
        model = resolve_model(self.model)
        if self.mcp or self.mcp_config:
            from .mcp import from_spec, load_config

            tools += [from_spec(spec) for spec in self.mcp]
            if self.mcp_config:
                tools += load_config(Path(self.mcp_config))
        for name in self.builtins:
            from . import tools as builtin

            if name == "calculator":
                tools.append(builtin.calculator)
            elif name == "math":
                tools.append(builtin.math_tool(model))
            elif name == "wikipedia":
                tools.append(builtin.wikipedia)
            else:
                raise UsageError(f"unknown built-in tool {name!r}")
        if self.docs:
            from .tools import docs_tool

            tools.append(docs_tool(Path(self.docs)))
        if not tools:
            raise UsageError("no tools: give tool files, built-in tools, docs or MCP servers")
        return Compiler(
            model=model,
            tools=tools,
            max_replans=self.max_replans,
            examples=self.examples,
            approve=_approve_all if self.approve_all else None,
        )


def _approve_all(task: object) -> bool:
    return True


# -- one run, locally or in a Ray worker --------------------------------------------------------


@dataclass
class _Outcome:
    result: RunResult | None
    error_type: str | None = None
    error: str | None = None
    elapsed: float = 0.0


def _error_text(exc: BaseException) -> tuple[str, str]:
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        try:
            message = str(exc)
        except Exception:  # a hostile __str__
            message = ""
    return type(exc).__name__, " ".join(message.split())[:4000]


async def _run_local(compiler: Compiler, question: str, budget: float | None) -> _Outcome:
    start = time.perf_counter()
    try:
        result = await compiler.arun(question, timeout=budget)
    except Exception as exc:
        partial = getattr(exc, "result", None)
        kind, message = _error_text(exc)
        return _Outcome(
            partial if isinstance(partial, RunResult) else None,
            kind,
            message,
            time.perf_counter() - start,
        )
    return _Outcome(result, elapsed=time.perf_counter() - start)


#: Per worker process: the compilers built there (by spec) and the event loop runs use, so
#: that a model's connection pool outlives one question.
_WORKER_COMPILERS: dict[str, Compiler] = {}
_WORKER_LOOP: list[asyncio.AbstractEventLoop] = []


def ray_task(spec: dict[str, Any], question: str, timeout: float | None) -> dict[str, Any]:
    """What a Ray worker runs for one question: builds (once per process) the compiler the
    spec describes, runs the question, and returns the run as JSON text with any error."""
    key = json.dumps(spec, sort_keys=True)
    start = time.perf_counter()
    try:
        compiler = _WORKER_COMPILERS.get(key)
        if compiler is None:
            compiler = _WORKER_COMPILERS[key] = CompilerSpec.from_dict(spec).build()
        if not _WORKER_LOOP:
            _WORKER_LOOP.append(asyncio.new_event_loop())
        outcome = _WORKER_LOOP[0].run_until_complete(_run_local(compiler, question, timeout))
    except Exception as exc:
        kind, message = _error_text(exc)
        outcome = _Outcome(None, kind, message, time.perf_counter() - start)
    return {
        "run": outcome.result.to_json(indent=None) if outcome.result is not None else None,
        "error_type": outcome.error_type,
        "error": outcome.error,
        "elapsed": outcome.elapsed,
    }


def _outcome_of(data: Mapping[str, Any]) -> _Outcome:
    run = data.get("run")
    result = RunResult.model_validate_json(run) if isinstance(run, str) else None
    return _Outcome(result, data.get("error_type"), data.get("error"), float(data["elapsed"]))


class _RayRunner:
    """Each question a Ray task; the tasks awaited on the event loop (``await ref``)."""

    def __init__(self, address: str, spec: CompilerSpec, num_cpus: float, tasks: int) -> None:
        self.started = connect_ray(address, tasks)  # a UsageError when Ray is not installed
        import ray

        self.ray = ray
        self.spec = spec.to_dict()
        self.remote = ray.remote(num_cpus=num_cpus, max_retries=0)(ray_task)

    async def run(self, question: str, budget: float | None) -> _Outcome:
        start = time.perf_counter()
        ref = self.remote.remote(self.spec, question, budget)
        try:
            if budget is None:
                data = await ref
            else:
                data = await asyncio.wait_for(_awaited(ref), budget + RAY_GRACE)
            return _outcome_of(data)
        except TimeoutError:
            self._cancel(ref)
            message = f"the Ray task did not end within {(budget or 0) + RAY_GRACE:g} s"
            return _Outcome(None, "RunTimeoutError", message, time.perf_counter() - start)
        except Exception as exc:  # the worker died, the task could not be scheduled ...
            self._cancel(ref)
            kind, message = _error_text(exc)
            return _Outcome(None, kind, message, time.perf_counter() - start)
        except BaseException:
            self._cancel(ref)
            raise

    def _cancel(self, ref: Any) -> None:
        with contextlib.suppress(Exception):
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def connect_ray(address: str, tasks: int) -> bool:
    """Connect this process to Ray as ``dagcall batch --ray`` does: ``"local"`` starts a local
    instance (keeping ``tasks`` worker processes warm), ``"auto"`` joins a running cluster or
    starts one, anything else is a cluster's address.  Returns whether this call started Ray
    (then the caller shuts it down); already connected, it does nothing."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(
            "Ray is not installed: pip install 'dagcall[ray]' (or 'ray>=2.50,<3')"
        ) from exc
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    if address == "local":
        with _worker_limit(tasks):
            ray.init(address="local", **options)
    elif address == "auto":
        ray.init(**options)  # a running cluster if there is one, else a new local one
    else:
        ray.init(address=address, **options)
    return True


@contextlib.contextmanager
def _worker_limit(tasks: int) -> Iterator[None]:
    """While a local Ray instance starts: let it keep ``tasks`` idle worker processes.

    Ray keeps at most as many idle workers as CPUs and kills the rest within a second, so
    more tasks in flight than CPUs (``ray_cpus`` < 1) would start a fresh worker, which
    imports dagcall and rebuilds the compiler, for most questions.
    """
    name = "RAY_num_workers_soft_limit"
    if name in os.environ:  # the user's own setting
        yield
        return
    os.environ[name] = str(max(tasks, os.cpu_count() or 1))
    try:
        yield
    finally:
        os.environ.pop(name, None)


async def _awaited(ref: Any) -> Any:
    return await ref


# -- storing runs ----------------------------------------------------------------------------


class RunSaver(Protocol):
    """What a batch saves runs with: :class:`dagcall.store.RunStore` and the stores
    ``dagcall.store.open_store`` returns."""

    def save(
        self, result: RunResult, *, planner: str = ..., joiner: str = ..., run_id: str | None = ...
    ) -> str: ...


def open_batch_store(spec: str | os.PathLike[str] | None = None) -> RunSaver:
    """The run store at ``spec`` (a SQLite path or a ``postgresql://`` URL; ``None``:
    ``$DAGCALL_STORE``, else the default one), created if needed: ``dagcall.store.open_store``."""
    from .store import open_store

    saver: RunSaver = open_store(spec, create=True)
    return saver


# -- the summary --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class BatchSummary:
    """What a batch did.  ``total`` counts the valid questions of the input; ``skipped`` those
    already in the output; ``answered`` + ``failed`` those run now (latencies, tokens and cost
    are theirs); ``invalid`` the malformed input lines (see ``problems``); ``pending`` those
    not run because the batch was interrupted."""

    total: int = 0
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    invalid: int = 0
    pending: int = 0
    interrupted: bool = False
    latency_p50: float | None = None
    latency_p90: float | None = None
    latency_p99: float | None = None
    latency_max: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    cost: float | None = None  # dollars, for the runs whose models have known prices
    unpriced_runs: int = 0
    unsaved_runs: int = 0
    wall_time: float = 0.0  # from the first question started (after Ray is up) to the last
    throughput: float = 0.0  # questions run per second of wall time
    concurrency: int = 1
    mode: str = "local"
    output: str = ""
    problems: list[InputProblem] = field(default_factory=list)
    torn_line_repaired: bool = False
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def ran(self) -> int:
        return self.answered + self.failed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latencies")
        data["problems"] = [asdict(p) for p in self.problems]
        return data

    def _finish(self) -> None:
        self.latency_p50 = percentile(self.latencies, 50)
        self.latency_p90 = percentile(self.latencies, 90)
        self.latency_p99 = percentile(self.latencies, 99)
        self.latency_max = max(self.latencies) if self.latencies else None
        self.throughput = self.ran / self.wall_time if self.wall_time > 0 else 0.0


def _status(outcome: _Outcome, allow_tool_errors: bool) -> tuple[Status, str | None, str | None]:
    result = outcome.result
    if outcome.error is not None or outcome.error_type is not None:
        return "failed", outcome.error_type, outcome.error
    if result is None:  # pragma: no cover - an outcome has a result or an error
        return "failed", "Error", "no result"
    if result.stop_reason != StopReason.FINISH:
        return "failed", "StopReason", f"the run stopped: {result.stop_reason}"
    failed = [t for t in result.tasks if t.status == TaskStatus.FAILED]
    if failed and not allow_tool_errors:
        first = failed[0]
        message = first.error.message if first.error is not None else "failed"
        return "failed", type(first.error).__name__, f"{len(failed)} task(s) failed: {message}"
    return "answered", None, None


def _cost(result: RunResult) -> float | None:
    try:
        return run_cost(result)
    except Exception:  # pragma: no cover - prices are plain arithmetic
        return None


# -- the batch ----------------------------------------------------------------------------------


async def run_batch(
    questions: str | os.PathLike[str] | Iterable[Question],
    out: str | os.PathLike[str],
    *,
    compiler: Compiler | None = None,
    spec: CompilerSpec | None = None,
    concurrency: int = 4,
    timeout: float | None = None,  # noqa: ASYNC109 - each question's run budget
    store: RunSaver | None = None,
    ray: str | None = None,
    ray_cpus: float = 1.0,
    retry_failed: bool = False,
    allow_tool_errors: bool = False,
    include_run: bool = False,
    strict: bool = False,
    sync: bool = True,
    on_start: Callable[[int, BatchSummary], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> BatchSummary:
    """Answer every question (a JSONL path, or :class:`Question` objects) not already in
    ``out``, appending one JSON line each to ``out`` as it finishes; returns the summary.

    Locally, ``concurrency`` runs share one compiler (``compiler``, else ``spec.build()``;
    a compiler keeps no per-run state, so concurrent runs are independent).  With ``ray``
    (an address, ``"auto"`` or ``"local"``), each question is a Ray task running a whole run
    in a worker, which builds its compiler from ``spec`` (required then), with
    ``concurrency`` tasks in flight, each reserving ``ray_cpus`` CPUs.  ``store`` saves
    every run (the run id goes in the line).  ``timeout`` is each run's budget, s.

    Cancelled (Ctrl-C), the runs in flight are cancelled and the output holds every line
    written so far, each whole; the summary (``interrupted``) is not returned then, the
    :class:`asyncio.CancelledError` is raised.  ``sync=False`` skips the ``fsync`` of each
    line (faster on slow disks; a machine crash may then lose more).
    """
    if concurrency < 1:
        raise UsageError("concurrency must be 1 or more")
    if timeout is not None and not timeout > 0:
        raise UsageError("timeout must be positive")
    if isinstance(questions, str | os.PathLike):
        parsed = read_questions(questions, strict=strict)
    else:
        parsed = QuestionFile([], [])
        first: dict[str, int] = {}
        for q in questions:
            if q.id in first:
                message = f"duplicate id {q.id!r} (first on line {first[q.id]})"
                parsed.problems.append(InputProblem(q.line, message))
            else:
                first[q.id] = q.line
                parsed.questions.append(q)
    out_path = Path(out)
    state = read_output(out_path)
    summary = BatchSummary(
        total=len(parsed.questions),
        invalid=len(parsed.problems),
        problems=parsed.problems,
        concurrency=concurrency,
        mode=f"ray:{ray}" if ray else "local",
        output=os.fspath(out_path),
        torn_line_repaired=state.torn,
    )
    todo: list[Question] = []
    for q in parsed.questions:
        status = state.statuses.get(q.id)
        if status is not None and (status == "answered" or not retry_failed):
            summary.skipped += 1
        else:
            todo.append(q)
    summary.pending = len(todo)

    runner: _RayRunner | None = None
    if ray:
        if spec is None:
            raise UsageError("a Ray batch needs a CompilerSpec (spec=...) the workers can rebuild")
        spec = spec.resolved()
        if compiler is None:  # built here too: a bad tools file or model fails before any task
            compiler = spec.build()
    elif compiler is None:
        if spec is None:
            raise UsageError("give a compiler or a CompilerSpec")
        compiler = spec.resolved().build()
    planner, joiner = compiler.planner.name, compiler.joiner.name
    if on_start is not None:
        on_start(len(todo), summary)
    if not todo:
        return summary

    writer = _Writer(out_path, sync)
    start = time.perf_counter()  # reset once Ray is up: the wall time is the questions'

    pending = iter(todo)  # shared by the workers: each question is taken once

    async def worker() -> None:
        for q in pending:
            if runner is not None:
                outcome = await runner.run(q.question, timeout)
            elif compiler is not None:
                outcome = await _run_local(compiler, q.question, timeout)
            else:  # pragma: no cover - one of them is set above
                raise UsageError("no compiler")
            record = await _finish(q, outcome)
            writer.write(record)
            summary.pending -= 1
            if on_record is not None:
                on_record(record)

    async def _finish(q: Question, outcome: _Outcome) -> dict[str, Any]:
        status, error_type, error = _status(outcome, allow_tool_errors)
        result = outcome.result
        record: dict[str, Any] = {"id": q.id, "question": q.question, "status": status}
        record["answer"] = result.answer if result is not None else None
        record["error_type"] = error_type
        record["error"] = error
        latency = result.wall_time if result is not None and result.wall_time else outcome.elapsed
        record["latency"] = round(latency, 6)
        run_id = None
        if result is not None:
            cost = _cost(result)
            record.update(
                stop_reason=str(result.stop_reason),
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                llm_calls=result.llm_calls,
                tasks=len(result.tasks),
                tasks_failed=sum(t.status == TaskStatus.FAILED for t in result.tasks),
                cost=cost,
            )
            summary.input_tokens += result.input_tokens
            summary.output_tokens += result.output_tokens
            summary.llm_calls += result.llm_calls
            if cost is None:
                summary.unpriced_runs += 1
            else:
                summary.cost = (summary.cost or 0.0) + cost
            if store is not None:
                try:
                    run_id = await asyncio.to_thread(
                        store.save, result, planner=planner, joiner=joiner
                    )
                except Exception as exc:
                    summary.unsaved_runs += 1
                    record["store_error"] = " ".join(_error_text(exc))
        record["run_id"] = run_id
        record["finished_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        if q.extra:
            record["extra"] = q.extra
        if include_run and result is not None:
            record["run"] = result.to_dict()
        if status == "answered":
            summary.answered += 1
        else:
            summary.failed += 1
        summary.latencies.append(latency)
        return record

    try:
        if ray and spec is not None:
            runner = _RayRunner(ray, spec, ray_cpus, concurrency)
            start = time.perf_counter()
        tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(todo)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            summary.interrupted = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        writer.close()
        summary.wall_time = time.perf_counter() - start
        summary._finish()
        if runner is not None:
            runner.close()
    return summary
