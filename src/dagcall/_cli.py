"""The ``dagcall`` command: ask a question, run the demo, look at saved runs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from . import __version__
from ._compiler import Compiler
from ._errors import DagcallError, ModelNotAvailableError, UsageError
from ._live import LiveView, PlainReporter, as_json_ready, render_result, summary_line
from ._result import RunResult
from ._tools import Tool
from .models import Model, resolve_model

__all__ = ["main"]

BUILTIN_TOOLS = ("calculator", "math", "wikipedia")


class _Failure(Exception):
    """A one-line error for the person at the terminal, with the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # logs and pipes: tables need not fit 80 columns
        console.width = 140
    return console


def _fail(message: str, code: int = 1) -> NoReturn:
    raise _Failure(message, code)


# -- building a compiler from options ---------------------------------------------------------


def load_tools_file(path: Path) -> list[Tool]:
    """Every :class:`~dagcall.Tool` defined at the top level of a Python file."""
    if not path.is_file():
        _fail(f"tools file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"dagcall_user_tools_{path.stem}", path)
    if spec is None or spec.loader is None:
        _fail(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        _fail(f"importing {path} failed: {type(exc).__name__}: {exc} (run with --debug for more)")
    tools = [v for v in vars(module).values() if isinstance(v, Tool)]
    if not tools:
        _fail(f"{path} defines no tools; decorate functions with @dagcall.tool")
    return tools


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
    from . import tools

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
) -> Compiler:
    resolved = _model(model, console)
    tools: list[Tool] = []
    for path in tool_files:
        tools += load_tools_file(path)
    tools += [_builtin(name, resolved) for name in builtins]
    if docs is not None:
        from .tools import docs_tool

        tools.append(docs_tool(docs))
    if not tools:
        _fail("no tools: pass --tools FILE.py, --tool calculator|math|wikipedia or --docs DIR", 2)
    text = examples.read_text(encoding="utf-8") if examples is not None else None
    return Compiler(
        model=resolved,
        tools=tools,
        max_replans=max_replans,
        timeout=timeout,
        examples=text,
        approve=_approve_all if yes else None,
    )


def _approve_all(task: object) -> bool:
    return True


def run_with_view(compiler: Compiler, question: str, console: Console) -> RunResult:
    """Run a question, showing it live on a terminal and line by line elsewhere."""
    if console.is_terminal:
        view = LiveView(question)
        with Live(view, console=console, refresh_per_second=8, transient=False):
            return compiler.run(question, on_event=view.handle)
    console.print(f"Q: {question}", highlight=False, markup=False)
    return compiler.run(question, on_event=PlainReporter(console).handle)


# -- commands ---------------------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Add --debug anywhere to see the traceback of an error.",
)
@click.version_option(__version__, prog_name="dagcall")
def cli() -> None:
    """dagcall: compile a question into a graph of tool calls and run it in parallel."""


@cli.command()
@click.argument("question")
@click.option("--model", "-m", help="A model string: local, local:FILE.gguf, openai:NAME[@URL].")
@click.option(
    "--tools",
    "tool_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A Python file whose @tool functions become tools (repeatable).",
)
@click.option(
    "--tool",
    "builtins",
    multiple=True,
    type=click.Choice(BUILTIN_TOOLS),
    help="A built-in tool (repeatable).",
)
@click.option("--docs", type=click.Path(path_type=Path), help="Search the text files of DIR.")
@click.option("--examples", type=click.Path(path_type=Path), help="Planner examples from FILE.")
@click.option("--max-replans", default=2, show_default=True, type=click.IntRange(0))
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Run budget, s.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--save", is_flag=True, help="Save the run in the local run store.")
@click.option("--yes", "-y", is_flag=True, help="Approve every call of a side-effecting tool.")
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
    yes: bool,
) -> None:
    """Answer QUESTION with the given tools, showing the plan as it runs.

    Tools declared with side_effects=True run only with --yes; otherwise each such call is
    refused and the refusal is what the joiner sees.
    """
    out = _stdout()
    err = _stderr()
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
    )
    result = compiler.run(question) if as_json else run_with_view(compiler, question, out)
    run_id = _save(result, compiler) if save else None
    if as_json:
        extra = {"run_id": run_id} if run_id else {}
        click.echo(as_json_ready(result, **extra))
    else:
        render_result(result, out, run_id=run_id)


