"""The ``dagcall`` command: ask a question, run the demo, look at saved runs."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.machinery
import importlib.util
import io
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

import click
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from dagcall import (
    Compiler,
    DagcallError,
    ModelNotAvailableError,
    Optimizations,
    RunEvent,
    RunResult,
    Tool,
    Toolset,
    UsageError,
    __version__,
)
from dagcall.models import Model, resolve_model

from ._live import LiveView, PlainReporter, as_json_ready, render_result, summary_line

if TYPE_CHECKING:
    from dagcall.store import Store, StoredRun

__all__ = ["main"]

#: Run ids saved by this invocation, so that a failure at the end can still name them.
_SAVED: list[str] = []

BUILTIN_TOOLS = ("calculator", "math", "wikipedia")
#: The largest --examples file read (a device such as /dev/zero never ends).
MAX_EXAMPLES_BYTES = 10_000_000
#: What a closed output pipe exits with: 128 + SIGPIPE, as a program the signal stopped.
EXIT_BROKEN_PIPE = 141
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.2+
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class _Failure(Exception):
    """A one-line error for the person at the terminal, with the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Output(io.TextIOBase):
    """stdout or stderr as ``main`` hands it to click, rich and tools: it never raises.

    Text the stream's encoding cannot hold (a lone surrogate from a model) is written with
    replacements; once a write fails (a full disk, a closed pipe) the rest is dropped and the
    first failure kept in :attr:`failure`, so that a run goes on (and is saved) and ``main``
    reports the lost output once, at the end.
    """

    def __init__(self, stream: TextIO | None, replace: str) -> None:
        super().__init__()
        self.stream: Any = stream
        self.replace = replace
        self.failure: Exception | None = None
        if stream is None:  # started with the descriptor closed (``>&-``)
            self.failure = OSError(9, "the stream is closed")

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.stream, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str:  # type: ignore[override]
        return self.replace

    def isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        if self.stream is None:
            raise io.UnsupportedOperation("the stream is closed")
        return int(self.stream.fileno())

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.failure is None:
            try:
                try:
                    self.stream.write(text)
                except UnicodeEncodeError:
                    encoding = self.encoding
                    self.stream.write(
                        text.encode(encoding, self.replace).decode(encoding, "replace")
                    )
            except (OSError, ValueError) as exc:
                self.failure = exc
        return len(text)

    def flush(self) -> None:
        if self.failure is None:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                self.failure = exc


