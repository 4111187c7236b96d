"""``dagcall batch``: answer the questions of a JSONL file, locally or on Ray, resumably."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dagcall.batch import BatchSummary, CompilerSpec, RunSaver, open_batch_store, run_batch

from . import (
    _compiler_options,
    _fail,
    _finite_seconds,
    _one_line,
    _stderr,
    _stdout,
    read_examples,
)

__all__ = ["batch"]


@click.command()
@click.argument("questions", type=click.Path(path_type=Path, dir_okay=False))
@_compiler_options
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Append one JSON line per question here; ids already in it are skipped (resume).",
)
@click.option("--concurrency", "-c", default=4, show_default=True, type=click.IntRange(1))
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run each question as a Ray task: a cluster address, 'auto' (a running cluster, "
    "else a new local one) or 'local' (start a local instance). The ray extra.",
)
@click.option(
    "--ray-cpus",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="CPUs each Ray task reserves (a run mostly waits: 0.5 runs two per CPU).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_seconds,
    help="Each question's run budget, s; past it the question is failed.",
)
@click.option(
    "--store",
    "store_spec",
    help="The run store: a SQLite path or a postgresql:// URL (default: $DAGCALL_STORE, else "
    "the local one).",
)
@click.option("--no-store", is_flag=True, help="Do not save the runs.")
@click.option("--retry-failed", is_flag=True, help="Run again the questions failed in --out.")
@click.option(
    "--allow-tool-errors",
    is_flag=True,
    help="Count a run whose joiner answered despite failed tool calls as answered.",
)
@click.option("--with-runs", is_flag=True, help="Put each whole run in its output line.")
@click.option("--strict", is_flag=True, help="A malformed input line is an error, not skipped.")
@click.option("--yes", "-y", is_flag=True, help="Approve every call of a side-effecting tool.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary table.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def batch(
    questions: Path,
    model: str | None,
    tool_files: tuple[Path, ...],
    builtins: tuple[str, ...],
    docs: Path | None,
    mcp: tuple[str, ...],
    mcp_config: Path | None,
    examples: Path | None,
    max_replans: int,
    out: Path,
    concurrency: int,
    ray_address: str | None,
    ray_cpus: float,
    timeout: float | None,
    store_spec: str | None,
    no_store: bool,
    retry_failed: bool,
    allow_tool_errors: bool,
    with_runs: bool,
    strict: bool,
    yes: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Answer every question of QUESTIONS (JSONL: {"id": ..., "question": ...} or a JSON
    string per line), appending one JSON line per question to --out as it finishes.

    Questions already in --out are skipped, so the same command resumes a stopped batch.
    Every run is saved in the run store (unless --no-store).  The exit code is 0 when every
    question run is answered, 1 when any failed or an input line was malformed (the batch
    still runs the rest), 130 when interrupted (the output stays valid).
    """
    if store_spec is not None and no_store:
        raise click.UsageError("--store and --no-store exclude each other")
    spec = CompilerSpec(
        model=model,
        tool_files=tuple(str(p) for p in tool_files),
        builtins=builtins,
        docs=str(docs) if docs is not None else None,
        mcp=mcp,
        mcp_config=str(mcp_config) if mcp_config is not None else None,
        examples=read_examples(examples) if examples is not None else None,
        max_replans=max_replans,
        approve_all=yes,
    ).resolved()
    store: RunSaver | None = None if no_store else open_batch_store(store_spec)
    err = _stderr()
    view = _View(err, enabled=err.is_terminal and not quiet)
    summary_box: list[BatchSummary] = []

    def started(todo: int, summary: BatchSummary) -> None:
        summary_box.append(summary)
        for problem in summary.problems:
            err.print(
                f"warning: {questions}, line {problem.line}: {_one_line(problem.message)} "
                "(skipped)",
                markup=False,
                highlight=False,
            )
        if summary.torn_line_repaired:
            err.print(f"note: cut off a torn last line of {out}", highlight=False, markup=False)
        if summary.skipped and not quiet:
            err.print(f"{summary.skipped} questions already in {out}: skipped", highlight=False)
        view.start(todo)

    def record(line: dict[str, Any]) -> None:
        view.advance(line)
        if line["status"] == "failed" and not quiet:  # above the bar, on a terminal
            err.print(
                f"failed {_one_line(str(line['id']), 80)}: {_one_line(str(line['error']), 300)}",
                markup=False,
                highlight=False,
            )

    try:
        # stdout is the summary's: what else prints while the batch runs (Ray's notice of a
        # dead worker, a chatty tool) goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            summary = asyncio.run(
                run_batch(
                    questions,
                    out,
                    spec=spec,
                    concurrency=concurrency,
                    timeout=timeout,
                    store=store,
                    ray=ray_address,
                    ray_cpus=ray_cpus,
                    retry_failed=retry_failed,
                    allow_tool_errors=allow_tool_errors,
                    include_run=with_runs,
                    strict=strict,
                    on_start=started,
                    on_record=record,
                )
            )
    except (KeyboardInterrupt, asyncio.CancelledError):
        view.stop()
        if summary_box:
            done = summary_box[0]
            err.print(
                f"interrupted: {done.ran} questions written to {out} ({done.pending} not run); "
                "run the same command to resume",
                highlight=False,
                markup=False,
            )
        raise KeyboardInterrupt from None
    finally:
        view.stop()
        close = getattr(store, "close", None)
        if callable(close):
            close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    elif not quiet:
        _stdout().print(summary_table(summary))
    if summary.failed or summary.invalid:
        parts = []
        if summary.failed:
            parts.append(f"{summary.failed} of {summary.ran} questions failed (see {out})")
        if summary.invalid:
            parts.append(f"{summary.invalid} input lines were malformed and skipped")
        _fail("; ".join(parts))