def _save(result: RunResult, compiler: Compiler) -> str:
    from ._store import RunStore

    with RunStore() as store:
        return store.save(result, planner=compiler.planner.name, joiner=compiler.joiner.name)


@cli.command()
@click.option("--model", "-m", help="The model to run the demo with (default: local).")
@click.option("--save", is_flag=True, help="Save the runs in the local run store.")
@click.option("--react/--no-react", default=True, show_default=True, help="Run ReAct too.")
def demo(model: str | None, save: bool, react: bool) -> None:
    """Run the bundled offline scenario on the embedded local model: dagcall, then the ReAct
    baseline on the same model and tools, side by side."""
    from .baselines import ReActAgent
    from .demo import EXAMPLES, LOOKUP_LATENCY, QUESTIONS, REACT_EXAMPLES, demo_tools

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
    for question, expected in QUESTIONS:
        result = run_with_view(compiler, question, out)
        run_id = _save(result, compiler) if save else None
        render_result(result, out, run_id=run_id)
        out.print(f"expected: {expected}\n", style="dim", highlight=False)
        ours.append(result)
    if not react:
        return
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


@cli.command()
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1))
def runs(limit: int) -> None:
    """List saved runs, newest first."""
    from ._store import RunStore

    out = _stdout()
    with RunStore() as store:
        summaries = store.list_runs(limit)
    if not summaries:
        out.print("no saved runs yet: use dagcall ask --save or dagcall demo --save")
        return
    for s in summaries:
        out.print(
            f"{s.id}  {s.created_at[:19]}  {s.wall_time:6.2f}s  "
            f"{_short_text(s.question, 60)}  →  {_short_text(s.answer, 30)}",
            markup=False,
        )