def _one_line(text: str, limit: int = 4000) -> str:
    """A message as one printable line: newlines and runs of space become one space, terminal
    control characters their escapes, lone surrogates U+FFFD; at most ``limit`` characters."""
    if len(text) > 4 * limit:
        text = text[: 4 * limit]
    text = " ".join(_SURROGATE.sub("\ufffd", text).split())
    text = _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    """``Type: message`` for an exception, on one line; an exception group by its first
    exception."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (sys.exit was called)"
    try:
        message = str(exc)
    except Exception:  # a hostile __str__
        message = ""
    name = type(exc).__name__
    return _one_line(f"{name}: {message}" if message else name)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # logs and pipes: tables need not fit 80 columns
        console.width = 140
    return console


def _fail(message: str, code: int = 1) -> NoReturn:
    raise _Failure(message, code)


def _finite_seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> Any:
    """A float option: NaN is refused; infinity means no limit (``None``) for --timeout."""
    if value is None:
        return None
    if math.isnan(value):
        raise click.BadParameter("must be a number, not NaN")
    if math.isinf(value):
        if param.name == "timeout":
            return None
        raise click.BadParameter("must be a finite number")
    return value


# -- building a compiler from options ---------------------------------------------------------


def load_tools_file(path: Path) -> list[Tool]:
    """Every :class:`~dagcall.Tool` defined at the top level of a Python file.

    Whatever importing the file raises, ``sys.exit()``, ``KeyboardInterrupt`` and other
    ``BaseException`` included, becomes a one-line failure naming the file.
    """
    if path.is_dir():
        _fail(f"tools file {path} is a folder, not a Python file")
    if not path.exists():
        _fail(f"tools file {path} does not exist")
    if not path.is_file():
        _fail(f"tools file {path} is not a regular file")
    name = f"dagcall_user_tools_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{len(sys.modules)}"
    loader = importlib.machinery.SourceFileLoader(name, os.fspath(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        _fail(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    try:
        loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        _fail(f"importing {path} failed: {_describe(exc)} (run with --debug for more)")
    tools = [v for v in list(vars(module).values()) if isinstance(v, Tool)]
    if not tools:
        _fail(f"{path} defines no tools; decorate functions with @dagcall.tool")
    return tools


def read_examples(path: Path) -> str:
    """The text of an --examples file, or a one-line failure saying why it cannot be read."""
    if path.is_dir():
        _fail(f"the examples file {path} is a folder, not a file", 2)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_EXAMPLES_BYTES + 1)
    except FileNotFoundError:
        _fail(f"the examples file {path} does not exist", 2)
    except OSError as exc:
        _fail(f"cannot read the examples file {path}: {exc.strerror or exc}", 2)
    if len(data) > MAX_EXAMPLES_BYTES:
        _fail(f"the examples file {path} is larger than {MAX_EXAMPLES_BYTES:,} bytes", 2)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(
            f"the examples file {path} is not UTF-8 text "
            f"(byte {exc.start} is {data[exc.start]:#x})",
            2,
        )


def _progress_reporter(console: Console) -> Callable[[int, int], None]:
    """Progress of assembling the local model, shown once on the terminal."""
    progress = Progress(
        TextColumn("assembling the local model"), BarColumn(), DownloadColumn(), console=console
    )
    task_id = progress.add_task("assemble", total=None)
    state = {"started": False}

    def report(done: int, total: int) -> None:
        if not state["started"]:
            progress.start()
            state["started"] = True
        progress.update(task_id, completed=done, total=total)
        if done >= total:
            progress.stop()

    return report


def _model(spec: str | None, console: Console) -> Model:
    model = resolve_model(spec)
    if console.is_terminal and hasattr(model, "progress") and model.progress is None:
        model.progress = _progress_reporter(console)
    return model


def _builtin(name: str, model: Model) -> Tool:
    from dagcall import tools

    if name == "calculator":
        return tools.calculator
    if name == "math":
        return tools.math_tool(model)
    if name == "wikipedia":
        return tools.wikipedia
    _fail(f"unknown built-in tool {name!r}; choose from {', '.join(BUILTIN_TOOLS)}", 2)


def build_compiler(
    *,
    model: str | None,
    tool_files: Sequence[Path],
    builtins: Sequence[str],
    docs: Path | None,
    max_replans: int,
    timeout: float | None,
    examples: Path | None,
    console: Console,
    yes: bool = False,
    mcp: Sequence[str] = (),
    mcp_config: Path | None = None,
) -> Compiler:
    resolved = _model(model, console)
    tools: list[Tool | Toolset] = []
    for path in tool_files:
        tools += load_tools_file(path)
    tools += _mcp_toolsets(mcp, mcp_config)
    tools += [_builtin(name, resolved) for name in builtins]
    if docs is not None:
        from dagcall.tools import docs_tool

        try:
            tools.append(docs_tool(docs))
        except OSError as exc:
            _fail(f"cannot read the docs folder {docs}: {exc.strerror or exc}", 2)
    if not tools:
        _fail(
            "no tools: pass --tools FILE.py, --tool calculator|math|wikipedia, --docs DIR, "
            "--mcp SERVER or --mcp-config FILE",
            2,
        )
    text = read_examples(examples) if examples is not None else None
    return Compiler(
        model=resolved,
        tools=tools,
        max_replans=max_replans,
        timeout=timeout,
        examples=text,
        approve=_approve_all if yes else None,
    )


def _mcp_toolsets(specs: Sequence[str], config: Path | None) -> list[Toolset]:
    """The MCP servers of ``--mcp`` (a command line, or an http(s) URL) and ``--mcp-config``
    (a ``{"mcpServers": {...}}`` file); each is started or reached when the run begins."""
    if not specs and config is None:
        return []
    from dagcall.mcp import from_spec, load_config

    toolsets: list[Toolset] = [from_spec(_argv_text(spec)) for spec in specs]
    if config is not None:
        toolsets += load_config(config)
    return toolsets


def _approve_all(task: object) -> bool:
    return True


Handler = Callable[[RunEvent], None]
Wrap = Callable[[Handler | None], Handler | None]


def run_with_view(
    compiler: Compiler,
    question: str,
    console: Console,
    *,
    wrap: Wrap = lambda handler: handler,
) -> RunResult:
    """Run a question, showing it live on a terminal and line by line elsewhere; ``wrap``
    adds to the event handler (tracing)."""
    if console.is_terminal:
        view = LiveView(question)
        with Live(view, console=console, refresh_per_second=8, transient=False):
            return compiler.run(question, on_event=wrap(view.handle))
    console.print(f"Q: {question}", highlight=False, markup=False)
    return compiler.run(question, on_event=wrap(PlainReporter(console).handle))


def _start_tracing() -> Callable[[], object]:
    """``--otel``: install the exporter the standard ``OTEL_*`` variables describe; returns
    how to flush the spans at the end (an API-only provider has nothing to flush)."""
    from dagcall.telemetry import configure_from_env

    provider = configure_from_env()
    flush: Callable[[], object] | None = getattr(provider, "force_flush", None)
    return flush or (lambda: None)


def _observer(enabled: bool) -> tuple[Any, Callable[[], object]]:
    """With ``--otel``: how the service traces each run (its id as ``dagcall.run_id``)."""
    if not enabled:
        return None, (lambda: None)
    from dagcall.telemetry import Tracing

    flush = _start_tracing()

    def observe(handler: Handler, run_id: str) -> Handler:
        return Tracing(on_event=handler, attributes={"dagcall.run_id": run_id}).handle

    return observe, flush


def _tracing(enabled: bool) -> tuple[Wrap, Callable[[], object]]:
    """With ``--otel``: a wrapper that traces each run (OpenTelemetry, exported where the
    standard ``OTEL_*`` variables say) and how to flush the spans at the end."""
    if not enabled:
        return (lambda handler: handler), (lambda: None)
    from dagcall.telemetry import Tracing

    return (lambda handler: Tracing(on_event=handler).handle), _start_tracing()


# -- commands ---------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _compiler_options(command: F) -> F:
    """The options that say what a compiler plans with: the model, the tools (files,
    built-ins, documents, MCP servers), planner examples and replans."""
    options = [
        click.option(
            "--model", "-m", help="A model string: local, local:FILE.gguf, openai:NAME[@URL]."
        ),
        click.option(
            "--tools",
            "tool_files",
            multiple=True,
            type=click.Path(path_type=Path),
            help="A Python file whose @tool functions become tools (repeatable).",
        ),
        click.option(
            "--tool",
            "builtins",
            multiple=True,
            type=click.Choice(BUILTIN_TOOLS),
            help="A built-in tool (repeatable).",
        ),
        click.option(
            "--docs", type=click.Path(path_type=Path), help="Search the text files of DIR."
        ),
        _mcp_options,
        click.option(
            "--examples", type=click.Path(path_type=Path), help="Planner examples from FILE."
        ),
        click.option("--max-replans", default=2, show_default=True, type=click.IntRange(0)),
    ]
    for option in reversed(options):  # as if stacked as decorators, in this order
        command = option(command)
    return command


def _mcp_options(command: F) -> F:
    """``--mcp`` (repeatable) and ``--mcp-config``: tools from MCP servers."""
    command = click.option(
        "--mcp-config",
        "mcp_config",
        type=click.Path(path_type=Path),
        help='MCP servers from FILE ({"mcpServers": {...}}, as MCP clients write it).',
    )(command)
    return click.option(
        "--mcp",
        "mcp",
        multiple=True,
        metavar="SERVER",
        help="An MCP server's tools: a command line ('uvx mcp-server-time') started for the "
        "run, or an http(s)://.../mcp URL (repeatable).",
    )(command)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Add --debug anywhere to see the traceback of an error.",
)
@click.version_option(__version__, prog_name="dagcall")
def cli() -> None:
    """dagcall: compile a question into a graph of tool calls and run it in parallel."""


@cli.command()
@click.argument("question")
@_compiler_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_seconds,
    help="Run budget, s.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--save", is_flag=True, help="Save the run in the run store.")
@click.option(
    "--store",
    metavar="PATH|URL",
    help="The run store --save writes to: a SQLite file or a postgresql:// URL "
    "(default: $DAGCALL_STORE, else the local file).",
)
@click.option("--yes", "-y", is_flag=True, help="Approve every call of a side-effecting tool.")
@click.option(
    "--otel", is_flag=True, help="Trace the run with OpenTelemetry (OTEL_* variables; otel extra)."
)
def ask(
    question: str,
    model: str | None,
    tool_files: tuple[Path, ...],
    builtins: tuple[str, ...],
    docs: Path | None,
    examples: Path | None,
    max_replans: int,
    timeout: float | None,
    as_json: bool,
    save: bool,
    store: str | None,
    yes: bool,
    mcp: tuple[str, ...],
    mcp_config: Path | None,
    otel: bool,
) -> None:
    """Answer QUESTION with the given tools, showing the plan as it runs.

    Tools declared with side_effects=True run only with --yes; otherwise each such call is
    refused and the refusal is what the joiner sees.
    """
    out = _stdout()
    err = _stderr()
    question = _argv_text(question)
    compiler = build_compiler(
        model=model,
        tool_files=tool_files,
        builtins=builtins,
        docs=docs,
        max_replans=max_replans,
        timeout=timeout,
        examples=examples,
        console=err,
        yes=yes,
        mcp=mcp,
        mcp_config=mcp_config,
    )
    wrap, flush = _tracing(otel)
    try:
        if as_json:
            result = compiler.run(question, on_event=wrap(None))
        else:
            result = run_with_view(compiler, question, out, wrap=wrap)
    except Exception as exc:
        flush()
        partial = getattr(exc, "result", None)
        if not save or not isinstance(partial, RunResult):
            raise
        _fail_with_partial_run(exc, partial, compiler, store)
    flush()
    run_id, save_error = _try_save(result, compiler, store) if save else (None, None)
    if as_json:
        _echo_json(result, run_id)
    else:
        render_result(result, out, run_id=run_id)
    if save_error is not None:  # the answer is out first: nothing is lost
        _fail(f"the run was not saved: {save_error}")


@cli.command()
@_compiler_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar="DAGCALL_TOKEN",
    help="Bearer token clients must send ($DAGCALL_TOKEN); required off loopback.",
)
@click.option(
    "--store",
    "store_path",
    metavar="PATH|URL",
    help="The run store: a SQLite file or a postgresql:// URL (default: $DAGCALL_STORE, else "
    "the one `dagcall runs` reads).",
)
@click.option("--no-store", is_flag=True, help="Keep finished runs in memory only.")
@click.option("--max-concurrent-runs", default=16, show_default=True, type=click.IntRange(1))
@click.option("--max-body-bytes", default=1_000_000, show_default=True, type=click.IntRange(1))
@click.option("--max-question-chars", default=20_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--run-timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_seconds,
    help="Budget of each run, s.",
)
@click.option("--shutdown-timeout", default=30, show_default=True, type=click.IntRange(0))
@click.option("--yes", "-y", is_flag=True, help="Approve every call of a side-effecting tool.")
@click.option(
    "--otel", is_flag=True, help="Trace each run with OpenTelemetry (OTEL_* variables; otel extra)."
)
def serve(
    model: str | None,
    tool_files: tuple[Path, ...],
    builtins: tuple[str, ...],
    docs: Path | None,
    mcp: tuple[str, ...],
    mcp_config: Path | None,
    examples: Path | None,
    max_replans: int,
    host: str,
    port: int,
    token: str | None,
    store_path: str | None,
    no_store: bool,
    max_concurrent_runs: int,
    max_body_bytes: int,
    max_question_chars: int,
    run_timeout: float | None,
    shutdown_timeout: int,
    yes: bool,
    otel: bool,
) -> None:
    """Serve dagcall over HTTP: the runs API with live events, an OpenAI-compatible
    /v1/chat/completions, and the web view at / (the service extra)."""
    from dagcall.service import serve as serve_http
    from dagcall.store import open_store

    compiler = build_compiler(
        model=model,
        tool_files=tool_files,
        builtins=builtins,
        docs=docs,
        max_replans=max_replans,
        timeout=run_timeout,
        examples=examples,
        console=_stderr(),
        yes=yes,
        mcp=mcp,
        mcp_config=mcp_config,
    )
    store = None if no_store else open_store(store_path)
    observe, flush = _observer(otel)
    serve_http(
        compiler,
        host=host,
        port=port,
        token=token or None,
        store=store,
        max_concurrent_runs=max_concurrent_runs,
        max_body_bytes=max_body_bytes,
        max_question_chars=max_question_chars,
        run_timeout=run_timeout,
        shutdown_timeout=shutdown_timeout,
        observe=observe,
    )
    flush()


@cli.command("mcp-serve")
@_compiler_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_seconds,
    help="Budget of each question, s.",
)
@click.option("--name", default="dagcall", show_default=True, help="The server's name.")
@click.option("--yes", "-y", is_flag=True, help="Approve every call of a side-effecting tool.")
def mcp_serve(
    model: str | None,
    tool_files: tuple[Path, ...],
    builtins: tuple[str, ...],
    docs: Path | None,
    mcp: tuple[str, ...],
    mcp_config: Path | None,
    examples: Path | None,
    max_replans: int,
    timeout: float | None,
    name: str,
    yes: bool,
) -> None:
    """Serve dagcall over MCP (stdio): one tool, ask(question), answered by planning over the
    given tools in parallel; its result is the answer and the run's summary."""
    from dagcall.mcp import serve

    compiler = build_compiler(  # stdout is the protocol's: everything else goes to stderr
        model=model,
        tool_files=tool_files,
        builtins=builtins,
        docs=docs,
        max_replans=max_replans,
        timeout=timeout,
        examples=examples,
        console=_stderr(),
        yes=yes,
        mcp=mcp,
        mcp_config=mcp_config,
    )
    wrapped = sys.stdout  # main's never-raising wrapper: the protocol needs the real stream
    sys.stdout = getattr(wrapped, "stream", None) or sys.__stdout__
    try:
        serve(compiler, name=name, timeout=timeout)
    finally:
        sys.stdout = wrapped