class _View:
    """The progress bar on stderr (a terminal only)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self.enabled = enabled
        self.counts = {"answered": 0, "failed": 0}
        self.progress: Progress | None = None
        self.console = console
        self.task: Any = None

    def start(self, total: int) -> None:
        if not self.enabled or total == 0:
            return
        self.progress = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]{task.fields[answered]} answered[/] [red]{task.fields[failed]} failed"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("batch", total=total, answered=0, failed=0)
        self.progress.start()

    def advance(self, line: dict[str, Any]) -> None:
        self.counts["answered" if line["status"] == "answered" else "failed"] += 1
        if self.progress is not None:
            answered, failed = self.counts["answered"], self.counts["failed"]
            self.progress.update(self.task, advance=1, answered=answered, failed=failed)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def summary_table(summary: BatchSummary) -> Table:
    """The batch's summary: counts, latency percentiles, tokens, cost, throughput."""
    table = Table(
        title=f"dagcall batch → {summary.output}", title_justify="left", show_header=False
    )
    table.add_column("", justify="left")
    table.add_column("", justify="right")
    cost = "-" if summary.cost is None else f"${summary.cost:,.4f}"
    if summary.unpriced_runs:
        cost += f" ({summary.unpriced_runs} runs of unpriced models)"
    rows = [
        ("questions", f"{summary.total:,}"),
        ("answered", f"{summary.answered:,}"),
        ("failed", f"{summary.failed:,}"),
        ("skipped (already done)", f"{summary.skipped:,}"),
        ("malformed lines", f"{summary.invalid:,}"),
        (
            "latency p50 / p90 / p99",
            " / ".join(
                _seconds(v) for v in (summary.latency_p50, summary.latency_p90, summary.latency_p99)
            ),
        ),
        ("tokens in / out", f"{summary.input_tokens:,} / {summary.output_tokens:,}"),
        ("LLM calls", f"{summary.llm_calls:,}"),
        ("cost", cost),
        ("wall time", f"{summary.wall_time:.2f} s"),
        (
            "throughput",
            f"{summary.throughput:.2f} questions/s ({summary.mode}, concurrency "
            f"{summary.concurrency})",
        ),
    ]
    if summary.unsaved_runs:
        rows.append(("runs not saved", f"{summary.unsaved_runs:,}"))
    for name, value in rows:
        table.add_row(name, value)
    return table