def _short_text(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _load_run(run_id: str) -> dict[str, Any]:
    from ._store import RunStore

    with RunStore() as store:
        return store.load(run_id)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the saved run as JSON.")
def show(run_id: str, as_json: bool) -> None:
    """Print a saved run: its plans, tasks with timings, and LLM calls."""
    run = _load_run(run_id)
    if as_json:
        click.echo(json.dumps(run, indent=2, ensure_ascii=False))
        return
    out = _stdout()
    out.print(f"Q: {run['question']}", markup=False)
    for rnd in run["rounds"]:
        out.print(f"\nround {rnd['index'] + 1} plan:", style="bold")
        out.print(rnd["plan"].rstrip(), markup=False)
        for err in rnd["errors"]:
            out.print(f"  plan error: {err['message']}", style="red", markup=False)
        if rnd["joiner_output"]:
            out.print(f"joiner: {rnd['joiner_output'].strip()}", markup=False)
    out.print("\ntasks:", style="bold")
    for t in run["tasks"]:
        started, ended = t["started_at"], t["ended_at"]
        span = f"{started:.2f}s→{ended:.2f}s" if started is not None and ended else ""
        detail = t["error"]["message"] if t["error"] else json.dumps(t["output"], default=str)
        out.print(
            f"  {t['id']}. {t['call']}  {t['status']}  {span}  {_short_text(detail, 80)}",
            markup=False,
        )
    out.print("\nLLM calls:", style="bold")
    for c in run["usage"]:
        out.print(
            f"  {c['role']:<8} {c['model']}  {c['input_tokens']} in / {c['output_tokens']} out"
            f"  {c['latency']:.2f}s",
            markup=False,
        )
    out.print(f"\nA: {run['answer']}", markup=False)


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
    from ._plot import plot_timeline

    bars = plot_timeline(_load_run(run_id), output)
    _stdout().print(f"wrote {output} ({bars} bars)")


@cli.command()
@click.argument("run_id")
def graph(run_id: str) -> None:
    """Print a saved run's task graph as Mermaid."""
    from ._graph import mermaid

    click.echo(mermaid(_load_run(run_id)))


@cli.command()
@click.option("--questions", "-n", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--fan-out", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option("--tool-latency", default=0.05, show_default=True, type=click.FloatRange(0))
@click.option(
    "--tokens-per-second",
    type=click.FloatRange(min=0, min_open=True),
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
    type=click.Choice(["parallelqa", "hotpotqa", "movies", "game24"]),
    help="A workload to run (repeatable; default: all four).",
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
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
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
def bench(
    workloads: tuple[str, ...],
    model: str,
    limit: int | None,
    time_scale: float | None,
    concurrency: int | None,
    seed: int,
    tool_latency: float,
    data: Path | None,
    out: Path | None,
) -> None:
    """Reproduce the paper's comparisons: ReAct, parallel function calling and dagcall on
    ParallelQA, HotpotQA and Movie Recommendation, and Tree-of-Thoughts on Game of 24."""
    from .bench import BenchConfig, find_datasets, run_bench
    from .bench._bench import report_markdown, write_report
    from .bench._simulate import PROFILES

    kind, _, profile = model.partition(":")
    chosen = list(workloads) or ["parallelqa", "hotpotqa", "movies", "game24"]
    datasets = find_datasets(data)
    if datasets is None and any(w != "game24" for w in chosen):
        if workloads:
            raise UsageError(
                "the LLMCompiler datasets were not found: pass --data DIR (the folder holding "
                "parallelqa_dataset.json) or set DAGCALL_DATASETS"
            )
        _stderr().print("datasets not found (--data DIR): running Game of 24 only")
        chosen = ["game24"]
    if kind == "simulated":
        name = profile or "gpt-3.5"
        if name not in PROFILES:
            raise UsageError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
        config = BenchConfig(
            workloads=chosen,
            profile=PROFILES[name],
            time_scale=time_scale or 0.05,
            concurrency=concurrency or 16,
            limit=limit,
        )
    else:
        real = _model(model, _stderr())
        config = BenchConfig(
            workloads=chosen, model=real, concurrency=concurrency or 1, limit=limit or 5
        )
    config.seed = seed
    config.tool_latency_median = tool_latency
    config.datasets = datasets
    err = _stderr()
    done = [0]

    def progress(record: object) -> None:
        done[0] += 1
        if done[0] % 200 == 0:
            err.print(f"{done[0]} runs done", highlight=False)

    outcome = asyncio.run(run_bench(config, progress=progress))
    click.echo(report_markdown(outcome))
    if out is not None:
        for path in write_report(outcome, out):
            err.print(f"wrote {path}", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (for tests and ``python -m dagcall``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        code = cli.main(args=args, prog_name="dagcall", standalone_mode=False)
    except click.exceptions.Abort:
        _stderr().print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except _Failure as exc:
        return _report(exc.message, exc.code, exc, debug)
    except ModelNotAvailableError as exc:
        return _report(exc.message, 1, exc, debug)
    except UsageError as exc:
        return _report(exc.message, 2, exc, debug)
    except DagcallError as exc:
        message = exc.message
        if exc.result is not None and exc.result.tasks:
            message += f" ({summary_line(exc.result)})"
        return _report(message, 1, exc, debug)
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        return 130
    return code if isinstance(code, int) else 0


def _report(message: str, code: int, exc: BaseException, debug: bool) -> int:
    err = _stderr()
    if debug:
        err.print("".join(traceback.format_exception(exc)), markup=False)
    err.print(f"error: {message}", markup=False)
    return code