def _argv_text(text: str) -> str:
    """Text from the command line as valid Unicode: bytes that were not UTF-8 (kept by Python
    as lone surrogates) become U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    try:
        return os.fsencode(text).decode("utf-8", "replace")
    except UnicodeError:
        return _SURROGATE.sub("\ufffd", text)


def _echo_json(result: RunResult, run_id: str | None) -> None:
    extra = {"run_id": run_id} if run_id else {}
    try:
        text = as_json_ready(result, **extra)
    except Exception:  # never lose the answer over its export: the strict form is the fallback
        data = json.loads(result.to_json())
        data.update(extra)
        text = json.dumps(data, indent=2, ensure_ascii=True)
    click.echo(text)


def _try_save(
    result: RunResult, compiler: Compiler, store: str | None = None
) -> tuple[str | None, str | None]:
    """Save the run (in the run store ``store`` names): ``(run id, None)``, or ``(None, why it
    failed)``."""
    try:
        return _save(result, compiler, store), None
    except DagcallError as exc:
        return None, exc.message.removeprefix("cannot save the run: ")
    except Exception as exc:
        return None, _describe(exc)


def _fail_with_partial_run(
    exc: Exception, partial: RunResult, compiler: Compiler, store: str | None = None
) -> NoReturn:
    """A run that failed part-way with --save: save what it did, then fail in one line."""
    run_id, save_error = _try_save(partial, compiler, store)
    if isinstance(exc, DagcallError):
        message, code = exc.message, 2 if isinstance(exc, UsageError) else 1
    else:
        message, code = f"{_describe(exc)} (run with --debug for the traceback)", 1
    if partial.tasks:
        message += f" ({summary_line(partial)})"
    if run_id is not None:
        message += f"; the partial run was saved as {run_id} (dagcall show {run_id})"
    else:
        message += f"; the partial run was not saved either: {save_error}"
    raise _Failure(message, code) from exc


def _save(result: RunResult, compiler: Compiler, spec: str | None = None) -> str:
    from dagcall.store import open_store

    with open_store(spec) as store:
        run_id = store.save(result, planner=compiler.planner.name, joiner=compiler.joiner.name)
    _SAVED.append(run_id)
    return run_id


@cli.command()
@click.option("--model", "-m", help="The model to run the demo with (default: local).")
@click.option("--save", is_flag=True, help="Save the runs in the local run store.")
@click.option("--react/--no-react", default=True, show_default=True, help="Run ReAct too.")
def demo(model: str | None, save: bool, react: bool) -> None:
    """Run the bundled offline scenario on the embedded local model: dagcall, then the ReAct
    baseline on the same model and tools, side by side."""
    from dagcall.demo import EXAMPLES, LOOKUP_LATENCY, QUESTIONS, demo_tools

    out = _stdout()
    resolved = _model(model, _stderr())
    compiler = Compiler(model=resolved, tools=demo_tools(), examples=EXAMPLES, max_replans=1)
    out.print(
        f"dagcall demo: {len(QUESTIONS)} questions over a bundled knowledge base "
        f"(each look-up takes {LOOKUP_LATENCY:g} s, like a web API), model {resolved.name}\n",
        highlight=False,
    )
    load = getattr(resolved, "load", None)
    if callable(load):  # load once up front, so neither system's timing includes it
        out.print("loading the model…", style="dim")
        load()
    ours = []
    unsaved: list[str] = []
    for question, expected in QUESTIONS:
        result = run_with_view(compiler, question, out)
        run_id, save_error = _try_save(result, compiler) if save else (None, None)
        if save_error is not None:
            unsaved.append(save_error)
        render_result(result, out, run_id=run_id)
        out.print(f"expected: {expected}\n", style="dim", highlight=False)
        ours.append(result)
    if react:
        _demo_react(resolved, out, ours)
    if unsaved:
        _fail(f"{len(unsaved)} of {len(QUESTIONS)} runs were not saved: {unsaved[0]}")


def _demo_react(resolved: Model, out: Console, ours: list[RunResult]) -> None:
    from dagcall.baselines import ReActAgent
    from dagcall.demo import QUESTIONS, REACT_EXAMPLES, demo_tools

    out.print("The same questions with the ReAct baseline (one tool call per LLM call):\n")
    agent = ReActAgent(resolved, demo_tools(), examples=REACT_EXAMPLES, max_steps=8)
    theirs = []
    for question, _ in QUESTIONS:
        result = asyncio.run(agent.arun(question))
        out.print(f"Q: {question}", markup=False)
        render_result(result, out)
        out.print()
        theirs.append(result)
    out.print(comparison_table(QUESTIONS, ours, theirs))


def comparison_table(
    questions: Sequence[tuple[str, str]], ours: Sequence[RunResult], theirs: Sequence[RunResult]
) -> Table:
    """dagcall and ReAct per question: answer, wall time, LLM calls, tokens, speed-up."""
    table = Table(title="dagcall vs ReAct, same model and tools", title_justify="left")
    for column in ("question", "expected", "dagcall", "ReAct", "speed-up", "input tokens"):
        table.add_column(column, justify="left" if column == "question" else "right")
    for (question, expected), a, b in zip(questions, ours, theirs, strict=True):
        table.add_row(
            question if len(question) <= 40 else question[:39] + "…",
            expected,
            f"{a.answer} · {a.wall_time:.1f}s · {a.llm_calls} calls",
            f"{b.answer} · {b.wall_time:.1f}s · {b.llm_calls} calls",
            f"{b.wall_time / a.wall_time:.2f}x" if a.wall_time else "",
            f"{a.input_tokens:,} vs {b.input_tokens:,}",
        )
    wall_a = sum(r.wall_time for r in ours)
    wall_b = sum(r.wall_time for r in theirs)
    tokens_a = sum(r.input_tokens + r.output_tokens for r in ours)
    tokens_b = sum(r.input_tokens + r.output_tokens for r in theirs)
    table.add_row(
        "all",
        "",
        f"{wall_a:.1f}s",
        f"{wall_b:.1f}s",
        f"{wall_b / wall_a:.2f}x",
        f"{tokens_a:,} vs {tokens_b:,} (in+out)",
    )
    return table


_STORE_HELP = "The run store: a SQLite file or a postgresql:// URL (default: $DAGCALL_STORE)."


@cli.command()
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1))
@click.option("--store", "store_spec", metavar="PATH|URL", help=_STORE_HELP)
def runs(limit: int, store_spec: str | None) -> None:
    """List saved runs, newest first."""
    out = _stdout()
    store = _open_store(store_spec)
    if store is None:
        out.print("no saved runs yet: use dagcall ask --save or dagcall demo --save")
        return
    with store:
        listing = store.scan(limit)
    if not listing.runs and listing.damage is None:
        out.print("no saved runs yet: use dagcall ask --save or dagcall demo --save")
    for s in listing.runs:
        out.print(
            f"{_short_text(s.id, 12)}  {_one_line(s.created_at)[:19]}  {s.wall_time:6.2f}s  "
            f"{_short_text(s.question, 60)}  →  {_short_text(s.answer, 30)}",
            markup=False,
        )
    if listing.damage is not None:  # the readable runs are listed above
        _fail(listing.damage)


def _short_text(text: object, width: int) -> str:
    text = _one_line(text if isinstance(text, str) else str(text))
    return text if len(text) <= width else text[: width - 1] + "…"


def _open_store(spec: str | None = None) -> Store | None:
    """The run store for reading (``spec``, else $DAGCALL_STORE, else the local file), or
    ``None`` when there is no store file yet (nothing is created)."""
    from dagcall.store import open_store, store_location

    where = store_location(spec)
    if isinstance(where, Path) and not where.exists() and not where.is_symlink():
        return None
    return open_store(where, create=False)


def _load_run(run_id: str, spec: str | None = None) -> StoredRun:
    from dagcall.store import RunNotFoundError, store_location

    store = _open_store(spec)
    if store is None:
        raise RunNotFoundError(
            f"no saved run {run_id}: there is no run store at {store_location(spec)} yet"
        )
    with store:
        return store.load(run_id)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the saved run as JSON.")
@click.option("--store", "store_spec", metavar="PATH|URL", help=_STORE_HELP)
def show(run_id: str, as_json: bool, store_spec: str | None) -> None:
    """Print a saved run: its plans, tasks with timings, and LLM calls."""
    stored = _load_run(run_id, store_spec)
    if as_json:
        click.echo(stored.to_json())
        return
    out = _stdout()
    for repair in stored.repairs:
        out.print(f"(damaged record: {_shown(repair)})", style="yellow", markup=False)
    out.print(f"Q: {_shown(stored.question)}", markup=False)
    for rnd in stored.rounds:
        out.print(f"\nround {rnd.index + 1} plan:", style="bold")
        out.print(_shown(rnd.plan.rstrip()), markup=False)
        for err in rnd.errors:
            out.print(f"  plan error: {_shown(err.message)}", style="red", markup=False)
        if rnd.joiner_output:
            out.print(f"joiner: {_shown(rnd.joiner_output.strip())}", markup=False)
    out.print("\ntasks:", style="bold")
    for t in stored.tasks:
        started, ended = t.started_at, t.ended_at
        span = f"{started:.2f}s→{ended:.2f}s" if started is not None and ended is not None else ""
        detail = t.error.message if t.error is not None else _output_text(t.output)
        shared = ""  # common calls run once, and the call cache
        if t.reused_from is not None:
            shared += f"  (reused task {t.reused_from})"
        if t.cache == "hit":
            shared += "  (cache hit)"
        out.print(
            f"  {t.id}. {_shown(t.call)}  {_short_text(str(t.status), 40)}{shared}"
            f"  {span}  {_short_text(detail, 80)}",
            markup=False,
        )
    out.print("\nLLM calls:", style="bold")
    for c in stored.usage:
        out.print(
            f"  {c.role:<8} {_short_text(c.model, 80)}  "
            f"{c.input_tokens} in / {c.output_tokens} out  {c.latency:.2f}s",
            markup=False,
        )
    out.print(f"\nA: {_shown(stored.answer)}", markup=False)
    if stored.stop_reason not in ("finish", "running"):
        why = str(stored.stop_reason)
        if stored.error is not None:
            why += f": {type(stored.error).__name__}: {stored.error.message}"
        out.print(f"(stopped: {_short_text(why, 300)})", style="yellow", markup=False)


def _shown(text: str) -> str:
    """Stored text for the terminal: control characters that would act become escapes."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


def _output_text(value: object) -> str:
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)[:10_000]


def _strict_json(data: object) -> str:
    """JSON (RFC 8259: no NaN) that encodes as UTF-8, for any value json.loads gave."""
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a damaged run holding NaN or Infinity: those become null
        text = json.dumps(_finite(data), indent=2, ensure_ascii=False, allow_nan=False)
    if _SURROGATE.search(text):
        text = json.dumps(_finite(data), indent=2, ensure_ascii=True, allow_nan=False)
    return text


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@cli.command()
@click.argument("run_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=Path("timeline.png"),
    show_default=True,
)
def plot(run_id: str, output: Path) -> None:
    """Draw a saved run's timeline (planner, tasks, joiner) as a PNG Gantt chart."""
    from dagcall.viz import plot_timeline

    if output.is_dir():
        _fail(f"cannot write the timeline to {output}: it is a folder (give a file name)", 2)
    folder = output.parent
    if not folder.is_dir():
        _fail(f"cannot write the timeline to {output}: the folder {folder} does not exist", 2)
    run = _load_run(run_id)
    try:
        bars = plot_timeline(run, output)
    except OSError as exc:
        _fail(f"cannot write the timeline to {output}: {exc.strerror or exc}")
    _stdout().print(f"wrote {output} ({bars} bars)", markup=False, highlight=False)


@cli.command()
@click.argument("run_id")
def graph(run_id: str) -> None:
    """Print a saved run's task graph as Mermaid."""
    from dagcall.viz import mermaid

    click.echo(mermaid(_load_run(run_id)))


@cli.command()
@click.option("--questions", "-n", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--fan-out", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--tool-latency",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 60),
    callback=_finite_seconds,
)
@click.option(
    "--tokens-per-second",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_seconds,
    help="Each scripted model stream's rate (default: as fast as the event loop allows).",
)
def loadtest(
    questions: int, fan_out: int, tool_latency: float, tokens_per_second: float | None
) -> None:
    """Run many concurrent questions (scripted models, sleeping tools) through one process."""
    from ._load import run_load_test

    report = asyncio.run(
        run_load_test(
            questions,
            fan_out=fan_out,
            tool_latency=tool_latency,
            tokens_per_second=tokens_per_second,
        )
    )
    out = _stdout()
    for line in report.lines():
        out.print(line, markup=False)
    if report.correct != report.questions:
        _fail(f"{report.questions - report.correct} questions got a wrong answer")


@cli.command()
@click.option(
    "--workload",
    "-w",
    "workloads",
    multiple=True,
    type=click.Choice(["parallelqa", "hotpotqa", "movies", "game24", "webshop", "toolworld"]),
    help="A workload to run (repeatable; default: all six, or those the benchmark makes "
    "itself when the datasets are absent).",
)
@click.option(
    "--model",
    "-m",
    default="simulated:gpt-3.5",
    show_default=True,
    help="simulated[:gpt-3.5|gpt-4|llama-2-70b] for the latency model, or a real model "
    "(local, openai:MODEL[@URL], anthropic:MODEL[@URL]).",
)
@click.option("--limit", type=click.IntRange(1), help="At most this many questions per workload.")
@click.option(
    "--sample",
    type=click.IntRange(1),
    help="A fixed random subset of this many questions per workload, seeded by --seed (the "
    "local accuracy benchmark: --model local --sample 20).",
)
@click.option(
    "--system",
    "systems",
    multiple=True,
    type=click.Choice(["react", "parallel-fc", "dagcall"]),
    help="A system to run on the question workloads (repeatable; default: all three).",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_seconds,
    help="Simulated runs: every wait is multiplied by this (figures are reported scaled back). "
    "Default 0.05.",
)
@click.option("--concurrency", type=click.IntRange(1), help="Questions run at once.")
@click.option("--seed", default=0, show_default=True, help="Seed of tool latencies and puzzles.")
@click.option(
    "--tool-latency",
    default=0.6,
    show_default=True,
    type=click.FloatRange(0),
    callback=_finite_seconds,
    help="Median seconds of a simulated web look-up (log-normal).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder of the paper's datasets (default: ../shared/datasets/llmcompiler).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.md, runs.json, summary.json and PNG plots here.",
)
@click.option(
    "--opt",
    "opts",
    multiple=True,
    metavar="NAME=on|off",
    help="Switch one of dagcall's optimisations (field_access, dedupe, critical_path, "
    "elide_joiner, shared_prefix, streaming); repeatable. --opt none turns all off.",
)
@click.option(
    "--prefix-cache",
    is_flag=True,
    help="The simulated endpoint caches prompt prefixes (as OpenAI does), for every system.",
)
@click.option(
    "--plan-cache",
    is_flag=True,
    help="Plan reuse: dagcall learns plans from the first half of each workload's questions "
    "and reuses them on the second.",
)
@click.option(
    "--world",
    "worlds",
    multiple=True,
    type=click.Choice(["atlas", "orbit", "depot"]),
    help="Toolworld: run only this world (repeatable; default: all three).",
)
@click.option(
    "--example-bank/--builtin-example",
    default=True,
    show_default=True,
    help="dagcall's planner examples on Toolworld with a real model: chosen per question "
    "from the bank of worked patterns, or the one built-in example.",
)
@click.option(
    "--toolworld-math",
    type=click.Choice(["calculator", "llm"]),
    default="calculator",
    show_default=True,
    help="Toolworld's arithmetic tool with a real model: the bare calculator(expression), or "
    "the paper's math(problem, context), which the same model turns into an expression.",
)
@click.option(
    "--answer-checks/--no-answer-checks",
    default=True,
    show_default=True,
    help="dagcall's answer checks (replan failed calls, compute expressions, ask again about "
    "an answer of the wrong kind).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run the dataset workloads' questions as Ray tasks (the batch path): local, auto, "
    "or a cluster's address.",
)
def bench(
    workloads: tuple[str, ...],
    model: str,
    limit: int | None,
    sample: int | None,
    systems: tuple[str, ...],
    time_scale: float | None,
    concurrency: int | None,
    seed: int,
    tool_latency: float,
    data: Path | None,
    out: Path | None,
    opts: tuple[str, ...],
    prefix_cache: bool,
    plan_cache: bool,
    worlds: tuple[str, ...],
    example_bank: bool,
    toolworld_math: str,
    answer_checks: bool,
    ray_address: str | None,
) -> None:
    """Reproduce the paper's comparisons: ReAct, parallel function calling and dagcall on
    ParallelQA, HotpotQA and Movie Recommendation, Tree-of-Thoughts on Game of 24, and ReAct
    and a LATS-style tree search on WebShop (an offline store), and all three on Toolworld
    (fictional worlds with tools no model has seen)."""
    from dagcall.bench import (
        DATASET_WORKLOADS,
        GENERATED_WORKLOADS,
        BenchConfig,
        SimulatedModel,
        find_datasets,
        report_markdown,
        run_bench,
        write_report,
    )

    chosen = list(workloads) or [*DATASET_WORKLOADS, *GENERATED_WORKLOADS]
    if not workloads and importlib.util.find_spec("bm25s") is None:  # WebShop's search
        _stderr().print("bm25s not installed (the docs extra): leaving WebShop out")
        chosen.remove("webshop")
    datasets = find_datasets(data)
    if datasets is None and any(w not in GENERATED_WORKLOADS for w in chosen):
        if workloads:
            raise UsageError(
                "the LLMCompiler datasets were not found: pass --data DIR (the folder holding "
                "parallelqa_dataset.json) or set DAGCALL_DATASETS"
            )
        chosen = [w for w in chosen if w in GENERATED_WORKLOADS]
        _stderr().print(
            "datasets not found (--data DIR): running only the workloads the benchmark "
            f"generates itself ({', '.join(chosen)})"
        )
    real = _model(model, _stderr())
    if isinstance(real, SimulatedModel):  # the latency model, on the reference answers
        config = BenchConfig(
            workloads=chosen,
            profile=real.profile,
            time_scale=time_scale or 0.05,
            concurrency=concurrency or 16,
            limit=limit,
        )
    else:
        config = BenchConfig(
            workloads=chosen, model=real, concurrency=concurrency or 1, limit=limit or 5
        )
    config.seed = seed
    config.sample = sample
    if sample is not None and limit is None:
        config.limit = None  # --sample alone: the whole sample, also with a real model
    if systems:
        config.systems = tuple(dict.fromkeys(systems))
    config.tool_latency_median = tool_latency
    config.datasets = datasets
    config.optimize = optimizations_from(opts)
    config.prefix_cache = prefix_cache
    config.ray = ray_address
    config.plan_cache = plan_cache
    config.example_bank = example_bank
    config.toolworld_math = toolworld_math
    config.worlds = tuple(dict.fromkeys(worlds))
    config.check_answers = answer_checks
    err = _stderr()
    done = [0]

    def progress(record: object) -> None:
        done[0] += 1
        if done[0] % 200 == 0:
            err.print(f"{done[0]} runs done", highlight=False)

    outcome = asyncio.run(run_bench(config, progress=progress))
    click.echo(report_markdown(outcome))
    if out is not None:  # the report is printed first, so a folder that fails loses nothing
        try:
            written = write_report(outcome, out)
        except OSError as exc:
            _fail(f"cannot write the report to {out}: {exc.strerror or exc}")
        for path in written:
            err.print(f"wrote {path}", highlight=False, markup=False)


def optimizations_from(opts: Sequence[str]) -> Optimizations:
    """``--opt NAME=on|off`` (and ``--opt none`` / ``--opt all``) as an Optimizations."""
    chosen = Optimizations()
    names = [f.name for f in dataclasses.fields(Optimizations)]
    for opt in opts:
        word = opt.strip().lower()
        if word in ("none", "off"):
            chosen = Optimizations.none()
            continue
        if word in ("all", "on", "default"):
            chosen = Optimizations()
            continue
        name, sep, value = word.partition("=")
        name = name.strip().replace("-", "_")
        value = value.strip()
        if not sep or name not in names:
            raise UsageError(
                f"--opt {opt!r}: write NAME=on or NAME=off, NAME one of {', '.join(names)}"
            )
        if name == "dedupe" and value in ("pure", "cacheable"):
            chosen = dataclasses.replace(chosen, dedupe=value)  # type: ignore[arg-type]
            continue
        if value not in ("on", "off", "true", "false", "1", "0"):
            raise UsageError(f"--opt {opt!r}: the value must be on or off")
        on = value in ("on", "true", "1")
        setting: Any = ("pure" if on else "off") if name == "dedupe" else on
        chosen = dataclasses.replace(chosen, **{name: setting})
    return chosen


from ._batch import batch as _batch  # noqa: E402 - it uses the helpers above

cli.add_command(_batch)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (for tests and ``python -m dagcall``).

    Whatever goes wrong ends in one line on stderr, ``error: ...``, and a non-zero code
    (``--debug`` adds the traceback): the known failures with their own message, anything
    else as ``error: Type: message`` with a hint.  Output that cannot be written (a full disk,
    a closed pipe) never interrupts a run: it is reported once at the end, after any saving.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _SAVED.clear()
    real_out, real_err = sys.stdout, sys.stderr
    out, err = _Output(real_out, "replace"), _Output(real_err, "backslashreplace")
    sys.stdout, sys.stderr = out, err
    try:
        code, reported = _run(args, debug)
        out.flush()
        if out.failure is not None:
            code = _lost_output(out.failure, code, reported)
    finally:
        sys.stdout, sys.stderr = real_out, real_err
        pairs = ((out, real_out, sys.__stdout__), (err, real_err, sys.__stderr__))
        for wrapper, real, process_stream in pairs:
            if wrapper.failure is not None and real is process_stream:
                _silence(real)
    return code


def _run(args: list[str], debug: bool) -> tuple[int, bool]:
    """Run the command: ``(exit code, whether an error line was printed)``."""
    try:
        code = cli.main(args=args, prog_name="dagcall", standalone_mode=False)
    except click.exceptions.Abort:
        _stderr().print("aborted")
        return 130, True
    except _NO_ARGS_IS_HELP as exc:  # bare ``dagcall``: the help, as click shows it
        exc.show()
        return exc.exit_code, False
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "dagcall"
        message = f"{exc.format_message()} (see {command} --help)"
        return _report(message, exc.exit_code, exc, debug), True
    except click.ClickException as exc:
        return _report(exc.format_message(), exc.exit_code, exc, debug), True
    except click.exceptions.Exit as exc:
        return exc.exit_code, False
    except _Failure as exc:
        return _report(exc.message, exc.code, exc, debug), True
    except ModelNotAvailableError as exc:
        return _report(exc.message, 1, exc, debug), True
    except UsageError as exc:
        return _report(exc.message, 2, exc, debug), True
    except DagcallError as exc:
        message = exc.message
        if exc.result is not None and exc.result.tasks:
            message += f" ({summary_line(exc.result)})"
        return _report(message, 1, exc, debug), True
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        return 130, True
    except SystemExit as exc:  # from a tool (click itself does not exit in this mode)
        code = exc.code if isinstance(exc.code, int) and exc.code != 0 else 1
        message = f"{_describe(exc)} in a tool stopped the command (run with --debug for more)"
        return _report(message, code, exc, debug), True
    except BaseException as exc:  # a bug, or a tool's exotic BaseException: still one line
        message = f"{_describe(exc)} (unexpected; run with --debug for the traceback)"
        return _report(message, 1, exc, debug), True
    return (code if isinstance(code, int) else 0), False


def _lost_output(failure: Exception, code: int, reported: bool) -> int:
    """The exit code (and, once, the line) for output that could not be written."""
    if isinstance(failure, BrokenPipeError):  # the reader went away (``| head``): quietly
        return code or EXIT_BROKEN_PIPE
    if reported:  # one error line already: that is the one to keep
        return code or 1
    message = f"could not write the output ({_describe(failure)})"
    if _SAVED:
        message += f"; the run was saved as {_SAVED[-1]} (dagcall show {_SAVED[-1]})"
    _stderr().print(f"error: {_one_line(message)}", markup=False, highlight=False)
    return code or 1


def _silence(stream: object) -> None:
    """Point a broken standard stream at /dev/null, so that the interpreter's last flush of
    what is still buffered does not print an "Exception ignored" complaint at exit."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)


def _report(message: str, code: int, exc: BaseException, debug: bool) -> int:
    err = _stderr()
    if debug:
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    err.print(f"error: {_one_line(message)}", markup=False, highlight=False)
    return code
